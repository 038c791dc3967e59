-- Drain through the phase entry points (fake ngx, fake ngx.balancer): a drained server gets no new request,
-- with every method; a request that picked it before the drain keeps its version until its log phase; an
-- upstream with a drained server counts connections per server entry (k:<upstream>/<peer>#n). (The JSON API's
-- `active` comes from the traffic counters, which count every request: test/integration/api.test.mjs.)
local P = require("spec.helpers.phases")

local ngx, b, phases

local request, peer, update = P.request, P.peer, P.update

describe("drain", function()
  before_each(function()
    ngx, b = P.load()
    phases = require("dyups.phases.balancer")
  end)

  it("a drained server is never picked, with every method", function()
    for _, method in ipairs({ "", "least_conn;", "ip_hash;", "hash $arg_k;", "hash $arg_k consistent;", "random;", "random two;" }) do
      update("d", method .. " server 127.0.0.1:8001 drain; server 127.0.0.1:8002; server 127.0.0.1:8003 weight=5 drain;")
      for i = 1, 50 do
        request("d")
        ngx.var.remote_addr = "10.0.0." .. i
        ngx.var.arg_k = tostring(i)
        phases.balance()
        assert.equal("127.0.0.1:8002", peer(), method)
        phases.logPhase()
      end
    end
  end)

  it("an upstream whose servers are all drained answers like one whose servers are all down (no peer: 502)", function()
    update("all", "server 127.0.0.1:8001 drain;")
    request("all")
    phases.balance()
    assert.equal(0, #b.calls)
    phases.logPhase()
  end)

  it("requests in flight keep their version until their log phase; new ones go elsewhere; drained entries count", function()
    update("d", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
    local reg = require("dyups.registry.sync")
    local old = reg.lookup("d")
    local held = {}
    for _ = 1, 4 do
      request("d")
      phases.balance()
      held[#held + 1] = { req = { ptr = ngx._req, start = ngx._req_start }, peer = peer() }
    end
    assert.equal(4, old.refs)
    update("d", "server 127.0.0.1:8001 drain; server 127.0.0.1:8002;")
    assert.is_true(old.retired)
    local conns = require("dyups.store.peer_health")
    local kept = {}
    for i = 1, 6 do
      request("d")
      phases.balance()
      assert.equal("127.0.0.1:8002", peer())
      if i <= 2 then kept[#kept + 1] = { ptr = ngx._req, start = ngx._req_start } else phases.logPhase() end
    end
    -- the drained upstream counts its entries' connections: the 2 requests still open on 8002
    assert.equal(2, conns.activeConnections("d", "127.0.0.1:8002", 1))
    assert.equal(0, conns.activeConnections("d", "127.0.0.1:8001", 1))
    for _, r in ipairs(kept) do ngx._use_request(r); phases.logPhase() end
    assert.equal(0, conns.activeConnections("d", "127.0.0.1:8002", 1))
    -- the requests that picked 8001 before the drain finish on their old version, which is then released
    for _, h in ipairs(held) do
      ngx._use_request(h.req)
      phases.logPhase()
    end
    assert.equal(0, old.refs)
    assert.equal(0, reg.stats().retired)
  end)
end)
