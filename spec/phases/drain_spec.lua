-- Drain through the phase entry points (fake ngx, fake ngx.balancer): a drained server gets no new request,
-- with every method; a request that picked it before the drain keeps its version and its connection count
-- until its log phase; every upstream counts connections (k:<peer>), so the count of a server drained while
-- busy is right from the start.
local fake = require("spec.helpers.fake_ngx")

local ngx, b, phases, pipeline

local function request(upstream)
  ngx.ctx = {}
  ngx.var.dyups_upstream = upstream
  ngx.status = 200
  ngx.var.upstream_header_time = nil
  b.calls = {}
  b.more_tries = nil
  b.failure = nil
end

local function peer()
  local c = b.calls[#b.calls]
  return c and (c.host .. ":" .. c.port)
end

local function update(name, body)
  local v, err, status = pipeline.update(name, body)
  assert(v, tostring(status) .. " " .. tostring(err))
end

describe("drain", function()
  before_each(function()
    fake.unload()
    ngx = fake.install()
    local options = require("dyups.options")
    options.setOptions(assert(options.validateOptions(nil)))
    require("dyups.store.dict").resetDict()
    b = fake.fake_balancer()
    phases = require("dyups.phases.balancer")
    pipeline = require("dyups.pipeline")
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

  it("requests in flight keep their version and their count until their log phase; new ones go elsewhere", function()
    update("d", "server 127.0.0.1:8001; server 127.0.0.1:8002;")
    local held = {}
    for _ = 1, 4 do
      request("d")
      phases.balance()
      held[#held + 1] = { ctx = ngx.ctx, peer = peer() }
    end
    -- round robin, no max_conns: still counted
    assert.equal(2, ngx.shared.dyups:get("k:127.0.0.1:8001"))
    assert.equal(2, ngx.shared.dyups:get("k:127.0.0.1:8002"))
    update("d", "server 127.0.0.1:8001 drain; server 127.0.0.1:8002;")
    for _ = 1, 6 do
      request("d")
      phases.balance()
      assert.equal("127.0.0.1:8002", peer())
      phases.logPhase()
    end
    assert.equal(2, ngx.shared.dyups:get("k:127.0.0.1:8001"), "the drained server's requests are still in flight")
    local conns = require("dyups.store.peer_health")
    assert.equal(2, conns.activeConnections("127.0.0.1:8001"))
    for _, h in ipairs(held) do
      ngx.ctx = h.ctx
      phases.logPhase()
    end
    assert.equal(0, conns.activeConnections("127.0.0.1:8001"))
    assert.is_nil(ngx.shared.dyups:get("k:127.0.0.1:8001"))
  end)
end)
