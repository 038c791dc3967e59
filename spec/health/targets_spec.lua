-- What the prober probes (dyups.health.targets): one target per address + check configuration, counted by
-- reference across upstreams; a replace keeps the objects of the peers it still lists; servers marked down
-- are not checked; and the schedule heap (dyups.health.heap) pops in due order.
local fake = require("spec.helpers.fake_ngx")

describe("health targets", function()
  local targets, api
  before_each(function()
    fake.unload()
    local ngx = fake.install()
    ngx.md5 = function(s) return string.format("%08x%08x", ngx.crc32_short(s), ngx.crc32_short(s .. "#")) end
    fake.another_worker(ngx)
    targets = require("dyups.health.targets")
    api = require("dyups.pipeline")
  end)
  local function rec(name, body) return assert(api.prepare(name, body, "api")) end
  local function ids(list) local out = {}; for _, t in ipairs(list) do out[#out + 1] = t.addr end; table.sort(out); return out end

  it("shares one target between upstreams with the same address and configuration", function()
    local ts = targets.newTargetSet()
    local added = targets.applyRecord(ts, "a", rec("a", "server 127.0.0.1:1; server 127.0.0.1:2 down; server 127.0.0.1:3 backup; check type=tcp;"))
    assert.same({ "127.0.0.1:1", "127.0.0.1:3" }, ids(added))
    added = targets.applyRecord(ts, "b", rec("b", "server 127.0.0.1:1; check type=tcp;"))
    assert.same({}, added)
    added = targets.applyRecord(ts, "c", rec("c", "server 127.0.0.1:1; check type=http;"))
    assert.equal(1, #added) -- another configuration: another state
    assert.equal(3, ts.count)
    local _, removed = targets.applyRecord(ts, "a", nil)
    assert.same({ "127.0.0.1:3" }, ids(removed))
    _, removed = targets.applyRecord(ts, "b", nil)
    assert.same({ "127.0.0.1:1" }, ids(removed))
    assert.is_true(removed[1].removed)
    assert.equal(1, ts.count)
  end)

  it("a replace keeps the target objects of the peers it still lists", function()
    local ts = targets.newTargetSet()
    local added = targets.applyRecord(ts, "a", rec("a", "server 127.0.0.1:1; check type=tcp port=9;"))
    local t1 = added[1]
    assert.equal(9, t1.port)
    local added2, removed = targets.applyRecord(ts, "a", rec("a", "server 127.0.0.1:1; server 127.0.0.1:2; check type=tcp port=9;"))
    assert.same({ "127.0.0.1:2" }, ids(added2))
    assert.same({}, removed)
    assert.equal(t1, ts.byId[t1.id])
    assert.is_false(t1.removed)
    -- a changed configuration is another state: the old one goes, a new one comes
    added2, removed = targets.applyRecord(ts, "a", rec("a", "server 127.0.0.1:1; check type=tcp port=9 rise=3;"))
    assert.same({ "127.0.0.1:1" }, ids(added2))
    assert.same({ "127.0.0.1:1", "127.0.0.1:2" }, ids(removed))
    -- no check any more: everything goes
    added2, removed = targets.applyRecord(ts, "a", rec("a", "server 127.0.0.1:1;"))
    assert.same({}, added2)
    assert.equal(1, #removed)
    assert.equal(0, ts.count)
  end)

  it("probes IPv6 peers by their bracketed address, unix sockets by path", function()
    local ts = targets.newTargetSet()
    local added = targets.applyRecord(ts, "v6", rec("v6", "server [::1]:8080; server unix:/tmp/x.sock; check type=tcp;"))
    assert.same({ "[::1]", 8080, "[::1]:8080" }, { added[1].host, added[1].port, added[1].addr })
    assert.same({ "unix:/tmp/x.sock", 0 }, { added[2].host, added[2].port })
  end)

  it("the heap pops targets in due order", function()
    local heap = require("dyups.health.heap")
    local h = heap.newHeap()
    local dues = { 5, 1, 9, 3, 3, 7, 2, 8, 6, 4 }
    for _, d in ipairs(dues) do heap.heapPush(h, { due = d }) end
    local out = {}
    while heap.heapTop(h) do out[#out + 1] = heap.heapPop(h).due end
    assert.same({ 1, 2, 3, 3, 4, 5, 6, 7, 8, 9 }, out)
    assert.is_nil(heap.heapPop(h))
  end)
end)

describe("active health in the balancer's cache", function()
  it("skips a checked-down peer after the generation moves, with no shm read per request in the steady state", function()
    fake.unload()
    local ngx = fake.install()
    local dict = ngx.shared.dyups
    local get, gets = dict.get, 0
    dict.get = function(self, k) gets = gets + 1; return get(self, k) end
    fake.another_worker(ngx)
    local api = require("dyups.pipeline")
    local reg = require("dyups.registry.build")
    local ps = require("dyups.store.peer_health")
    local store = require("dyups.store.health")
    local state = require("dyups.health.state")
    local set = reg.buildVersion(assert(api.prepare("u", "server 127.0.0.1:1; server 127.0.0.1:2; check type=tcp default_down=false;", "api"))).peers
    ps.healthSync()
    assert.is_true(ps.peerState.available(set, 1)) -- not stored yet: default_down=false
    local id = set.hcKeys[1]:sub(#"hc:d:" + 1)
    local st = state.newState(false, ngx.now())
    state.countProbe(st, false, "refused", 2, 1, ngx.now())
    assert(store.writeState(id, st, true, false, 1000, 1000))
    assert.is_true(ps.peerState.available(set, 1)) -- cached until the generation moves
    ps.healthSync()
    assert.is_false(ps.peerState.available(set, 1))
    assert.is_true(ps.peerState.available(set, 2))
    gets = 0
    for _ = 1, 10 do ps.healthSync(); ps.peerState.available(set, 1); ps.peerState.available(set, 2) end
    assert.equal(10, gets) -- the generation only
    -- a lone checked server is taken out too (unlike passive failures), and default_down=true counts as down
    local one = reg.buildVersion(assert(api.prepare("v", "server 127.0.0.1:7; check type=tcp;", "api"))).peers
    assert.is_false(ps.peerState.available(one, 1))
  end)
end)

describe("health capacity", function()
  it("refuses (507, nothing changed) a body whose checked peers' states cannot fit in the dict", function()
    fake.unload()
    local ngx = fake.install()
    ngx.md5 = function(s) return string.format("%08x%08x", ngx.crc32_short(s), ngx.crc32_short(s .. "#")) end
    fake.another_worker(ngx)
    local api = require("dyups.pipeline") -- version, or nil, reason, status
    local servers = {}
    for i = 1, 200 do servers[#servers + 1] = "server 127.0.0.1:" .. i .. ";" end
    ngx.shared.dyups.limit = 60000
    ngx.shared.dyups.cap = 64 * 1024 * 1024 -- the configuration budget (store/budget.ts) far above it: this is the health guard
    local v, msg, status = api.update("many", table.concat(servers, " ") .. " check type=tcp;")
    assert.is_nil(v)
    assert.equal(507, status)
    assert.matches("cannot hold the health state of 200 more checked peers", msg, 1, true)
    assert.is_nil(api.get("many"))
    -- the same servers without check fit
    assert.is_number((api.update("many", table.concat(servers, " "))))
  end)
end)
