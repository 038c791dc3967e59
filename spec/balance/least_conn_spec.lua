local S = require("balance.support")
local ps = S.ps

-- ngx_http_upstream_get_least_conn_peer over one tier, written from the C
local function ref_least_conn(peers, conns, tried, first, last)
  local best, many
  for i = first, last do
    local p = peers[i]
    if not tried[i] and not p.down and p.avail then
      if best == nil or conns[i] * peers[best].weight < conns[best] * p.weight then
        best, many = i, false
      elseif conns[i] * peers[best].weight == conns[best] * p.weight then
        many = true
      end
    end
  end
  if best == nil then return nil end
  local total = 0
  if many then
    for i = best, last do
      local p = peers[i]
      if not tried[i] and not p.down and conns[i] * peers[best].weight == conns[best] * p.weight and p.avail then
        p.current = p.current + p.effective
        total = total + p.effective
        if p.effective < p.weight then p.effective = p.effective + 1 end
        if p.current > peers[best].current then best = i end
      end
    end
  end
  peers[best].current = peers[best].current - total
  return best
end

describe("least_conn", function()
  it("picks the least weighted connection count", function()
    local set = S.build(S.weighted({ 1, 2, 4 }), "least_conn")
    local st = S.state()
    st.active = { 3, 5, 9 } -- ratios 3, 2.5, 2.25
    assert.equal(3, ps.pick(set, st, nil, nil))
    st.active = { 0, 5, 9 }
    assert.equal(1, ps.pick(set, st, nil, nil))
    st.up[1] = false
    assert.equal(3, ps.pick(set, st, nil, nil))
    assert.equal(2, ps.pick(set, st, S.tried({ 3 }), nil))
  end)

  it("breaks ties with smooth WRR among the tied peers (5,1,1 with no connections: a a b a c a a)", function()
    local set = S.build(S.weighted({ 5, 1, 1 }), "least_conn")
    local got = {}
    for i = 1, 7 do got[i] = ps.pick(set, S.state(), nil, nil) end
    assert.same({ 1, 1, 2, 1, 3, 1, 1 }, got)
  end)

  it("agrees with nginx's C loop (reference) over random connection counts, state carried across picks", function()
    math.randomseed(31)
    local weights = { 1, 2, 3, 1, 2, 5, 1, 1 }
    local list = {}
    for i, w in ipairs(weights) do list[i] = { w = w, down = i == 4 } end
    local set = S.build(S.peers(list), "least_conn")
    local ref = S.ref_peers(weights, { [4] = true })
    local st = S.state()
    for _ = 1, 3000 do
      for i = 1, #weights do
        st.active[i] = math.random(0, 3) * weights[i] -- many ties
        st.up[i] = math.random() > 0.15
        ref[i].avail = st.up[i]
      end
      local tried = {}
      if math.random() < 0.3 then tried[math.random(1, #weights)] = true end
      local want = ref_least_conn(ref, st.active, tried, 1, #weights) or 0
      assert.equal(want, ps.pick(set, st, next(tried) and tried or nil, nil))
    end
  end)

  it("uses the backup tier only when no primary is usable, and returns 0 when none is", function()
    local set = S.build(S.peers({ {}, {}, { backup = true }, { backup = true } }), "least_conn")
    local st = S.state()
    st.active = { 5, 5, 0, 1 }
    assert.is_true(ps.pick(set, st, nil, nil) <= 2)
    st.up[1], st.up[2] = false, false
    assert.equal(3, ps.pick(set, st, nil, nil))
    assert.equal(4, ps.pick(set, st, S.tried({ 3 }), nil))
    st.up[1] = true
    assert.equal(4, ps.pick(set, st, S.tried({ 3 }), nil)) -- stays in the backup tier
    assert.equal(0, ps.pick(set, st, S.tried({ 3, 4 }), nil))
    st.up = { false, false, false, false }
    assert.equal(0, ps.pick(set, st, nil, nil))
  end)
end)
