-- The store at its edges (issue 12), on the fake dict that frees a value before it reallocates it and evicts
-- for set/add/incr-with-init like nginx's: a refused write changes nothing, a full dict can always be emptied,
-- the budget refuses first, the counters the writers keep equal a full scan, nothing ever evicts configuration,
-- and /status lists no keys.
local fake = require("spec.helpers.fake_ngx")

local function fresh(opts)
  fake.unload()
  local ngx = fake.install(opts)
  local options = require("dyups.options")
  options.setOptions(assert(options.validateOptions(opts and opts.options or nil)))
  require("dyups.store.dict").resetDict()
  return ngx
end

local function record(name, body)
  local rec, err = require("dyups.pipeline").prepare(name, body, "api")
  assert(rec, err)
  return rec
end

local pad = function(n) return "# " .. string.rep("p", n) .. "\n" end

--- fills the rest of the dict with filler keys until not one more fits
local function fill(dict)
  local i = 0
  for _, size in ipairs({ 4000, 400, 40, 0 }) do
    while true do
      i = i + 1
      local ok = dict:safe_set("zz:" .. i, size > 0 and string.rep("x", size) or i)
      if not ok then break end
    end
  end
end

local function agree(ngx, log)
  local dict = ngx.shared.dyups
  local t = log.scan(dict)
  assert.equal(t.upstreams, dict:get("n"))
  assert.equal(t.digest, log.storedDigest())
  assert.equal(t.bytes, log.configBytes())
end

describe("a full dict", function()
  local ngx, log, dict
  before_each(function()
    ngx = fresh()
    log = require("dyups.store.command_log")
    log.prepareStore()
    dict = ngx.shared.dyups
    dict.cap = 64 * 1024 * 1024 -- a budget far above the memory: the dict itself is what fills
    dict.limit = dict:used() + 60000
    for i = 1, 8 do assert(log.commit("u" .. i, record("u" .. i, pad(2000) .. "server 127.0.0.1:" .. i .. ";"))) end
    fill(dict)
  end)

  it("refuses a growing replace (507) and leaves the old record, the log, the counters and other workers as they were", function()
    local v0 = log.currentVersion()
    local before = log.readRaw("u3")
    local reg0 = (function() fake.another_worker(ngx); local r = require("dyups.registry.sync"); r.sync(); return r end)()
    local d0 = reg0.stats().digest
    fake.unload(); _G.ngx = ngx
    log = require("dyups.store.command_log")
    local v, msg, status = log.commit("u3", record("u3", pad(6000) .. "server 127.0.0.1:99;"))
    assert.is_nil(v); assert.equal(507, status); assert.matches('shared dict "dyups" is full', msg)
    assert.equal(before, log.readRaw("u3"))
    assert.equal(v0, log.currentVersion())
    assert.is_nil(dict:get("c:" .. (v0 + 1)))
    assert.equal(d0, log.storedDigest())
    agree(ngx, log)
    assert.same({}, dict.evicted)
  end)

  it("always deletes (the lease from the reserve, no log entry needed) and frees memory; the reserve comes back", function()
    local free0 = dict:free_space()
    assert.is_false((dict:safe_add("probe", 1)))
    for i = 1, 8 do
      local v, msg = log.commit("u" .. i, nil)
      assert.is_number(v, msg)
      assert.is_nil(log.readRecord("u" .. i))
    end
    assert.is_true(dict:free_space() > free0 + 8 * 2000)
    assert.equal(0, dict:get("n"))
    assert.equal(require("dyups.store.keys").RESERVE_KEYS, log.reserveLeft())
    agree(ngx, log)
    assert.same({}, dict.evicted)
    -- a worker that missed the entries catches up (from the journal, or by a rebuild) with equal digests
    fake.another_worker(ngx)
    local reg = require("dyups.registry.sync")
    reg.sync()
    assert.equal(0, reg.stats().upstreams)
    assert.equal(require("dyups.status").stateDigest(), reg.stats().digest)
  end)

  it("takes a shrinking write in place when the new record does not fit beside the old one", function()
    local v, msg = log.commit("u2", record("u2", pad(1500) .. "server 127.0.0.1:77;"))
    assert.is_number(v, msg)
    local rec = log.readRecord("u2")
    assert.equal(v, rec.rev)
    assert.equal(77, rec.spec.servers[1].port)
    assert.is_not_nil(dict:get("r:u2@2"), "the old slot holds the new record")
    agree(ngx, log)
    fake.another_worker(ngx)
    local reg = require("dyups.registry.sync")
    reg.sync()
    assert.equal(77, reg.lookup("u2").peers.ports[1])
    assert.equal(require("dyups.status").stateDigest(), reg.stats().digest)
  end)
end)

describe("the budget", function()
  it("refuses a write past it (507) before anything is touched; deletes and shrinking writes are not limited", function()
    local ngx = fresh()
    local log = require("dyups.store.command_log")
    local dict = ngx.shared.dyups
    dict.cap = 200 * 1024 -- budget = 200 KB - 64 KB reserve
    local v, msg, status
    local n = 0
    repeat
      n = n + 1
      v, msg, status = log.commit("b" .. n, record("b" .. n, pad(3000) .. "server 127.0.0.1:1;"))
    until v == nil
    assert.equal(507, status)
    assert.matches("is full: this upstream needs %d+ bytes of the configuration budget, %d+ of %d+ are left; nothing was changed", msg)
    local j = dict:get("j")
    local ver = log.currentVersion()
    -- nothing touched: no journal entry, no version, no log entry
    assert.equal(j, dict:get("j"))
    assert.equal(ver, log.currentVersion())
    assert.is_true(log.configBytes() <= require("dyups.store.budget").budgetBytes())
    assert.is_number((log.commit("b1", record("b1", pad(100) .. "server 127.0.0.1:2;"))))
    assert.is_number((log.commit("b2", nil)))
    agree(ngx, log)
  end)

  it("sets the default max_upstreams to what the dict holds (about 23 500 for 32 MB, history on)", function()
    local ngx = fresh()
    local budget = require("dyups.store.budget")
    ngx.shared.dyups.cap = 32 * 1024 * 1024
    assert.is_true(budget.upstreamsThatFit() > 23300 and budget.upstreamsThatFit() < 23700)
    -- and a one-server record costs what ONE_SERVER_BYTES says
    local rec = record("a-name-of-16-chr", "server 127.0.0.1:8080;")
    rec.rev, rec.created = 123456, 123456
    local enc = require("cjson.safe").encode(rec)
    assert.is_true(budget.nodeBytes(#"r:a-name-of-16-chr@123456", #enc) + budget.nodeBytes(#"u:a-name-of-16-chr", 8) <= budget.ONE_SERVER_BYTES)
  end)
end)

describe("counters kept by the writers", function()
  it("equal a full scan after any mix of creates, replaces, deletes and refusals", function()
    local ngx = fresh({ options = { max_upstreams = 30 } })
    local log = require("dyups.store.command_log")
    log.prepareStore()
    math.randomseed(7)
    for i = 1, 400 do
      local name = "r" .. math.random(1, 40)
      if math.random() < 0.3 then
        log.commit(name, nil)
      else
        log.commit(name, record(name, pad(math.random(1, 3000)) .. "server 127.0.0.1:" .. i .. ";"))
      end
      if i % 50 == 0 then agree(ngx, log) end
    end
    agree(ngx, log)
  end)
end)

describe("nothing evicts configuration", function()
  it("peer health, connection counts, heartbeats and leases fail quietly in a full dict", function()
    local ngx = fresh()
    local log = require("dyups.store.command_log")
    log.prepareStore()
    local dict = ngx.shared.dyups
    dict.cap = 64 * 1024 * 1024
    dict.limit = dict:used() + 20000
    for i = 1, 4 do assert(log.commit("h" .. i, record("h" .. i, "server 127.0.0.1:1 max_fails=1; server 127.0.0.1:2; least_conn;"))) end
    fill(dict)
    local reg = require("dyups.registry.sync")
    reg.sync()
    local ver = reg.lookup("h1")
    local health = require("dyups.store.peer_health")
    health.connOpen(ver.peers, 1)
    health.reportFailure(ver.peers, 1)
    health.connClose(ver.peers, 1)
    require("dyups.store.workers").publishHeartbeat(3, { pid = 1, applied = 1, at = 1, digest = 1, retired = 0, luaKb = 1 })
    require("dyups.store.lease").claim("some_job", 5)
    assert.same({}, dict.evicted)
    for i = 1, 4 do assert.is_not_nil(log.readRecord("h" .. i)) end
  end)
end)

describe("GET /status", function()
  it("reads counters and heartbeats only: no listing of the dict's keys, whatever the number of upstreams", function()
    local ngx = fresh()
    local log = require("dyups.store.command_log")
    for i = 1, 50 do log.commit("s" .. i, record("s" .. i, "server 127.0.0.1:1;")) end
    local dict = ngx.shared.dyups
    local calls = dict.get_keys_calls
    local s = require("dyups.status").statusReport()
    assert.equal(calls, dict.get_keys_calls)
    assert.equal(50, s.upstreams)
    assert.equal(log.scan(dict).digest, s.digest)
  end)
end)

describe("the creation order (registry/order)", function()
  it("appends, inserts out of order, leaves tombstones it compacts, and resumes after a deleted name", function()
    fake.unload()
    fake.install()
    local order = require("dyups.registry.order")
    for i = 1, 100 do order.place("n" .. i, i) end
    order.place("late", 50) -- applied out of order
    assert.equal(101, order.count())
    local all = order.all()
    assert.equal("late", all[51])
    assert.equal("n50", all[50])
    order.forget("n51")
    local p = order.positionAfter("n51")
    assert.equal("n52", (order.nextAfter(p)))
    for i = 1, 80 do order.forget("n" .. i) end -- compaction
    assert.equal(21, order.count())
    assert.equal("late", order.all()[1])
    assert.equal("n81", order.all()[2])
    local created = { a = 3, b = 1, c = 2 }
    order.rebuild(created)
    assert.same({ "b", "c", "a" }, order.all())
  end)
end)
