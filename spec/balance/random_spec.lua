local S = require("balance.support")
local ps = S.ps

local function freq(set, st, n, tried)
  local c = {}
  for _ = 1, n do
    local gi = ps.pick(set, st, tried, nil)
    c[gi] = (c[gi] or 0) + 1
  end
  return c
end

describe("random", function()
  it("spreads picks by weight", function()
    math.randomseed(41)
    local set = S.build(S.weighted({ 1, 2, 3, 4 }), "random")
    local n = 200000
    local c = freq(set, S.state(), n)
    for gi, w in ipairs({ 1, 2, 3, 4 }) do
      assert.is_true(math.abs(c[gi] / n - w / 10) < 0.01, gi .. ": " .. c[gi])
    end
  end)

  it("never picks down, unavailable or tried peers; 0 when none is left", function()
    math.randomseed(42)
    local set = S.build(S.peers({ { w = 1 }, { w = 5, down = true }, { w = 1 }, { w = 1 } }), "random")
    local st = S.state()
    st.up[3] = false
    local c = freq(set, st, 5000, S.tried({ 4 }))
    assert.same({ 1 }, (function() local k = {} for gi in pairs(c) do k[#k + 1] = gi end return k end)())
    assert.equal(0, ps.pick(set, st, S.tried({ 1, 4 }), nil))
  end)
end)

describe("random two least_conn", function()
  it("takes the one with fewer connections of two distinct weighted-random peers", function()
    math.randomseed(43)
    local set = S.build(S.weighted({ 1, 1, 1, 1 }), "random", { randomTwo = true })
    local st = S.state()
    st.active = { 0, 10, 10, 10 }
    local n = 100000
    local c = freq(set, st, n)
    -- peer 1 wins whenever it is one of the two: 1 - 3/4 * 2/3 = 1/2
    assert.is_true(math.abs(c[1] / n - 0.5) < 0.01, tostring(c[1]))
    for gi = 2, 4 do assert.is_true(math.abs(c[gi] / n - 1 / 6) < 0.01) end
  end)

  it("with two peers always compares both", function()
    math.randomseed(44)
    local set = S.build(S.weighted({ 1, 1 }), "random", { randomTwo = true })
    local st = S.state()
    st.active = { 4, 1 }
    for _ = 1, 1000 do assert.equal(2, ps.pick(set, st, nil, nil)) end
  end)

  it("compares connections per weight and skips unusable peers", function()
    math.randomseed(45)
    local set = S.build(S.weighted({ 4, 1, 1 }), "random", { randomTwo = true })
    local st = S.state()
    st.active = { 3, 1, 1 } -- 3/4 < 1/1
    st.up[3] = false
    -- peer 1 wins every comparison; only when 21 peeks find no second usable peer (about (5/6)^20)
    -- does nginx fall back to round robin, which may give peer 2
    local c = freq(set, st, 2000)
    assert.is_nil(c[3])
    assert.is_true(c[1] / 2000 > 0.93, tostring(c[1]))
    assert.equal(2, ps.pick(set, st, S.tried({ 1 }), nil))
    st.up[2] = false
    assert.equal(0, ps.pick(set, st, S.tried({ 1 }), nil))
  end)
end)
