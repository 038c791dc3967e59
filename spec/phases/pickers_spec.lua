-- `balancer NAME` end to end under the fake ngx: register_picker, the write pipeline's refusals at apply time
-- (unknown names, refused arguments), a registered picker selected by name routing real requests through the
-- phase entry points (its key, its outcomes with their times), and what happens to a stored upstream whose
-- picker is not registered where it is built (a start, etcd, a worker without it).
local fake = require("spec.helpers.fake_ngx")
local P = require("spec.helpers.phases")

local ngx, b, phases, pipeline, pickers, reg

--- a picker that records what dyups gives it and picks the peer whose port ends like the key says
local function recorder()
  local r = { outcomes = {}, keys = {}, builds = 0 }
  function r.validate(args)
    for k in pairs(args) do if k ~= "key" and k ~= "tag" then return nil, 'unknown parameter "' .. k .. '"' end end
    if args.tag == "bad" then return nil, 'invalid tag "bad"' end
    return { tag = args.tag }
  end
  function r.build(peers, config)
    r.builds = r.builds + 1
    return { tag = config.tag }
  end
  function r.pick(peers, state, tried, key)
    r.keys[#r.keys + 1] = key or "<none>"
    for gi = peers.total, 1, -1 do -- the last usable one
      if not peers.down[gi] and not (tried and tried[gi]) and state.available(peers, gi) then return gi end
    end
    return 0
  end
  function r.outcome(peers, state, gi, ok, elapsed)
    r.outcomes[#r.outcomes + 1] = { peers.ids[gi], ok, elapsed }
  end
  return r
end

local request, peer = P.request, P.peer

local function logged(pattern)
  for _, l in ipairs(ngx._logs) do if l.msg:find(pattern, 1, true) then return l end end
  return nil
end

local function load(phase)
  ngx, b = P.load({ phase = phase })
  phases = require("dyups.phases.balancer")
  pipeline = require("dyups.pipeline")
  pickers = require("dyups.balance.pickers")
  reg = require("dyups.registry.sync")
end

-- what require("dyups").register_picker does once its phase is checked (the phase check: integration tests)
local function register(name, module) assert.is_nil(pickers.registerPicker(name, module)) end

describe("balancer NAME through the pipeline and the phases", function()
  local r
  before_each(function()
    load("init")
    r = recorder()
    register("rec", r)
  end)

  it("a write naming an unregistered balancer, or arguments it refuses, is 400 with the reason; nothing changes", function()
    local v, err, status = pipeline.update("u", "balancer nope; server 127.0.0.1:8001;")
    assert.is_nil(v)
    assert.equal(400, status)
    assert.equal('add server failed: unknown balancer "nope": not registered in this nginx (registered: ewma, rec)', err)
    v, err, status = pipeline.update("u", "balancer rec tag=bad; server 127.0.0.1:8001;")
    assert.equal(400, status)
    assert.equal('add server failed: balancer "rec": invalid tag "bad"', err)
    v, err, status = pipeline.update("u", "balancer ewma half_life=forever; server 127.0.0.1:8001;")
    assert.equal(400, status)
    assert.equal('add server failed: balancer "ewma": invalid half_life "forever"', err)
    v, err, status = pipeline.update("u", "balancer ewma; least_conn; server 127.0.0.1:8001;")
    assert.equal(400, status)
    assert.equal('add server failed: load balancing method redefined: "least_conn" after "balancer"', err)
    assert.is_nil(pipeline.get("u"))
    assert.equal(0, r.builds)
  end)

  it("a registered picker selected by name routes the requests, gets the key, and each try's outcome and time", function()
    assert(pipeline.update("u", "balancer rec tag=t1 key=$arg_k-$remote_addr; server 127.0.0.1:8001; server 127.0.0.1:8002; server 127.0.0.1:8003;"))
    request("u")
    ngx.var.arg_k = "abc"
    ngx.var.remote_addr = "10.0.0.9"
    phases.balance()
    assert.equal("127.0.0.1:8003", peer()) -- the module's choice: the last usable one
    assert.equal("abc-10.0.0.9", r.keys[#r.keys])
    assert.equal(3, b.more_tries)
    assert.equal("t1", reg.lookup("u").peers.data.tag)
    -- the try fails after 1.5 s: the retry reports it, then picks again
    ngx._advance(1.5)
    b.failure = "failed"
    phases.balance()
    assert.equal("127.0.0.1:8002", peer(2))
    assert.same({ "127.0.0.1:8003", false, 1.5 }, r.outcomes[1])
    -- the second try succeeds after 0.25 s: the log phase reports it
    ngx._advance(0.25)
    phases.logPhase()
    assert.same({ "127.0.0.1:8002", true, 0.25 }, r.outcomes[2])
    assert.equal(2, #r.outcomes)
    assert.equal(2, r.builds) -- the write's sandbox build, and this worker's: once per version each
    request("u")
    phases.balance()
    phases.logPhase()
    assert.equal(2, r.builds)
    assert.is_nil(logged("dyups: balancer"))
  end)

  it("nginx's methods and pickers without outcome() are not told outcomes: the phases skip it", function()
    assert(pipeline.update("rr", "server 127.0.0.1:8001; server 127.0.0.1:8002;"))
    request("rr")
    phases.balance()
    assert.is_nil(ngx.ctx.dyups_t)
    assert.is_false(reg.lookup("rr").peers.wantsOutcome)
    phases.logPhase()
    assert.is_true(pickers.registerPicker("plain", { pick = r.pick }) == nil)
    assert(pipeline.update("p", "balancer plain; server 127.0.0.1:8001;"))
    request("p")
    phases.balance()
    assert.is_nil(ngx.ctx.dyups_t)
    phases.logPhase()
  end)

  it("a connection-level failure of the last try reaches the picker as not ok", function()
    assert(pipeline.update("u", "balancer rec; server 127.0.0.1:8001;"))
    request("u")
    phases.balance()
    ngx._advance(0.002)
    ngx.status = 502
    ngx.var.upstream_header_time = "-"
    phases.logPhase()
    assert.same({ "127.0.0.1:8001", false }, { r.outcomes[1][1], r.outcomes[1][2] })
    assert.is_true(math.abs(r.outcomes[1][3] - 0.002) < 1e-9)
  end)

  it("balancer ewma: the requests' response times move the scores", function()
    assert(pipeline.update("e", "balancer ewma half_life=1s; server 127.0.0.1:8001; server 127.0.0.1:8002;"))
    for _ = 1, 40 do
      request("e")
      phases.balance()
      ngx._advance(peer() == "127.0.0.1:8001" and 0.002 or 0.200)
      phases.logPhase()
    end
    local d = reg.lookup("e").peers.data
    assert.is_true(d.score[2] > 0.1, tostring(d.score[2]))
    assert.is_true(d.score[1] < 0.01, tostring(d.score[1]))
    assert.same({ 0, 0 }, d.pending)
    -- from then on, sequential requests go to the fast one until the slow one's score decayed
    local slow = 0
    for _ = 1, 50 do
      request("e")
      phases.balance()
      if peer() == "127.0.0.1:8002" then slow = slow + 1 end
      ngx._advance(0.002)
      phases.logPhase()
    end
    assert.equal(0, slow)
  end)
end)

describe("a stored upstream whose balancer is not registered where it is built", function()
  before_each(function() load("init") end)

  it("init() (upstream_conf, the state file) keeps it with a warning; a worker without it routes by round robin and says so", function()
    local rec, err = pipeline.prepare("later", "balancer rec; server 127.0.0.1:8001; server 127.0.0.1:8002;", "conf", true)
    assert.is_nil(err)
    assert.equal("rec", rec.spec.picker)
    local w = logged('upstream later: unknown balancer "rec": not registered in this nginx (registered: ewma) yet')
    assert.is_truthy(w)
    assert.equal(ngx.WARN, w.level)
    -- committed as init() would, then built by a worker that has no "rec": round robin, logged at each build
    assert(require("dyups.store.command_log").commit("later", rec))
    reg.catchUp()
    local seen = {}
    for _ = 1, 4 do
      request("later")
      phases.balance()
      seen[peer()] = true
      phases.logPhase()
    end
    assert.same({ ["127.0.0.1:8001"] = true, ["127.0.0.1:8002"] = true }, seen)
    local e = logged('dyups: upstream later revision 1: unknown balancer "rec"')
    assert.is_truthy(e)
    assert.equal(ngx.ERR, e.level)
    assert.matches("routing it by round robin in this worker", e.msg)
  end)

  it("once the worker has it (registered after init(), before the first build), the picker is used", function()
    local rec = assert(pipeline.prepare("later", "balancer rec; server 127.0.0.1:8001; server 127.0.0.1:8002;", "conf", true))
    assert(require("dyups.store.command_log").commit("later", rec))
    local r = recorder()
    register("rec", r)
    reg.catchUp()
    request("later")
    phases.balance()
    assert.equal("127.0.0.1:8002", peer())
    assert.equal(1, r.builds)
    phases.logPhase()
  end)

  it("arguments a registered picker refuses are refused at start too (upstream_conf stops nginx)", function()
    register("rec", recorder())
    local rec, err = pipeline.prepare("x", "balancer rec tag=bad; server 127.0.0.1:8001;", "conf", true)
    assert.is_nil(rec)
    assert.equal('balancer "rec": invalid tag "bad"', err)
  end)

  it("a body from etcd naming a balancer this node has not is applied, routed by round robin here", function()
    local apply = require("dyups.cluster.apply")
    local rec, err = apply.prepareRemote("fromb", "balancer onlyonb; server 127.0.0.1:8001;")
    assert.is_nil(err)
    assert.equal("onlyonb", rec.spec.picker)
    rec, err = apply.prepareRemote("fromb", "balancer ewma penalty=x; server 127.0.0.1:8001;")
    assert.is_nil(rec)
    assert.equal('balancer "ewma": invalid penalty "x"', err)
  end)
end)

describe("balancer ewma: score snapshots shared through the dict (store/ewma.ts)", function()
  before_each(function() load("init") end)

  local function route(name, n, slow_time)
    for _ = 1, n do
      request(name)
      phases.balance()
      ngx._advance(peer() == "127.0.0.1:8002" and slow_time or 0.001)
      phases.logPhase()
    end
  end

  it("a worker publishes its scores at most once a second from its timer; nothing per request", function()
    assert(pipeline.update("e", "balancer ewma; server 127.0.0.1:8001; server 127.0.0.1:8002;"))
    local dict = ngx.shared.dyups
    local writes = 0
    local safe_set = dict.safe_set
    dict.safe_set = function(self, k, ...) if k:sub(1, 3) == "ew:" then writes = writes + 1 end return safe_set(self, k, ...) end
    route("e", 20, 0.3)
    assert.equal(0, writes) -- requests write nothing
    local ewma = require("dyups.store.ewma")
    ewma.publishEwma()
    assert.equal(2, writes)
    local v = dict:get("ew:e/127.0.0.1:8002#1")
    local score = tonumber(v:match("^(%S+) "))
    assert.is_true(score > 0.29, v)
    ewma.publishEwma() -- within the second: nothing
    route("e", 5, 0.3)
    ewma.publishEwma()
    assert.equal(2, writes)
    ngx._advance(1)
    ewma.publishEwma()
    assert.is_true(writes > 2)
    ngx._advance(1)
    local before = writes
    ewma.publishEwma() -- no outcome since: nothing to write
    assert.equal(before, writes)
    dict.safe_set = safe_set
  end)

  it("a new version, and another worker, start from the published scores of the entries they keep", function()
    assert(pipeline.update("e", "balancer ewma half_life=10s; server 127.0.0.1:8001; server 127.0.0.1:8002;"))
    route("e", 20, 0.5)
    require("dyups.store.ewma").publishEwma()
    -- an update that adds a server: 8002 keeps its score, 8003 starts unknown
    assert(pipeline.update("e", "balancer ewma half_life=10s; server 127.0.0.1:8001; server 127.0.0.1:8002; server 127.0.0.1:8003;"))
    local d = reg.lookup("e").peers.data
    assert.is_true(d.score[2] > 0.49, tostring(d.score[2]))
    assert.equal(0, d.score[3])
    -- another worker (fresh module state, the same dict) builds it seeded too: no request goes to the slow one
    fake.another_worker(ngx, b)
    phases = require("dyups.phases.balancer")
    reg = require("dyups.registry.sync")
    reg.catchUp()
    local seen = {}
    for _ = 1, 30 do
      request("e")
      phases.balance()
      seen[peer()] = (seen[peer()] or 0) + 1
      ngx._advance(0.001)
      phases.logPhase()
    end
    assert.is_nil(seen["127.0.0.1:8002"])
  end)

  it("upstreams that do not use ewma read and write no snapshot", function()
    local dict = ngx.shared.dyups
    local reads = 0
    local get = dict.get
    dict.get = function(self, k) if k:sub(1, 3) == "ew:" then reads = reads + 1 end return get(self, k) end
    assert(pipeline.update("r", "server 127.0.0.1:8001; server 127.0.0.1:8002;"))
    route("r", 10, 0.3)
    require("dyups.store.ewma").publishEwma()
    assert.equal(0, reads)
    for _, k in ipairs(dict:get_keys(0)) do assert.is_nil(k:match("^ew:")) end
    dict.get = get
  end)
end)
