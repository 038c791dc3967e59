-- `balancer ewma`: the peak-EWMA score with a controlled clock (decay by half-life, peaks, the EWMA of lower
-- samples, failure penalties), active requests, and the power-of-two-choices selection. Plain LuaJIT.
local S = require("balance.support")
local ps = S.ps
local E = require("dyups.balance.ewma")

local function ewma(weights, args, extra)
  local peers = weights and S.weighted(weights) or S.peers(extra)
  local set = S.build(peers, "balancer", { picker = "ewma", pickerArgs = args or { "half_life=1s" } })
  assert.is_nil(set.pickerProblem)
  return set, set.data
end

local function near(expected, actual, tolerance)
  assert(math.abs(expected - actual) <= (tolerance or 1e-9), ("expected %.9g, got %.9g"):format(expected, actual))
end

describe("ewma: arguments", function()
  local pickers = require("dyups.balance.pickers")
  local function config(args) return pickers.resolvePicker("ewma", args) end

  it("half_life and penalty take nginx's time syntax; defaults 10s and 1s", function()
    local _, c = config({})
    assert.same({ halfLife = 10, penalty = 1 }, c)
    _, c = config({ "half_life=500ms", "penalty=1m30s" })
    assert.same({ halfLife = 0.5, penalty = 90 }, c)
    _, c = config({ "penalty=0" })
    assert.equal(0, c.penalty)
  end)

  it("refuses what it does not take, with the reason", function()
    for args, reason in pairs({
      ["half_life=0"] = 'invalid half_life "0"', ["half_life=soon"] = 'invalid half_life "soon"',
      ["half_life=2h"] = 'invalid half_life "2h"', ["penalty=-1"] = 'invalid penalty "-1"',
      ["penalty="] = 'invalid penalty ""', ["decay=1s"] = 'unknown parameter "decay" (ewma takes half_life= and penalty=)',
      ["key=$remote_addr"] = 'unknown parameter "key"',
    }) do
      local p, why, known = config({ args })
      assert.is_nil(p)
      assert.is_true(known)
      assert.matches(reason, why, 1, true)
    end
  end)
end)

describe("ewma: the score", function()
  it("a response time counts at once, and decays toward 0 by half-lives while no other comes", function()
    local set, d = ewma({ 1, 1 })
    local st = S.state()
    st.clock = 1000
    set.picker.outcome(set, st, 1, true, 0.1)
    near(0.1, E.scoreAt(d, 1, 1000))
    near(0.05, E.scoreAt(d, 1, 1001))
    near(0.025, E.scoreAt(d, 1, 1002))
    near(0.1 * 2 ^ -0.5, E.scoreAt(d, 1, 1000.5))
    assert.equal(0, E.scoreAt(d, 2, 1002)) -- no outcome yet
  end)

  it("the half-life is the argument's", function()
    local set, d = ewma({ 1 }, { "half_life=10s" })
    local st = S.state()
    set.picker.outcome(set, st, 1, true, 0.2)
    near(0.1, E.scoreAt(d, 1, st.clock + 10))
  end)

  it("a peak replaces the score at once; a lower time pulls it down over half-lives (an EWMA in time)", function()
    local set, d = ewma({ 1 })
    local st = S.state()
    local outcome = set.picker.outcome
    outcome(set, st, 1, true, 0.01)
    outcome(set, st, 1, true, 0.2) -- same instant: a peak counts anyway
    near(0.2, E.scoreAt(d, 1, st.clock))
    st.clock = st.clock + 1 -- one half-life: the score reads 0.1; a 10 ms sample adds 10 ms * (1 - 1/2)
    outcome(set, st, 1, true, 0.01)
    near(0.105, E.scoreAt(d, 1, st.clock))
    outcome(set, st, 1, true, 0.01) -- no time passed: a lower sample moves nothing
    near(0.105, E.scoreAt(d, 1, st.clock))
    for _ = 1, 20 do -- a steady 10 ms: the score settles at 10 ms
      st.clock = st.clock + 0.5
      outcome(set, st, 1, true, 0.01)
    end
    near(0.01, E.scoreAt(d, 1, st.clock), 1e-4)
  end)

  it("a failure counts as at least the penalty, and decays like any score", function()
    local set, d = ewma({ 1, 1 }, { "half_life=1s", "penalty=2s" })
    local st = S.state()
    local outcome = set.picker.outcome
    outcome(set, st, 1, true, 0.003)
    outcome(set, st, 1, false, 0.003) -- connection refused after 3 ms
    near(2, E.scoreAt(d, 1, st.clock))
    near(0.5, E.scoreAt(d, 1, st.clock + 2))
    outcome(set, st, 2, false, 5) -- a timeout after 5 s: its own time
    near(5, E.scoreAt(d, 2, st.clock))
    local set0, d0 = ewma({ 1 }, { "penalty=0" })
    set0.picker.outcome(set0, st, 1, false, 0.004)
    near(0.004, E.scoreAt(d0, 1, st.clock))
  end)

  it("pending: a pick counts an active request until its outcome; the cost grows with it", function()
    local set, d = ewma({ 1 })
    local st = S.state()
    assert.equal(1, ps.pick(set, st, nil, nil))
    assert.equal(1, ps.pick(set, st, nil, nil))
    assert.equal(2, d.pending[1])
    near(E.TICK * 3, E.cost(set, d, 1, st.clock))
    set.picker.outcome(set, st, 1, true, 0.004)
    assert.equal(1, d.pending[1])
    near((0.004 + E.TICK) * 2, E.cost(set, d, 1, st.clock))
    set.picker.outcome(set, st, 1, true, 0.004)
    set.picker.outcome(set, st, 1, true, 0.004) -- never below 0
    assert.equal(0, d.pending[1])
  end)

  it("the cost is per unit of weight", function()
    local set, d = ewma({ 1, 4 })
    local st = S.state()
    set.picker.outcome(set, st, 1, true, 0.009)
    set.picker.outcome(set, st, 2, true, 0.009)
    near(E.cost(set, d, 1, st.clock) / 4, E.cost(set, d, 2, st.clock))
  end)
end)

describe("ewma: power of two choices", function()
  --- picks n times with the scores held fixed (no outcome; pending reset after each pick)
  local function tally(set, st, n)
    local d, counts = set.data, {}
    for gi = 1, set.total do counts[gi] = 0 end
    for _ = 1, n do
      local gi = ps.pick(set, st, nil, nil)
      counts[gi] = counts[gi] + 1
      d.pending[gi] = 0
    end
    return counts
  end

  it("the cheaper of two random peers: over three, the best wins 2/3, the middle 1/3, the worst never", function()
    math.randomseed(3)
    local set, d = ewma({ 1, 1, 1 })
    local st = S.state()
    for gi, t in ipairs({ 0.1, 0.001, 0.01 }) do set.picker.outcome(set, st, gi, true, t) end
    local c = tally(set, st, 3000)
    assert.equal(0, c[1])
    assert.is_true(c[2] > 1850 and c[2] < 2150, tostring(c[2]))
    assert.is_true(c[3] > 850 and c[3] < 1150, tostring(c[3]))
  end)

  it("ties are broken at random", function()
    math.randomseed(5)
    local set = ewma({ 1, 1 })
    local c = tally(set, S.state(), 2000)
    assert.is_true(c[1] > 850 and c[1] < 1150, tostring(c[1]))
  end)

  it("a slow server gets nothing while the fast one is idle, and a share once the fast one's requests pile up", function()
    local set, d = ewma({ 1, 1 })
    local st = S.state()
    set.picker.outcome(set, st, 1, true, 0.001) -- fast
    set.picker.outcome(set, st, 2, true, 0.050) -- slow
    local c = tally(set, st, 200)
    assert.same({ 200, 0 }, c)
    -- requests in flight (no outcome yet): 25 on the fast one cost 0.002 * 26 = 0.052 > 0.051, the slow one's
    local order = {}
    for i = 1, 60 do order[i] = ps.pick(set, st, nil, nil) end
    for i = 1, 25 do assert.equal(1, order[i]) end
    assert.equal(2, order[26])
    assert.equal(58, d.pending[1]) -- then 0.002 * 52 > 0.051 * 2: the second slow one at 52 + 1 fast ones
    assert.equal(2, d.pending[2])
  end)

  it("an idle slow server is tried again once its score decayed to the others' cost", function()
    local set, d = ewma({ 1, 1 }) -- half-life 1 s
    local st = S.state()
    set.picker.outcome(set, st, 2, true, 0.1)
    local function step()
      local gi = ps.pick(set, st, nil, nil)
      set.picker.outcome(set, st, gi, true, gi == 1 and 0.001 or 0.002)
      return gi
    end
    local seen2 = nil
    for i = 1, 100 do
      st.clock = st.clock + 0.1
      if step() == 2 then seen2 = i; break end
    end
    -- 0.1 * 2^-t + 0.001 < 0.002 once t > log2(100) = 6.6 s
    assert.is_true(seen2 ~= nil and seen2 >= 66 and seen2 <= 68, tostring(seen2))
    near(0.002, E.scoreAt(d, 2, st.clock), 0.001) -- and what it answered counts
  end)

  it("an untried server gets requests until its pending count makes it costly, then its response time decides", function()
    local set, d = ewma({ 1, 1 })
    local st = S.state()
    set.picker.outcome(set, st, 1, true, 0.004)
    local c = tally(set, st, 100)
    assert.same({ 0, 100 }, c) -- 0 + TICK < 0.004 + TICK
    d.pending[2] = 9 -- 10 in flight: 0.001 * 10 > 0.005
    assert.equal(1, ps.pick(set, st, nil, nil))
  end)

  it("skips unusable and tried peers; a tier with one usable peer or mostly unusable ones is scanned", function()
    local set, d = ewma({ 1, 1, 1, 1, 1, 1, 1, 1 })
    local st = S.state()
    for gi = 1, 7 do st.up[gi] = false end
    for _ = 1, 20 do
      assert.equal(8, ps.pick(set, st, nil, nil))
    end
    st.up[3] = true
    for gi = 1, 8 do set.picker.outcome(set, st, gi, true, gi / 1000) end
    for _ = 1, 20 do
      local gi = ps.pick(set, st, { [8] = true }, nil)
      assert.equal(3, gi)
    end
    assert.equal(0, ps.pick(set, st, { [3] = true, [8] = true }, nil))
    assert.equal(0, d.pending[1])
  end)

  it("backups only when no primary is usable, by the same rule", function()
    local set = ewma(nil, nil, { {}, {}, { backup = true }, { backup = true } })
    local st = S.state()
    for _ = 1, 20 do assert.is_true(ps.pick(set, st, nil, nil) <= 2) end
    st.up[1] = false
    st.up[2] = false
    for _ = 1, 20 do assert.is_true(ps.pick(set, st, nil, nil) >= 3) end
  end)
end)
