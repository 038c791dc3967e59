local S = require("balance.support")
local ps = S.ps
local ip = require("dyups.balance.ip_addr")

local function bytes_of(text)
  local n = ip.parseClientAddr(text)
  local out = {}
  for i = 1, n do out[i] = ip.addrBytes[i] end
  return out
end

-- 200 addresses: 150 IPv4, 50 IPv6 of various spellings
local function addresses()
  math.randomseed(21)
  local list = { "192.168.1.7", "10.0.0.1", "::1", "::", "::ffff:192.168.1.7", "2001:db8::1", "fe80::1%eth0" }
  while #list < 150 do
    list[#list + 1] = string.format("%d.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(0, 255),
      math.random(0, 255))
  end
  while #list < 200 do
    local g = {}
    for i = 1, 8 do g[i] = string.format("%x", math.random(0, 65535)) end
    local k = #list % 3
    if k == 0 then
      list[#list + 1] = table.concat(g, ":")
    elseif k == 1 then
      list[#list + 1] = g[1] .. ":" .. g[2] .. "::" .. g[7] .. ":" .. g[8]
    else
      list[#list + 1] = "::ffff:" .. math.random(0, 255) .. "." .. math.random(0, 255) .. ".1.2"
    end
  end
  return list
end

describe("ip_hash", function()
  it("hashes the bytes nginx hashes", function()
    assert.same({ 192, 168, 1 }, bytes_of("192.168.1.7"))
    assert.same({ 0, 0, 0 }, bytes_of("unix:"))
    assert.same({ 0, 0, 0 }, bytes_of(nil))
    assert.same({ 0, 0, 0 }, bytes_of("300.1.1.1"))
    assert.same({ 0, 0, 0 }, bytes_of("1:2:3"))
    assert.same({ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, bytes_of("::1"))
    assert.same({ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 1, 2, 3, 4 }, bytes_of("::ffff:1.2.3.4"))
    assert.same({ 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, bytes_of("2001:DB8::1"))
    assert.same({ 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, bytes_of("fe80::1%eth0"))
    for _, a in ipairs(addresses()) do assert.same(S.addr_bytes(a), bytes_of(a)) end
  end)

  -- one configuration per row: weights, down peers, unavailable peers, tried peers
  local configs = {
    { weights = { 1, 1, 1, 1 } },
    { weights = { 1, 2, 3, 1, 5, 1, 2, 1 }, down = { [5] = true }, unavailable = { [3] = true, [6] = true } },
    { weights = { 1, 2, 3, 1, 5, 1, 2, 1 }, down = { [5] = true }, unavailable = { [3] = true }, tried = { 2 } },
    -- only one light peer left: often more than 20 rehashes, then nginx's round robin
    { weights = { 3, 2, 4, 1, 5, 1 }, unavailable = { [1] = true, [2] = true, [3] = true, [5] = true, [6] = true } },
    { weights = { 1, 1 }, unavailable = { [1] = true, [2] = true } },
  }

  it("chooses the peer nginx's C loop chooses (reference) for 200 addresses", function()
    local fallbacks = 0
    for _, cfg in ipairs(configs) do
      for _, addr in ipairs(addresses()) do
        local list = {}
        for i, w in ipairs(cfg.weights) do list[i] = { w = w, down = cfg.down and cfg.down[i] } end
        local set = S.build(S.peers(list), "ip_hash")
        local st = S.state()
        for gi in pairs(cfg.unavailable or {}) do st.up[gi] = false end
        local ref_peers = S.ref_peers(cfg.weights, cfg.down, cfg.unavailable)
        local tried = S.tried(cfg.tried or {})
        local want, how = S.ref_ip_hash(ref_peers, addr, tried)
        if how == "rr" then fallbacks = fallbacks + 1 end
        assert.equal(want or 0, ps.pick(set, st, next(tried) and tried or nil, addr), addr)
      end
    end
    assert.is_true(fallbacks > 20) -- the round-robin fallback was exercised
  end)

  it("is stable per address and spreads addresses by weight", function()
    local set = S.build(S.weighted({ 1, 1, 2 }), "ip_hash")
    local st = S.state()
    local c = {}
    for _, a in ipairs(addresses()) do
      local gi = ps.pick(set, st, nil, a)
      assert.equal(gi, ps.pick(set, st, nil, a))
      c[gi] = (c[gi] or 0) + 1
    end
    assert.is_true(c[1] > 25 and c[2] > 25 and c[3] > 60)
  end)

  it("treats addresses in the same /24 as one client (IPv4: three octets)", function()
    local set = S.build(S.weighted({ 1, 1, 1, 1, 1 }), "ip_hash")
    local gi = ps.pick(set, S.state(), nil, "172.16.5.1")
    for i = 2, 254 do assert.equal(gi, ps.pick(set, S.state(), nil, "172.16.5." .. i)) end
  end)
end)
