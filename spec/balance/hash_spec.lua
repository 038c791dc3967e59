local S = require("balance.support")
local ps = S.ps

local function keys(n)
  local out = {}
  for i = 1, n do out[i] = (i % 2 == 0) and ("/item/" .. i * 7919) or ("user-" .. i) end
  return out
end

local function ids(n)
  local l = {}
  for i = 1, n do l[i] = { id = "10.1.0." .. i .. ":80" } end
  return l
end

describe("hash KEY", function()
  local configs = {
    { weights = { 1, 1, 1, 1, 1 } },
    { weights = { 2, 1, 3, 1, 1, 4 }, down = { [2] = true }, unavailable = { [3] = true } },
    { weights = { 2, 1, 3, 1, 1, 4 }, unavailable = { [6] = true }, tried = { 1, 3 } },
    { weights = { 5, 1, 1, 1 }, unavailable = { [1] = true, [2] = true, [3] = true } },
  }

  it("chooses the peer nginx's C loop chooses (reference), rehash and round-robin fallback included", function()
    local fallbacks = 0
    for _, cfg in ipairs(configs) do
      for _, key in ipairs(keys(300)) do
        local list = {}
        for i, w in ipairs(cfg.weights) do list[i] = { w = w, down = cfg.down and cfg.down[i] } end
        local set = S.build(S.peers(list), "hash")
        local st = S.state()
        for gi in pairs(cfg.unavailable or {}) do st.up[gi] = false end
        local tried = S.tried(cfg.tried or {})
        local want, how = S.ref_hash(S.ref_peers(cfg.weights, cfg.down, cfg.unavailable), key, tried)
        if how == "rr" then fallbacks = fallbacks + 1 end
        assert.equal(want or 0, ps.pick(set, st, next(tried) and tried or nil, key), key)
      end
    end
    assert.is_true(fallbacks > 0)
  end)

  it("is stable per key across picks and builds, and spreads keys evenly", function()
    local st = S.state()
    local a = S.build(S.weighted({ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }), "hash", { noRandomStart = false })
    local b = S.build(S.weighted({ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }), "hash", { noRandomStart = false })
    local c = {}
    for _, k in ipairs(keys(10000)) do
      local gi = ps.pick(a, st, nil, k)
      assert.equal(gi, ps.pick(a, st, nil, k))
      assert.equal(gi, ps.pick(b, st, nil, k))
      c[gi] = (c[gi] or 0) + 1
    end
    for gi = 1, 10 do assert.is_true(c[gi] > 800 and c[gi] < 1200, "peer " .. gi .. ": " .. tostring(c[gi])) end
  end)

  it("uses round robin for an empty or missing key, as nginx", function()
    local set = S.build(S.weighted({ 5, 1, 1 }), "hash")
    local got = {}
    for i = 1, 7 do got[i] = ps.pick(set, S.state(), nil, (i % 2 == 0) and "" or nil) end
    assert.same({ 1, 1, 2, 1, 3, 1, 1 }, got)
  end)
end)

describe("hash KEY consistent", function()
  it("builds nginx's ring: 160 points per weight unit from crc32(host \\0 port prev_hash)", function()
    local servers = { "10.0.0.1:80", "api.local", "unix:/tmp/x.sock", "[::1]:8080", "10.0.0.2:80" }
    local weights = { 1, 2, 1, 3, 1 }
    local list = {}
    for i, s in ipairs(servers) do list[i] = { id = s, w = weights[i] } end
    local set = S.build(S.peers(list), "hash", { hashConsistent = true })
    local ring = S.ref_ring(servers, weights)
    assert.equal(#ring, set.balRingSize)
    for i, p in ipairs(ring) do
      assert.equal(p.hash, set.balRingHash[i])
      assert.equal(p.server, servers[set.balGroupFirst[set.balRingGroup[i]]])
    end
  end)

  it("chooses the server nginx's C loop chooses (reference), moving on past unusable points", function()
    local servers, weights = {}, {}
    for i = 1, 8 do servers[i] = "192.168.0." .. i .. ":8080"; weights[i] = (i % 3) + 1 end
    local ring = S.ref_ring(servers, weights)
    local list = {}
    for i = 1, 8 do list[i] = { id = servers[i], w = weights[i], down = i == 4 } end
    local set = S.build(S.peers(list), "hash", { hashConsistent = true })
    local st = S.state()
    st.up[6] = false
    local tried = S.tried({ 2 })
    local index = {}
    for i, s in ipairs(servers) do index[s] = i end
    for _, k in ipairs(keys(500)) do
      local want = S.ref_chash(ring, k, function(s)
        local gi = index[s]
        return gi ~= 4 and gi ~= 6 and gi ~= 2
      end)
      assert.equal(index[want], ps.pick(set, st, tried, k), k)
    end
  end)

  it("moves only the keys of a removed peer: about 1/n of them", function()
    local all = S.build(S.peers(ids(10)), "hash", { hashConsistent = true })
    local l9 = ids(10)
    table.remove(l9, 7)
    local nine = S.build(S.peers(l9), "hash", { hashConsistent = true })
    local st = S.state()
    local moved, total = 0, 0
    for _, k in ipairs(keys(20000)) do
      local before = all.ids[ps.pick(all, st, nil, k)]
      local after = nine.ids[ps.pick(nine, st, nil, k)]
      total = total + 1
      if before ~= after then
        moved = moved + 1
        assert.equal("10.1.0.7:80", before) -- only the removed peer's keys move
      end
    end
    local fraction = moved / total
    assert.is_true(fraction > 0.05 and fraction < 0.15, "moved " .. fraction)
  end)

  it("moves the same keys when the peer is unavailable instead of removed", function()
    local all = S.build(S.peers(ids(10)), "hash", { hashConsistent = true })
    local l9 = ids(10)
    table.remove(l9, 3)
    local nine = S.build(S.peers(l9), "hash", { hashConsistent = true })
    local st = S.state()
    st.up[3] = false
    for _, k in ipairs(keys(3000)) do
      assert.equal(nine.ids[ps.pick(nine, S.state(), nil, k)], all.ids[ps.pick(all, st, nil, k)])
    end
  end)

  it("adds a peer taking about 1/(n+1) of the keys, from the others only", function()
    local ten = S.build(S.peers(ids(10)), "hash", { hashConsistent = true })
    local eleven = S.build(S.peers(ids(11)), "hash", { hashConsistent = true })
    local st = S.state()
    local moved = 0
    local list = keys(20000)
    for _, k in ipairs(list) do
      local before = ten.ids[ps.pick(ten, st, nil, k)]
      local after = eleven.ids[ps.pick(eleven, st, nil, k)]
      if before ~= after then
        moved = moved + 1
        assert.equal("10.1.0.11:80", after)
      end
    end
    assert.is_true(moved / #list > 0.045 and moved / #list < 0.14)
  end)

  it("treats peers sharing a server text as one ring member, balanced by smooth WRR", function()
    local list = {
      { id = "10.0.0.1:80", server = "api.local:80" },
      { id = "10.0.0.2:80", server = "api.local:80" },
      { id = "10.0.0.3:80", server = "web.local:80" },
    }
    local set = S.build(S.peers(list), "hash", { hashConsistent = true })
    assert.equal(320, set.balRingSize)
    local key
    for i = 1, 1000 do
      if S.ps.pick(set, S.state(), nil, "k" .. i) ~= 3 then key = "k" .. i; break end
    end
    local st = S.state()
    local a, b = ps.pick(set, st, nil, key), ps.pick(set, st, nil, key)
    assert.same({ 1, 2 }, { math.min(a, b), math.max(a, b) })
    assert.equal(3 - a, ps.pick(set, st, S.tried({ a }), key))
    -- both tried: the next ring point of another server
    assert.equal(3, ps.pick(set, st, S.tried({ 1, 2 }), key))
  end)

  it("uses round robin for an empty key and returns 0 when nothing is usable", function()
    local set = S.build(S.weighted({ 5, 1, 1 }), "hash", { hashConsistent = true })
    local got = {}
    for i = 1, 7 do got[i] = ps.pick(set, S.state(), nil, "") end
    assert.same({ 1, 1, 2, 1, 3, 1, 1 }, got)
    local st = S.state()
    st.up = { false, false, false }
    assert.equal(0, ps.pick(set, st, nil, "k"))
  end)
end)
