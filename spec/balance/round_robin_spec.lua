local S = require("balance.support")
local ps = S.ps

local function seq(set, st, n, tried)
  local out = {}
  for i = 1, n do out[i] = ps.pick(set, st, tried, nil) end
  return out
end

local function counts(set, st, n)
  local c = {}
  for _ = 1, n do
    local gi = ps.pick(set, st, nil, nil)
    c[gi] = (c[gi] or 0) + 1
  end
  return c
end

describe("round robin (smooth weighted)", function()
  it("gives nginx's order for weights 5,1,1: a a b a c a a", function()
    local set = S.build(S.weighted({ 5, 1, 1 }), "round_robin")
    assert.same({ 1, 1, 2, 1, 3, 1, 1, 1, 1, 2, 1, 3, 1, 1 }, seq(set, S.state(), 14))
  end)

  it("gives each peer exactly k*w picks over k*sum(w) picks, from any starting point", function()
    math.randomseed(11)
    local cases = { { 5, 1, 1 }, { 1, 1, 1, 1 }, { 3, 7, 2, 9, 1 }, { 100, 1 }, { 1 } }
    for _, weights in ipairs(cases) do
      local sum = 0
      for _, w in ipairs(weights) do sum = sum + w end
      for _, random_start in ipairs({ false, true }) do
        local set = S.build(S.weighted(weights), "round_robin", { noRandomStart = not random_start })
        local st = S.state()
        -- from wherever the state is: any window of sum(w) picks is one full cycle
        for _ = 1, math.random(0, sum) do ps.pick(set, st, nil, nil) end
        for k = 1, 3 do
          local c = counts(set, st, k * sum)
          for gi, w in ipairs(weights) do assert.equal(k * w, c[gi] or 0) end
        end
      end
    end
  end)

  it("starts workers at different points of the cycle", function()
    math.randomseed(12)
    local seen = {}
    local distinct = 0
    for _ = 1, 20 do
      local set = S.build(S.weighted({ 1, 2, 3, 4, 5, 6, 7, 8 }), "round_robin", { noRandomStart = false })
      local key = table.concat(seq(set, S.state(), 8), ",")
      if not seen[key] then distinct = distinct + 1; seen[key] = true end
    end
    assert.is_true(distinct > 5)
  end)

  it("never picks a down peer and skips unavailable ones, keeping exact proportions", function()
    local set = S.build(S.peers({ { w = 3 }, { w = 2, down = true }, { w = 1 }, { w = 4 } }), "round_robin")
    local st = S.state()
    st.up[4] = false
    local c = counts(set, st, 4 * 10)
    assert.is_nil(c[2]); assert.is_nil(c[4])
    assert.equal(30, c[1]); assert.equal(10, c[3])
    st.up[4] = true
    c = counts(set, st, 8 * 5)
    assert.is_nil(c[2])
    assert.equal(15, c[1]); assert.equal(5, c[3]); assert.equal(20, c[4])
  end)

  it("numbers primaries first, then backups, each in body order", function()
    local set = S.build(S.peers({ { backup = true, id = "b1" }, { id = "p1" }, { id = "p2", w = 2 }, { backup = true, id = "b2" } }),
      "round_robin")
    assert.equal(4, set.total); assert.equal(2, set.nPrimary)
    assert.same({ "p1", "p2", "b1", "b2" }, set.ids)
    assert.same({ 1, 2, 1, 1 }, set.weights)
    assert.equal(3, set.totalWeight)
    assert.equal(4, set.tries)
    assert.is_false(set.single)
  end)

  it("uses the backup tier only when no primary is usable", function()
    local set = S.build(S.peers({ { id = "p1" }, { id = "p2" }, { backup = true, w = 2 }, { backup = true } }), "round_robin")
    local st = S.state()
    for _, gi in ipairs(seq(set, st, 20)) do assert.is_true(gi <= 2) end
    st.up[1] = false
    for _, gi in ipairs(seq(set, st, 20)) do assert.equal(2, gi) end
    st.up[2] = false
    local c = counts(set, st, 30)
    assert.equal(20, c[3]); assert.equal(10, c[4])
    -- tried primaries count as unusable too
    st.up[1], st.up[2] = true, true
    local gi = ps.pick(set, st, S.tried({ 1, 2 }), nil)
    assert.is_true(gi == 3 or gi == 4)
  end)

  it("stays in the backup tier once a backup was tried (nginx switches rrp->peers)", function()
    local set = S.build(S.peers({ {}, {}, { backup = true }, { backup = true } }), "round_robin")
    local st = S.state()
    assert.equal(4, ps.pick(set, st, S.tried({ 1, 2, 3 }), nil))
    st.up[1] = true
    -- primary 1 is usable again, but this request already moved on to the backups
    assert.equal(4, ps.pick(set, st, S.tried({ 2, 3 }), nil))
    assert.equal(0, ps.pick(set, st, S.tried({ 3, 4 }), nil))
  end)

  it("skips tried peers", function()
    local set = S.build(S.weighted({ 5, 1, 1 }), "round_robin")
    local st = S.state()
    for _ = 1, 20 do
      local gi = ps.pick(set, st, S.tried({ 1 }), nil)
      assert.is_true(gi == 2 or gi == 3)
    end
    assert.equal(3, ps.pick(set, st, S.tried({ 1, 2 }), nil))
    assert.equal(0, ps.pick(set, st, S.tried({ 1, 2, 3 }), nil))
  end)

  it("returns 0 when everything is down or unavailable", function()
    local set = S.build(S.peers({ { down = true }, { down = true }, { backup = true, down = true } }), "round_robin")
    assert.equal(0, ps.pick(set, S.state(), nil, nil))
    assert.equal(0, set.tries)
    set = S.build(S.peers({ {}, {}, { backup = true } }), "round_robin")
    local st = S.state()
    st.up = { false, false, false }
    assert.equal(0, ps.pick(set, st, nil, nil))
    assert.equal(0, ps.pick(S.build({}, "round_robin"), st, nil, nil))
  end)

  it("marks a lone server as single", function()
    assert.is_true(S.build(S.weighted({ 3 }), "round_robin").single)
    assert.is_false(S.build(S.peers({ {}, { backup = true } }), "round_robin").single)
    local set = S.build(S.weighted({ 3 }), "round_robin")
    for _ = 1, 5 do assert.equal(1, ps.pick(set, S.state(), nil, nil)) end
  end)

  it("lowers the effective weight after noteFailure and lets picks restore it", function()
    local set = S.build(S.weighted({ 10, 10 }), "round_robin")
    local st = S.state()
    ps.noteFailure(set, 1) -- max_fails 1: effective weight 10 - 10/1 = 0
    local c = counts(set, st, 20)
    assert.is_true(c[1] < c[2])
    for _ = 1, 100 do ps.pick(set, st, nil, nil) end
    c = counts(set, st, 20)
    assert.equal(10, c[1]); assert.equal(10, c[2])
  end)

  it("rejects a weight that is not an integer >= 1", function()
    assert.has_error(function() S.build(S.weighted({ 0 }), "round_robin") end)
    assert.has_error(function() S.build(S.weighted({ 1.5 }), "round_robin") end)
    assert.has_error(function() S.build(S.weighted({ 1 }), "fastest") end)
  end)
end)

describe("peer sets share their read-only arrays", function()
  it("sets with the same parameters hold the same weights, down, max_fails, fail_timeout, max_conns arrays; picks stay per set", function()
    local a = S.build(S.weighted({ 1, 1 }), "round_robin", { noRandomStart = true })
    local b = S.build(S.weighted({ 1, 1 }), "round_robin", { noRandomStart = true })
    for _, k in ipairs({ "weights", "down", "maxFails", "failTimeouts", "maxConns", "balStart" }) do
      assert.are.equal(a[k], b[k], k)
    end
    -- the smooth WRR state is each set's own
    assert.are_not.equal(a.balCurrent, b.balCurrent)
    assert.are_not.equal(a.balEffective, b.balEffective)
    local st = S.state()
    assert.same({ 1, 2, 1 }, { ps.pick(a, st), ps.pick(a, st), ps.pick(a, st) })
    assert.same({ 1, 2 }, { ps.pick(b, st), ps.pick(b, st) })
    -- other contents, other arrays
    local c = S.build(S.weighted({ 2, 1 }), "round_robin", { noRandomStart = true })
    assert.are_not.equal(a.weights, c.weights)
    assert.same({ 2, 1 }, c.weights)
    local d = S.build(S.peers({ { w = 1 }, { w = 1, down = true } }), "round_robin", { noRandomStart = true })
    assert.are_not.equal(a.down, d.down)
    assert.same({ false, true }, d.down)
    assert.are.equal(a.weights, d.weights)
  end)

  it("only least_conn keeps a per-set connection scratch array", function()
    local rr = S.build(S.weighted({ 1, 1, 1 }), "round_robin")
    local lc = S.build(S.weighted({ 1, 1, 1 }), "least_conn")
    assert.equal(0, #rr.balConns)
    assert.equal(3, #lc.balConns)
  end)
end)
