-- The picker interface (balance/types.ts Picker): the contract every method keeps, nginx's own, ewma and
-- registered modules alike; the registry of pickers by name; what the registered kind enforces whatever a
-- module answers. Plain LuaJIT, no ngx.
local S = require("balance.support")
local ps = S.ps
local pickers = require("dyups.balance.pickers")
local fastest = dofile("examples/pickers/fastest.lua")

--- a module that records what dyups asks of it and answers round robin's way (its own counter)
local function recorder()
  local r = { builds = 0, outcomes = 0 }
  function r.validate(args) return { args = args } end
  function r.build(peers, config, servers)
    r.builds = r.builds + 1
    r.servers = servers
    return { next = 0, config = config }
  end
  function r.pick(peers, state, tried, key)
    r.key = key
    local d = peers.data
    for _ = 1, peers.total do
      d.next = d.next % peers.total + 1
      local gi = d.next
      if not peers.down[gi] and not (tried and tried[gi]) and state.available(peers, gi) then return gi end
    end
    return 0
  end
  function r.outcome(peers, state, gi, ok, elapsed)
    r.outcomes = r.outcomes + 1
    r.last = gi
  end
  return r
end

local methods = {
  { "round_robin", {}, backups = true },
  { "least_conn", {}, backups = true },
  { "ip_hash", {} },
  { "hash", {} },
  { "hash", { hashConsistent = true } },
  { "random", {} },
  { "random", { randomTwo = true } },
  { "balancer", { picker = "ewma", pickerArgs = { "half_life=2s" } }, backups = true },
  { "balancer", { picker = "fastest", pickerArgs = { "explore=0.3" } }, backups = true },
  { "balancer", { picker = "recorder" }, backups = true },
}
local function label(m) return (m[2].picker or m[1]) .. (m[2].hashConsistent and " consistent" or "") .. (m[2].randomTwo and " two" or "") end

local function register_all()
  pickers.resetPickers()
  assert.is_nil(pickers.registerPicker("fastest", fastest))
  assert.is_nil(pickers.registerPicker("recorder", recorder()))
end

describe("the picker interface: every method keeps the contract", function()
  before_each(register_all)
  after_each(pickers.resetPickers)

  for _, m in ipairs(methods) do
    it(label(m) .. ": a usable peer, backups only when no primary is usable, 0 exactly when none", function()
      math.randomseed(7)
      for _ = 1, 300 do
        local n = math.random(1, 8)
        local list = {}
        for i = 1, n do
          list[i] = { w = math.random(1, 4), down = math.random() < 0.2, backup = m.backups and i > 1 and math.random() < 0.3 }
        end
        local set = S.build(S.peers(list), m[1], m[2])
        assert.is_nil(set.pickerProblem)
        local st = S.state()
        local tried = {}
        for gi = 1, set.total do
          st.up[gi] = math.random() > 0.3
          if gi <= set.nPrimary and math.random() < 0.2 then tried[gi] = true end -- backups: after every primary
        end
        local function usable(gi) return not set.down[gi] and st.up[gi] and not tried[gi] end
        local anyPrimary, any = false, false
        for gi = 1, set.total do
          if usable(gi) then any = true; if gi <= set.nPrimary then anyPrimary = true end end
        end
        local key = m[1] == "ip_hash" and ("10.0." .. math.random(0, 255) .. ".1") or ("k" .. math.random(1, 1000))
        local gi = ps.pick(set, st, next(tried) and tried or nil, key)
        if any then
          assert.is_true(gi >= 1 and gi <= set.total)
          assert.is_true(usable(gi))
          if gi > set.nPrimary then assert.is_false(anyPrimary) end
        else
          assert.equal(0, gi)
        end
      end
    end)

    it(label(m) .. ": retries never repeat a tried peer while another is usable", function()
      math.randomseed(11)
      for _ = 1, 100 do
        local n = math.random(2, 7)
        local list = {}
        for i = 1, n do list[i] = { w = math.random(1, 3), down = math.random() < 0.15, backup = m.backups and i > 2 and math.random() < 0.3 } end
        local set = S.build(S.peers(list), m[1], m[2])
        local st = S.state()
        local usable = 0
        for gi = 1, set.total do
          st.up[gi] = math.random() > 0.2
          if st.up[gi] and not set.down[gi] then usable = usable + 1 end
        end
        local tried, tries = {}, 0
        while true do
          local gi = ps.pick(set, st, next(tried) and tried or nil, "key" .. n)
          if gi == 0 then break end
          assert.is_nil(tried[gi], "peer " .. gi .. " picked twice")
          tried[gi] = true
          tries = tries + 1
          if set.wantsOutcome then set.picker.outcome(set, st, gi, false, 0.001) end
          assert.is_true(tries <= set.total)
        end
        assert.equal(usable, tries) -- every usable peer, each once, then 0
      end
    end)

    it(label(m) .. ": a pick allocates nothing", function()
      local set = S.build(S.weighted({ 3, 1, 2, 1, 1 }), m[1], m[2])
      local st = S.state()
      local tried = { [2] = true }
      local outcome = set.picker.outcome
      for i = 1, 2000 do
        local gi = ps.pick(set, st, tried, "k" .. (i % 7))
        if outcome and gi > 0 then outcome(set, st, gi, true, 0.002) end
      end
      local keys = {}
      for i = 1, 7 do keys[i] = "k" .. i end
      -- In the interpreter, without the traces compiled so far (the JIT's own allocations, when it compiles
      -- or leaves a trace, are not the pick's), after a warm-up: 20 000 picks (and outcomes), not one byte.
      local function run(n)
        for i = 1, n do
          local gi = ps.pick(set, st, tried, keys[i % 7 + 1])
          if outcome and gi > 0 then outcome(set, st, gi, i % 5 ~= 0, 0.002) end
        end
      end
      jit.off()
      jit.flush()
      collectgarbage("stop")
      run(5000)
      local before = collectgarbage("count")
      run(20000)
      local grew = collectgarbage("count") - before
      collectgarbage("restart")
      jit.on()
      assert.equal(0, grew)
    end)

    it(label(m) .. ": built once per version; outcomes wanted only by pickers that have outcome()", function()
      local set = S.build(S.weighted({ 1, 1, 1 }), m[1], m[2])
      local wants = m[2].picker ~= nil
      assert.equal(wants, set.wantsOutcome)
      assert.equal(wants, set.picker.outcome ~= nil)
      if m[2].picker == nil then assert.is_nil(set.data) end
    end)
  end

  it("build gets the configuration validate made, and the server texts; once per version", function()
    pickers.resetPickers()
    local r = recorder()
    assert.is_nil(pickers.registerPicker("recorder", r))
    local peers = S.peers({ { server = "a.test:80" }, {}, { server = "b.test" } })
    local set = S.build(peers, "balancer", { picker = "recorder", pickerArgs = { "x=1", "key=$arg_k" } })
    assert.equal(1, r.builds)
    assert.same({ x = "1", key = "$arg_k" }, set.data.config.args)
    assert.same({ "a.test:80", "10.0.0.2:8002", "b.test" }, r.servers)
    for _ = 1, 50 do ps.pick(set, S.state(), nil, "the key") end
    assert.equal(1, r.builds)
    assert.equal("the key", r.key)
    S.build(peers, "balancer", { picker = "recorder" })
    assert.equal(2, r.builds)
  end)
end)

describe("the registry of pickers", function()
  after_each(pickers.resetPickers)

  it("registers a module by name, for versions built from then on; names are listed", function()
    assert.same({ "ewma" }, pickers.pickerNames())
    assert.is_nil(pickers.registerPicker("fastest", fastest))
    assert.same({ "ewma", "fastest" }, pickers.pickerNames())
    local set = S.build(S.weighted({ 1, 1 }), "balancer", { picker = "fastest" })
    assert.equal("fastest", set.picker.name)
    assert.is_nil(set.pickerProblem)
  end)

  it("refuses bad names, nginx's methods, the built-in ewma and modules that are not pickers", function()
    assert.matches("invalid balancer name", pickers.registerPicker("1x", fastest))
    assert.matches("invalid balancer name", pickers.registerPicker("a-b", fastest))
    assert.matches("invalid balancer name", pickers.registerPicker(string.rep("a", 65), fastest))
    assert.matches("string expected", pickers.registerPicker(nil, fastest))
    assert.matches("nginx method", pickers.registerPicker("least_conn", fastest))
    assert.matches("nginx method", pickers.registerPicker("round_robin", fastest))
    assert.matches("built%-in", pickers.registerPicker("ewma", fastest))
    assert.matches("table expected", pickers.registerPicker("x", "fastest"))
    assert.matches("no pick function", pickers.registerPicker("x", {}))
    assert.matches("outcome is not a function", pickers.registerPicker("x", { pick = fastest.pick, outcome = 1 }))
    assert.same({ "ewma" }, pickers.pickerNames())
  end)

  it("resolves a name: not registered, arguments refused, validate raising, no validate and arguments", function()
    local p, reason, known = pickers.resolvePicker("nope", {})
    assert.is_nil(p)
    assert.equal('unknown balancer "nope": not registered in this nginx (registered: ewma)', reason)
    assert.is_false(known)
    p, reason, known = pickers.resolvePicker("ewma", { "half_life=soon" })
    assert.is_nil(p)
    assert.equal('balancer "ewma": invalid half_life "soon"', reason)
    assert.is_true(known)
    pickers.registerPicker("boom", { pick = fastest.pick, validate = function() error("kaput") end })
    p, reason = pickers.resolvePicker("boom", {})
    assert.is_nil(p)
    assert.matches('balancer "boom": its validate failed: .*kaput', reason)
    pickers.registerPicker("plain", { pick = fastest.pick })
    assert.is_truthy(pickers.resolvePicker("plain", {}))
    p, reason = pickers.resolvePicker("plain", { "a=1" })
    assert.equal('balancer "plain": unknown parameter "a" (this balancer takes none)', reason)
    reason = select(2, pickers.resolvePicker("fastest", {}))
    assert.equal('unknown balancer "fastest": not registered in this nginx (registered: boom, ewma, plain)', reason)
  end)

  it("a set whose balancer cannot be used is built for round robin and says why", function()
    local set = S.build(S.weighted({ 1, 1 }), "balancer", { picker = "nope" })
    assert.equal("round_robin", set.picker.name)
    assert.matches('unknown balancer "nope"', set.pickerProblem)
    assert.is_false(set.wantsOutcome)
    pickers.registerPicker("badbuild", { pick = fastest.pick, build = function() error("no memory for you") end })
    set = S.build(S.weighted({ 1, 1 }), "balancer", { picker = "badbuild" })
    assert.equal("round_robin", set.picker.name)
    assert.matches('balancer "badbuild": its build failed: .*no memory for you', set.pickerProblem)
    local st = S.state()
    assert.is_true(ps.pick(set, st, nil, nil) > 0)
  end)
end)

describe("the registered kind enforces the contract whatever the module answers", function()
  local warnings
  before_each(function()
    warnings = {}
    pickers.setPickerWarning(function(msg) warnings[#warnings + 1] = msg end)
  end)
  after_each(function()
    pickers.resetPickers()
    pickers.setPickerWarning(function() end)
  end)

  local function answering(answer)
    pickers.resetPickers()
    pickers.registerPicker("fixed", { pick = function() return answer end })
    local peers = S.peers({ {}, { down = true }, {}, { backup = true } })
    return S.build(peers, "balancer", { picker = "fixed" })
  end

  it("a usable primary is taken as answered", function()
    local set = answering(3)
    for _ = 1, 5 do assert.equal(3, ps.pick(set, S.state(), nil, nil)) end
    assert.same({}, warnings)
  end)

  for _, case in ipairs({
    { "a down peer", 2 }, { "a tried peer", 1, { [1] = true } }, { "an unavailable peer", 3, nil, { [3] = false } },
    { "a backup while a primary is usable", 4 }, { "nil", nil }, { "a string", "1" }, { "a fraction", 1.5 },
    { "an index out of range", 9 }, { "0 while a peer is usable", 0 },
  }) do
    it(case[1] .. " is replaced by round robin's pick, and reported once per version", function()
      local set = answering(case[2])
      local st = S.state()
      for gi, up in pairs(case[4] or {}) do st.up[gi] = up end
      for _ = 1, 3 do
        local gi = ps.pick(set, st, case[3], nil)
        assert.is_true(gi == 1 or gi == 3)
        assert.is_nil((case[3] or {})[gi])
        assert.is_true(st.up[gi] ~= false)
      end
      assert.equal(1, #warnings)
      assert.matches('balancer "fixed" answered', warnings[1])
      assert.equal(3, set.misPicks)
    end)
  end

  it("a backup is taken when no primary is usable; 0 when nothing is", function()
    local set = answering(4)
    local st = S.state()
    st.up[1] = false
    st.up[3] = false
    assert.equal(4, ps.pick(set, st, nil, nil))
    set = answering(0)
    st.up[4] = false
    assert.equal(0, ps.pick(set, st, nil, nil))
    assert.same({}, warnings)
  end)
end)
