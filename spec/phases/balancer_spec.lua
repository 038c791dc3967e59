-- The phase entry points (dyups.phases.balancer: balance() in balancer_by_lua, logPhase() in log_by_lua)
-- under the fake ngx and a fake ngx.balancer, in the style of ingress-nginx's balancer_test.lua: what a
-- request's first try, its retries and its log phase do to the peer nginx is given, the tries it is
-- allowed, the version it pins, and the shared peer state.
local fake = require("spec.helpers.fake_ngx")
local P = require("spec.helpers.phases")

local ngx, b, phases, reg, pipeline

local current

local function request(upstream) current = P.request(upstream) end
local peer, update = P.peer, P.update

describe("balancer phase entry points", function()
  before_each(function()
    ngx, b = P.load()
    phases = require("dyups.phases.balancer")
    reg = require("dyups.registry.sync")
    pipeline = require("dyups.pipeline")
  end)

  it("first try: sets a peer of the named upstream, asks for one try per peer, pins the version", function()
    update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002; server 127.0.0.1:8003;")
    request("u")
    phases.balance()
    assert.equal(1, #b.calls)
    assert.matches("^127%.0%.0%.1:800[123]$", peer())
    assert.equal(3, b.more_tries)
    local ver = reg.lookup("u")
    assert.equal(1, ver.refs)
    assert.equal(1, require("dyups.phases.request_slot").slotsInUse()) -- the pin is held in the request's slot
    phases.logPhase()
    assert.equal(0, ver.refs)
    assert.equal(0, require("dyups.phases.request_slot").slotsInUse())
  end)

  it("tries follow nginx: one per server that is not down (backups included)", function()
    update("t", "server 127.0.0.1:8001; server 127.0.0.1:8002 down;")
    request("t")
    phases.balance()
    assert.is_nil(b.more_tries) -- one try: nginx answers A's status, never 502 from a second try
    phases.logPhase()
    update("t3", "server 127.0.0.1:8001; server 127.0.0.1:8002 down; server 127.0.0.1:8003; server 127.0.0.1:8004 backup;")
    request("t3")
    phases.balance()
    assert.equal(3, b.more_tries)
    phases.logPhase()
  end)

  it("per-upstream keepalive uses balancer.enable_keepalive where the runtime has it", function()
    local calls = {}
    b.enable_keepalive = function(timeout, requests) calls[#calls + 1] = { timeout, requests }; return true end
    fake.unload()
    _G.ngx = ngx
    local options = require("dyups.options")
    options.setOptions(assert(options.validateOptions(nil)))
    package.loaded["ngx.balancer"] = b
    phases = require("dyups.phases.balancer")
    reg = require("dyups.registry.sync")
    pipeline = require("dyups.pipeline")
    update("ka", "server 127.0.0.1:8001; keepalive 16; keepalive_timeout 30s; keepalive_requests 500;")
    update("noka", "server 127.0.0.1:8001;")
    request("ka")
    phases.balance()
    phases.logPhase()
    request("noka")
    phases.balance()
    phases.logPhase()
    assert.same({ { 30, 500 } }, calls)
  end)

  it("a lone server: no extra tries are asked for", function()
    update("one", "server 127.0.0.1:8001;")
    request("one")
    phases.balance()
    assert.equal("127.0.0.1:8001", peer())
    assert.is_nil(b.more_tries)
    phases.logPhase()
  end)

  it("the upstream name is looked up case-insensitively", function()
    update("mixed", "server 127.0.0.1:8001;")
    request("MiXeD")
    phases.balance()
    assert.equal("127.0.0.1:8001", peer())
    phases.logPhase()
  end)

  it("a retry after a failure reports it and moves to an untried peer of the same version", function()
    update("u", "server 127.0.0.1:8001 max_fails=2; server 127.0.0.1:8002 max_fails=2;")
    request("u")
    phases.balance()
    local first = peer()
    b.failure = "failed"
    phases.balance() -- nginx calls the balancer again for the next try
    assert.equal(2, #b.calls)
    assert.are_not.equal(first, peer(2))
    -- the failure was counted in shared memory for that server entry of "u"
    assert.equal(1, ngx.shared.dyups:get("f:u/" .. first .. "#1"))
    phases.logPhase()
    assert.equal(0, reg.lookup("u").refs)
  end)

  it("unix sockets are set without a port", function()
    update("sock", "server unix:/tmp/dyups-spec.sock;")
    request("sock")
    phases.balance()
    assert.equal("unix:/tmp/dyups-spec.sock", b.calls[1].host)
    assert.is_nil(b.calls[1].port)
    phases.logPhase()
  end)

  it("a version replaced while a request holds it is retired, and unlinked by its last holder", function()
    update("u", "server 127.0.0.1:8001;")
    request("u")
    phases.balance()
    local held = current
    local old = reg.lookup("u")
    update("u", "server 127.0.0.1:8009;") -- the write catches this worker up: `old` is retired
    assert.is_true(old.retired)
    assert.equal(1, reg.stats().retired)
    -- a new request routes by the new version meanwhile
    request("u")
    phases.balance()
    assert.equal("127.0.0.1:8009", peer())
    phases.logPhase()
    -- the first request ends: its log phase releases the retired version
    ngx._use_request(held)
    phases.logPhase()
    assert.equal(0, old.refs)
    assert.equal(0, reg.stats().retired)
  end)

  it("a deleted upstream's held version is released the same way", function()
    update("gone", "server 127.0.0.1:8001;")
    request("gone")
    phases.balance()
    local held = current
    assert.is_truthy(pipeline.remove("gone"))
    assert.equal(1, reg.stats().retired)
    request("gone")
    phases.balance()
    assert.equal(0, #b.calls) -- unknown now: no peer set, nginx answers 502 from the placeholder
    ngx._use_request(held)
    phases.logPhase()
    assert.equal(0, reg.stats().retired)
  end)

  it("an unknown upstream sets no peer and pins nothing", function()
    request("nope")
    phases.balance()
    assert.equal(0, #b.calls)
    assert.equal(0, require("dyups.phases.request_slot").slotsInUse())
    phases.logPhase() -- nothing to release
  end)

  it("an empty $dyups_upstream is logged as a configuration error", function()
    request("")
    phases.balance()
    assert.equal(0, #b.calls)
    local found = false
    for _, l in ipairs(ngx._logs) do if l.msg:find("$dyups_upstream is empty", 1, true) then found = true end end
    assert.is_true(found)
  end)

  it("no live peer: sets nothing (nginx's 502), logs it, and still releases the pin", function()
    update("dead", "server 127.0.0.1:8001 down; server 127.0.0.1:8002 down;")
    request("dead")
    phases.balance()
    assert.equal(0, #b.calls)
    local ver = reg.lookup("dead")
    assert.equal(1, ver.refs)
    phases.logPhase()
    assert.equal(0, ver.refs)
  end)

  it("least_conn counts the connection at the pick and closes it in the log phase", function()
    update("lc", "least_conn; server 127.0.0.1:8001; server 127.0.0.1:8002;")
    request("lc")
    phases.balance()
    local p = peer()
    assert.equal(1, ngx.shared.dyups:get("k:lc/" .. p .. "#1"))
    phases.logPhase()
    assert.is_nil(ngx.shared.dyups:get("k:lc/" .. p .. "#1"))
  end)

  it("the log phase counts a connection-level failure of the last try; a success clears it after fail_timeout", function()
    update("u", "server 127.0.0.1:8001 max_fails=3 fail_timeout=10; server 127.0.0.1:8002 max_fails=3 fail_timeout=10;")
    request("u")
    phases.balance()
    local p = peer()
    local key = "f:u/" .. p .. "#1"
    ngx.status = 502
    ngx.var.upstream_header_time = "-"
    phases.logPhase()
    assert.equal(1, ngx.shared.dyups:get(key))
    -- successes right after the failure do not reset the count (nginx: accessed == checked)
    for _ = 1, 4 do
      request("u")
      phases.balance()
      phases.logPhase()
    end
    assert.equal(1, ngx.shared.dyups:get(key))
    -- after fail_timeout, the next pick of that peer moves `checked`, and its success resets the count
    ngx._advance(11)
    for _ = 1, 4 do
      request("u")
      phases.balance()
      phases.logPhase()
    end
    assert.is_nil(ngx.shared.dyups:get(key))
  end)

  it("the benchmark entry point lives outside the hot module and skips only the version gate", function()
    update("u", "server 127.0.0.1:8001;")
    local ungated = require("dyups.bench.ungated")
    request("u")
    ungated.balance()
    assert.equal("127.0.0.1:8001", peer())
    phases.logPhase()
    assert.is_nil(phases.balanceUngated)
  end)

  describe("per-request slots (no ngx.ctx)", function()
    local slots
    before_each(function() slots = require("dyups.phases.request_slot") end)

    it("a request that never reaches the balancer leaves nothing behind", function()
      for _ = 1, 10000 do
        request("u")
        phases.logPhase()
      end
      assert.equal(0, slots.slotsInUse())
    end)

    it("slots are reused: many sequential requests hold at most one", function()
      update("u", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
      for _ = 1, 5000 do
        request("u")
        phases.balance()
        phases.logPhase()
      end
      assert.equal(0, slots.slotsInUse())
      assert.equal(0, reg.lookup("u").refs)
    end)

    it("a slot left behind (no log phase ran) is released by the next request at the same address", function()
      update("u", "server 127.0.0.1:8001 max_fails=1; server 127.0.0.1:8002 max_fails=1;")
      request("u")
      phases.balance() -- e.g. a subrequest: nginx never runs its log phase
      local abandoned = current
      local ver = reg.lookup("u")
      assert.equal(1, ver.refs)
      -- a later request reuses that address: its first try finds the slot and releases it as stale
      ngx._advance(1)
      ngx._use_request({ ptr = abandoned.ptr, start = ngx.now() })
      b.calls = {}
      b.failure = nil
      phases.balance()
      assert.equal(1, #b.calls)
      assert.equal(1, ver.refs) -- the stale pin was released, this request's pin taken
      phases.logPhase()
      assert.equal(0, ver.refs)
      assert.equal(0, slots.slotsInUse())
    end)

    it("a log phase that finds an earlier request's slot releases it without reporting an outcome", function()
      update("u", "server 127.0.0.1:8001 max_fails=1; server 127.0.0.1:8002 max_fails=1;")
      request("u")
      phases.balance()
      local abandoned = current
      local p = peer()
      ngx._advance(1)
      ngx._use_request({ ptr = abandoned.ptr, start = ngx.now() }) -- another request, no dyups balancer
      ngx.status = 502
      ngx.var.upstream_header_time = "-"
      phases.logPhase()
      assert.equal(0, reg.lookup("u").refs)
      assert.equal(0, slots.slotsInUse())
      assert.is_nil(ngx.shared.dyups:get("f:u/" .. p .. "#1")) -- not this request's outcome to report
    end)
  end)
end)
