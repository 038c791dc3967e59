-- Per-worker traffic counters (dyups.metrics.counters) through the phase entry points, and their
-- publication to the metrics dict (dyups.metrics.publish): what a try, a retry and a request's end add,
-- that the steady state allocates nothing and reads no nginx variable, that deltas reach the dict once,
-- that a deleted upstream's or a removed peer's series are deleted, and that a full metrics dict drops
-- counts without touching the configuration.
local fake = require("spec.helpers.fake_ngx")
local P = require("spec.helpers.phases")

local ngx, b, phases, pipeline, counters, publish, mdict, reg
local current

local function request(upstream) current = P.request(upstream) end
local peer, update = P.peer, P.update

--- one whole request: first try, then `fails` failed tries (connect failures), then the log phase
local function serve(name, status, fails)
  request(name)
  phases.balance()
  for _ = 1, fails or 0 do
    b.failure = "failed"
    ngx.var.upstream_header_time = "- : "
    ngx.var.upstream_connect_time = "- : "
    phases.balance()
  end
  ngx.var.upstream_header_time = nil
  ngx.var.upstream_connect_time = nil
  ngx.status = status or 200
  phases.logPhase()
  return peer()
end

local function counter(name, peer_id, i)
  return mdict:get("m:" .. name .. "|" .. (peer_id or "") .. "|" .. i)
end

local function keys_of(name)
  local out = {}
  for _, k in ipairs(mdict:get_keys(0)) do
    if k:find("m:" .. name .. "|", 1, true) == 1 then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

describe("metrics counters", function()
  before_each(function()
    ngx, b = P.load({ dicts = { "dyups", "dyups_metrics" } })
    mdict = ngx.shared.dyups_metrics
    require("dyups.store.metrics").resetMetricsDict()
    require("dyups.store.metrics").prepareMetricsDict()
    phases = require("dyups.phases.balancer")
    pipeline = require("dyups.pipeline")
    reg = require("dyups.registry.sync")
    counters = require("dyups.metrics.counters")
    publish = require("dyups.metrics.publish")
    require("dyups.metrics.hooks").startCounting()
  end)

  it("counts tries per peer, requests, status classes and the response time per upstream", function()
    update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
    local seen = {}
    for i = 1, 10 do
      request("u")
      phases.balance()
      seen[peer()] = (seen[peer()] or 0) + 1
      ngx._advance(i == 10 and 20 or 0.003) -- 9 requests of 3 ms, one of 20 s
      ngx.status = i == 1 and 404 or 200
      phases.logPhase()
    end
    publish.publishTick(true)
    local P = counters
    assert.equal(10, counter("u", nil, P.U_REQ))
    assert.equal(9, counter("u", nil, P.U_CLASS + 2))
    assert.equal(1, counter("u", nil, P.U_CLASS + 4))
    assert.equal(9, counter("u", nil, P.U_BUCKET + 1)) -- le 0.005
    assert.equal(1, counter("u", nil, P.U_BUCKET + P.BUCKETS)) -- +Inf
    assert.near(20.027, counter("u", nil, P.U_SUM), 1e-6)
    for id, n in pairs(seen) do
      assert.equal(n, counter("u", id, P.P_TRY))
      assert.equal(n, counter("u", id, P.P_DONE))
    end
    assert.is_nil(counter("u", nil, P.U_RETRY)) -- never created: no retry happened
  end)

  it("a retry counts the failed try at its peer (connect or read) and the retry at the upstream", function()
    update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002; server 127.0.0.1:8003;")
    request("u")
    phases.balance()
    local first = peer()
    -- a connect failure: no header, no connection
    b.failure = "failed"
    ngx.var.upstream_header_time = "- : "
    ngx.var.upstream_connect_time = "- : "
    phases.balance()
    local second = peer()
    -- a read failure: connected (connect time set), no header
    ngx.var.upstream_header_time = "-, - : "
    ngx.var.upstream_connect_time = "-, 0.001 : "
    phases.balance()
    local third = peer()
    ngx.var.upstream_header_time = "-, -, 0.002"
    ngx.var.upstream_connect_time = "-, 0.001, 0.001"
    ngx.status = 200
    phases.logPhase()
    publish.publishTick(true)
    local P = counters
    assert.equal(1, counter("u", first, P.P_FAIL_CONNECT))
    assert.equal(1, counter("u", second, P.P_FAIL_READ))
    assert.equal(1, counter("u", third, P.P_CLASS + 2))
    for _, id in ipairs({ first, second, third }) do
      assert.equal(1, counter("u", id, P.P_TRY))
      assert.equal(1, counter("u", id, P.P_DONE))
    end
    assert.equal(2, counter("u", nil, P.U_RETRY))
    assert.equal(1, counter("u", nil, P.U_REQ))
  end)

  it("a try skipped for its status (proxy_next_upstream http_500) counts as that peer's response", function()
    update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
    request("u")
    phases.balance()
    local first = peer()
    b.failure = "failed"
    b.get_last_failure = function() return "failed", 500 end
    ngx.var.upstream_header_time = "0.001 : "
    phases.balance()
    ngx.var.upstream_header_time = "0.001, 0.001"
    phases.logPhase()
    publish.publishTick(true)
    assert.equal(1, counter("u", first, counters.P_CLASS + 5))
    assert.is_nil(counter("u", first, counters.P_FAIL_CONNECT))
  end)

  it("the last try failing (nginx answers 502 without a header from the peer) is a failure, not a response", function()
    update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
    request("u")
    phases.balance()
    local p = peer()
    ngx.status = 502
    ngx.var.upstream_header_time = "-"
    ngx.var.upstream_connect_time = "0.000"
    phases.logPhase()
    publish.publishTick(true)
    assert.equal(1, counter("u", p, counters.P_FAIL_READ))
    assert.is_nil(counter("u", p, counters.P_CLASS + 5))
    assert.equal(1, counter("u", nil, counters.U_CLASS + 5)) -- the client got a 502
  end)

  it("the steady state allocates nothing and reads no nginx variable", function()
    update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
    local ver = reg.lookup("u")
    counters.countTry(ver, 1, false) -- first use: slots attached, marked dirty
    counters.observe(ver, 1, ngx.now(), true)
    counters.countTry(ver, 2, false)
    counters.observe(ver, 2, ngx.now(), true)
    ngx.var = setmetatable({}, { __index = function(_, k) error("ngx.var." .. k .. " read") end })
    local function run(n)
      for i = 1, n do
        local gi = i % 2 + 1
        counters.countTry(ver, gi, false)
        counters.observe(ver, gi, ngx.now(), true)
      end
    end
    run(20000) -- warm-up: LuaJIT compiles its traces (their memory is not the code's)
    collectgarbage("collect")
    collectgarbage("stop")
    local before = collectgarbage("count")
    run(100000)
    local grown = collectgarbage("count") - before
    collectgarbage("restart")
    assert.is_true(grown < 1, "grew by " .. grown .. " KB")
  end)

  it("a request whose log phase never ran (a stale slot) closes its try and counts nothing else", function()
    update("u", "server 127.0.0.1:8001;")
    request("u")
    phases.balance()
    local p = peer()
    local stale = current
    -- the next request at the same address finds the slot: nginx freed the first one without a log phase
    ngx._use_request(stale)
    ngx._req_start = ngx._req_start + 1
    ngx.var.dyups_upstream = "u"
    b.failure = nil
    phases.balance()
    phases.logPhase()
    publish.publishTick(true)
    assert.equal(2, counter("u", p, counters.P_TRY))
    assert.equal(2, counter("u", p, counters.P_DONE)) -- nothing left in flight
    assert.equal(1, counter("u", nil, counters.U_REQ)) -- only the request that ended is counted
  end)

  it("publishes each delta once: a second publication adds nothing", function()
    update("u", "server 127.0.0.1:8001;")
    for _ = 1, 3 do serve("u") end
    publish.publishTick(true)
    publish.publishTick(true)
    assert.equal(3, counter("u", nil, counters.U_REQ))
    serve("u")
    publish.publishTick(true)
    assert.equal(4, counter("u", nil, counters.U_REQ))
  end)

  it("publishes at every tick while few slots changed, else about once a second", function()
    update("u", "server 127.0.0.1:8001;")
    serve("u")
    publish.publishTick(false)
    assert.equal(1, counter("u", nil, counters.U_REQ))
    serve("u")
    ngx._advance(0.1)
    publish.publishTick(false)
    assert.equal(2, counter("u", nil, counters.U_REQ))
    -- 100 upstreams changed: more than a tick's worth, published once PUBLISH_INTERVAL passed
    for i = 1, 100 do update("many" .. i, "server 127.0.0.1:8001;") end
    ngx._advance(1)
    publish.publishTick(false) -- the clean-up after those writes
    for i = 1, 100 do serve("many" .. i) end
    ngx._advance(0.1)
    publish.publishTick(false)
    assert.is_nil(counter("many1", nil, counters.U_REQ))
    ngx._advance(1)
    publish.publishTick(false)
    assert.equal(1, counter("many1", nil, counters.U_REQ))
    assert.equal(1, counter("many100", nil, counters.U_REQ))
  end)

  it("spaces publications out when they take more than 2 % of the worker's time (at most 10 s apart)", function()
    for i = 1, 100 do update("many" .. i, "server 127.0.0.1:8001;") end
    ngx._advance(1)
    publish.publishTick(false) -- the clean-up after those writes
    -- from now on, each clock update finds 50 ms passed: a publication of 100 slots (no yield) then
    -- measures 50 ms of work between its first and its last reading of the clock
    ngx.update_time = function() ngx._advance(0.05) end
    for i = 1, 100 do serve("many" .. i) end
    ngx._advance(1)
    publish.publishTick(false)
    assert.equal(1, counter("many1", nil, counters.U_REQ))
    assert.near(2.5, publish.publishInterval(), 1e-6) -- 50 ms / 0.02
    for i = 1, 100 do serve("many" .. i) end
    ngx._advance(1.5)
    publish.publishTick(false)
    assert.equal(1, counter("many1", nil, counters.U_REQ)) -- 1.5 s < 2.5 s: not yet
    ngx._advance(1)
    publish.publishTick(false)
    assert.equal(2, counter("many1", nil, counters.U_REQ))
    -- a publication of 1 s of work: 10 s at most
    ngx.update_time = function() ngx._advance(1) end
    for i = 1, 100 do serve("many" .. i) end
    ngx._advance(3)
    publish.publishTick(false)
    assert.equal(3, counter("many1", nil, counters.U_REQ))
    assert.equal(10, publish.publishInterval())
    -- cheap again: back to 1 s
    ngx.update_time = function() end
    for i = 1, 100 do serve("many" .. i) end
    ngx._advance(10)
    publish.publishTick(false)
    assert.equal(4, counter("many1", nil, counters.U_REQ))
    assert.equal(1, publish.publishInterval())
  end)

  it("a deleted upstream's counters are deleted, and its in-flight requests publish nothing after that", function()
    update("gone", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
    update("kept", "server 127.0.0.1:8001;")
    serve("gone")
    serve("kept")
    request("gone")
    phases.balance() -- in flight while the upstream is deleted
    local held = current
    publish.publishTick(true)
    assert.is_true(#keys_of("gone") > 0)
    assert.is_truthy(pipeline.remove("gone"))
    publish.publishTick(true)
    assert.same({}, keys_of("gone"))
    ngx._use_request(held)
    phases.logPhase()
    publish.publishTick(true)
    assert.same({}, keys_of("gone"))
    assert.equal(1, counter("kept", nil, counters.U_REQ))
    -- re-created: counts from zero
    update("gone", "server 127.0.0.1:8001;")
    serve("gone")
    publish.publishTick(true)
    assert.equal(1, counter("gone", nil, counters.U_REQ))
  end)

  it("a peer that leaves its upstream loses its series; the others keep counting", function()
    update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
    for _ = 1, 4 do serve("u") end
    publish.publishTick(true)
    assert.equal(2, counter("u", "127.0.0.1:8002", counters.P_TRY))
    update("u", "server 127.0.0.1:8001;")
    serve("u")
    publish.publishTick(true)
    assert.is_nil(counter("u", "127.0.0.1:8002", counters.P_TRY))
    assert.equal(3, counter("u", "127.0.0.1:8001", counters.P_TRY))
    assert.equal(5, counter("u", nil, counters.U_REQ))
  end)

  it("a full metrics dict drops counts (counted, logged once) and leaves the configuration alone", function()
    update("u", "server 127.0.0.1:8001;")
    mdict.limit = 200 -- room for almost nothing
    serve("u")
    publish.publishTick(true)
    assert.is_true(mdict:get("mx:dropped") > 0)
    local warned = 0
    for _, l in ipairs(ngx._logs) do if l.msg:find("is full: counts are dropped", 1, true) then warned = warned + 1 end end
    assert.equal(1, warned)
    assert.is_truthy(ngx.shared.dyups:get("u:u"))
    update("v", "server 127.0.0.1:8002;") -- configuration writes are not affected
  end)

  it("metrics = false: nothing is counted", function()
    local options = require("dyups.options")
    options.setOptions(assert(options.validateOptions({ metrics = false })))
    require("dyups.metrics.hooks").startCounting()
    update("u", "server 127.0.0.1:8001;")
    serve("u")
    publish.publishTick(true)
    assert.same({}, keys_of("u"))
  end)

  it("writes are counted by result", function()
    update("u", "server 127.0.0.1:8001;")
    assert.is_nil(pipeline.update("u", "server bogus=1;"))
    assert.is_nil(pipeline.remove("nope"))
    assert.equal(1, mdict:get("mw:200"))
    assert.equal(1, mdict:get("mw:400"))
    assert.equal(1, mdict:get("mw:404"))
  end)

  it("GET /stats: a drained peer is \"drained\" and not up; an address listed drained and down is down", function()
    update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002 drain; server 127.0.0.1:8003 down; " ..
      "server 127.0.0.1:8004 drain; server 127.0.0.1:8004 down; server 127.0.0.1:8005 down; server 127.0.0.1:8005 down;")
    local doc = require("dyups.metrics.stats").statsReport(nil, 0, 100, "write")
    local u = doc.upstreams[1]
    local got = {}
    for i, p in ipairs(u.peers) do got[i] = { p.addr, p.state, p.drain, p.down, p.up } end
    assert.same({
      { "127.0.0.1:8001", "up", false, false, true },
      { "127.0.0.1:8002", "drained", true, false, false },
      { "127.0.0.1:8003", "down", false, true, false },
      { "127.0.0.1:8004", "drained", true, false, false }, -- out, but not every entry is down
      { "127.0.0.1:8005", "down", false, true, false },
    }, got)
    assert.equal(1, u.peers_up)
    assert.equal("write", doc.role)
  end)

  it("DNS results are named by kind", function()
    local hooks = require("dyups.metrics.hooks")
    assert.equal("ok", hooks.dnsResult(nil))
    assert.equal("nxdomain", hooks.dnsResult("nxdomain"))
    assert.equal("no_addresses", hooks.dnsResult("no addresses"))
    assert.equal("timeout", hooks.dnsResult("failed to receive reply from UDP server 127.0.0.1:53: timeout"))
    assert.equal("refused", hooks.dnsResult("connection refused"))
    assert.equal("servfail", hooks.dnsResult("dns error 2: server failure"))
    assert.equal("error", hooks.dnsResult("no DNS client (resty.dns.resolver) installed"))
  end)
end)

describe("response-time buckets", function()
  it("bucketOf is the first bucket whose bound holds dt (the loop it replaces), at and around every bound", function()
    fake.unload()
    fake.install()
    local c = require("dyups.metrics.counters")
    local function byLoop(dt)
      local b = 1
      while b < c.BUCKETS and dt > c.BOUNDS[b] do b = b + 1 end
      return b
    end
    local values = { 0, -1, 1e-9, 100, 1e9 }
    for _, bound in ipairs(c.BOUNDS) do
      for _, d in ipairs({ -1e-6, 0, 1e-6 }) do values[#values + 1] = bound + d end
    end
    for i = 1, 2000 do values[#values + 1] = math.random() * 12 end
    for _, dt in ipairs(values) do assert.equal(byLoop(dt), c.bucketOf(dt), tostring(dt)) end
  end)
end)
