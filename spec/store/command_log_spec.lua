-- The command log and the per-worker registry on a fake shared dict (no nginx): versions, compaction,
-- conditional writes, limits, a full dict refused atomically, and catch-up by a second "worker".
local fake = require("spec.helpers.fake_ngx")

local function fresh(opts)
  fake.unload()
  local ngx = fake.install(opts)
  local options = require("dyups.options")
  local o = assert(options.validateOptions(opts and opts.options or nil))
  options.setOptions(o)
  require("dyups.store.dict").resetDict()
  return ngx
end

local function record(name, body)
  local api = require("dyups.pipeline")
  local rec, err = api.prepare(name, body, "api")
  assert(rec, err)
  return rec
end

describe("command log", function()
  local log, keys
  before_each(function()
    fresh()
    log = require("dyups.store.command_log")
    keys = require("dyups.store.keys")
  end)

  it("gives every write the next version and keeps the full record", function()
    assert.equal(1, (log.commit("a", record("a", "server 127.0.0.1:1;"))))
    assert.equal(2, (log.commit("b", record("b", "server 127.0.0.1:2;"))))
    assert.equal(3, (log.commit("a", record("a", "server 127.0.0.1:3;"))))
    assert.equal(3, log.currentVersion())
    assert.equal("server 127.0.0.1:3;", log.readRecord("a").body)
    assert.equal(3, log.readRecord("a").rev)
    assert.same({ "a", "b", "a" }, log.changedSince(0, 3))
    assert.same({ "a", "b" }, log.namesInOrder())
  end)

  it("returns the revision an upstream had before each write (0: new), for the audit line", function()
    local v, _, _, before = log.commit("a", record("a", "server 127.0.0.1:1;"))
    assert.equal(1, v); assert.equal(0, before)
    log.commit("b", record("b", "server 127.0.0.1:2;"))
    v, _, _, before = log.commit("a", record("a", "server 127.0.0.1:3;"))
    assert.equal(3, v); assert.equal(1, before)
    v, _, _, before = log.commit("a", nil)
    assert.equal(4, v); assert.equal(3, before)
    local rec = record("b", 'server 127.0.0.1:2; # "rev":99')
    v, _, _, before = log.commit("b", rec, 2)
    assert.equal(5, v); assert.equal(2, before)
    assert.equal(5, log.readRecord("b").rev)
  end)

  it("lists the display spelling of each name on request, keys stay lowercase", function()
    local rec = record("casehost", "server 127.0.0.1:1;")
    rec.display = "CaseHost"
    log.commit("casehost", rec)
    log.commit("b", record("b", 'server 127.0.0.1:1; # "display":"Evil"'))
    assert.same({ "casehost", "b" }, log.namesInOrder())
    assert.same({ "CaseHost", "b" }, log.namesInOrder(true))
    log.commit("casehost", record("casehost", "server 127.0.0.1:2;"))
    assert.same({ "casehost", "b" }, log.namesInOrder(true))
  end)

  it("delete: 404 for an unknown name, then the record is gone", function()
    local v, msg, status = log.commit("nope", nil)
    assert.is_nil(v); assert.equal(404, status); assert.equal("not found uptream", msg)
    log.commit("a", record("a", "server 127.0.0.1:1;"))
    assert.equal(2, (log.commit("a", nil)))
    assert.is_nil(log.readRecord("a"))
    assert.same({}, log.allNames())
  end)

  it("conditional writes: 412 on a revision mismatch, changing nothing", function()
    log.commit("a", record("a", "server 127.0.0.1:1;"))
    local v, msg, status = log.commit("a", record("a", "server 127.0.0.1:2;"), 7)
    assert.is_nil(v); assert.equal(412, status); assert.matches("revision mismatch", msg)
    assert.equal(1, log.currentVersion())
    assert.equal(2, (log.commit("a", record("a", "server 127.0.0.1:2;"), 1)))
    local v0, _, s0 = log.commit("new", record("new", "server 127.0.0.1:2;"), 0)
    assert.equal(3, v0); assert.is_nil(s0)
  end)

  it("compacts the log to LOG_KEEP entries; a reader further behind must rebuild", function()
    for i = 1, keys.LOG_KEEP + 10 do log.commit("n" .. (i % 3), record("n" .. (i % 3), "server 127.0.0.1:" .. i .. ";")) end
    local v = log.currentVersion()
    assert.equal(keys.LOG_KEEP + 10, v)
    assert.is_nil(ngx.shared.dyups:get(keys.CMD_PREFIX .. 10))
    assert.is_not_nil(ngx.shared.dyups:get(keys.CMD_PREFIX .. 11))
    assert.is_nil(log.changedSince(0, v))
    assert.is_not_nil(log.changedSince(v - 100, v))
  end)

  it("max_upstreams: 429 for a new name, replacing an existing one still works", function()
    fresh({ options = { max_upstreams = 2 } })
    log = require("dyups.store.command_log")
    log.commit("a", record("a", "server 127.0.0.1:1;"))
    log.commit("b", record("b", "server 127.0.0.1:1;"))
    local v, _, status = log.commit("c", record("c", "server 127.0.0.1:1;"))
    assert.is_nil(v); assert.equal(429, status)
    assert.equal(3, (log.commit("a", record("a", "server 127.0.0.1:9;"))))
  end)

  it("a full dict refuses the write (507) and leaves no partial change", function()
    local dict = ngx.shared.dyups
    log.commit("a", record("a", "server 127.0.0.1:1;"))
    dict.cap = 1024 * 1024 -- a budget far above what is left: the dict itself refuses
    dict.limit = 2000 - dict:free_space() + 1024 * 1024 -- about 2 KB left
    local big = string.rep("# padding\n", 300) .. "server 127.0.0.1:2;"
    local v, msg, status = log.commit("b", record("b", big))
    assert.is_nil(v); assert.equal(507, status); assert.matches('shared dict "dyups" is full', msg)
    assert.equal(1, log.currentVersion())
    assert.is_nil(dict:get(keys.CMD_PREFIX .. 2))
    assert.is_nil(log.readRecord("b"))
    assert.equal(1, dict:get(keys.COUNT))
  end)

  it("trylock: a held lock answers 409 at once", function()
    fresh({ options = { trylock = true } })
    log = require("dyups.store.command_log")
    ngx.shared.dyups:add(require("dyups.store.keys").LOCK, 1, 10) -- held by a live process (pid 1)
    local v, msg, status = log.commit("a", record("a", "server 127.0.0.1:1;"))
    assert.is_nil(v); assert.equal(409, status); assert.equal("wait and try again\n", msg)
  end)
end)

describe("registry catch-up", function()
  it("a second worker applies changes, deletions and rebuilds after compaction, with equal digests", function()
    local ngx = fresh()
    local fake_balancer = fake.fake_balancer()
    local dict = ngx.shared.dyups
    local log = require("dyups.store.command_log")
    log.commit("a", record("a", "server 127.0.0.1:1; server 127.0.0.1:2;"))
    log.commit("b", record("b", "server 127.0.0.1:3;"))
    fake.another_worker(ngx, fake_balancer) -- "worker 2"
    local reg = require("dyups.registry.sync")
    reg.sync()
    assert.equal(2, reg.appliedVersion())
    assert.equal(2, reg.lookup("a").peers.total)
    assert.is_not_nil(reg.lookup("b"))
    local log2 = require("dyups.store.command_log")
    local api = require("dyups.pipeline")
    log2.commit("a", nil)
    reg.sync()
    assert.is_nil(reg.lookup("a"))
    -- a pinned version is retired, not dropped, until released
    local b = reg.lookup("b")
    b.refs = 1
    log2.commit("b", (api.prepare("b", "server 127.0.0.1:4;", "api")))
    reg.sync()
    assert.equal(1, reg.stats().retired)
    b.refs = 0
    reg.releaseRetired(b)
    assert.equal(0, reg.stats().retired)
    -- fall more than LOG_KEEP behind: rebuild
    local keep = require("dyups.store.keys").LOG_KEEP
    for i = 1, keep + 5 do log2.commit("c" .. (i % 4), (api.prepare("c" .. (i % 4), "server 127.0.0.1:" .. i .. ";", "api"))) end
    assert.equal(0, reg.catchUp(log2.currentVersion()) + 1) -- -1 = full rebuild
    assert.equal(log2.currentVersion(), reg.appliedVersion())
    assert.equal(require("dyups.status").stateDigest(), reg.stats().digest)
    assert.equal(5, reg.stats().upstreams)
  end)
end)

describe("reading a stored record without decoding it", function()
  it("revision, creation version and check read from the text equal the decoded record's, whatever bodies and picker arguments say", function()
    local ngx = fresh()
    local pickers = require("dyups.balance.pickers")
    pickers.resetPickers()
    assert.is_nil(pickers.registerPicker("anyargs", { pick = function() return 0 end, validate = function(a) return a end }))
    local log = require("dyups.store.command_log")
    local api = require("dyups.pipeline")
    local cases = {
      { "plain", "server 127.0.0.1:1;" },
      { "checked", "server 127.0.0.1:1; check interval=1000;" },
      { "quoted", 'server 127.0.0.1:1; # "rev":7 "created":8 "check":{ "display":"X"' },
      { "args", "server 127.0.0.1:1; balancer anyargs rev=9 created=10 check=x display=Evil;" },
      { "both", "server 127.0.0.1:1; check interval=2000; balancer anyargs check=y;" },
    }
    for _, c in ipairs(cases) do assert.is_truthy((api.update(c[1], c[2]))) end
    assert.is_truthy((api.update("plain", "server 127.0.0.1:2;"))) -- a replace: created stays, rev moves
    assert.is_truthy((api.update("Spelled", "server 127.0.0.1:1;")))
    for _, name in ipairs({ "plain", "checked", "quoted", "args", "both", "spelled" }) do
      local raw = log.readRaw(name)
      local rec = log.decodeRecord(name, raw)
      assert.equal(rec.rev, log.storedRevision(raw), name)
      assert.equal(rec.created or 0, log.storedCreated(raw), name)
      assert.equal(rec.spec.check ~= nil, log.storedHas(raw, log.HAS_CHECK), name)
      if rec.display ~= nil then assert.is_true(log.storedHas(raw, log.MAY_HAVE_DISPLAY), name) end
      -- the prober and the DNS refresher decode only the records that have what they follow
      assert.equal(rec.spec.check ~= nil, log.readRecordWith(name, log.HAS_CHECK) ~= nil, name)
      assert.is_nil(log.readRecordWith(name, log.HAS_HOST_NAME), name) -- every server here is an address
    end
    assert.equal(2000, log.readRecordWith("both", log.HAS_CHECK).spec.check.interval)
    assert.is_nil(log.readRecordWith("nope", log.HAS_CHECK))
    assert.is_false(log.storedHas(log.readRaw("args"), log.MAY_HAVE_DISPLAY)) -- picker arguments are stored as "k=v" strings
    assert.is_true(log.storedHas(log.readRaw("spelled"), log.MAY_HAVE_DISPLAY))
    -- a second worker that routes to none of them lists, orders and flags them as the writer does
    fake.another_worker(ngx)
    local reg = require("dyups.registry.sync")
    reg.sync()
    assert.equal(0, reg.stats().built)
    assert.same(log.namesInOrder(true), require("dyups.registry.order").all(true))
    assert.same({ "checked", "both" }, reg.checkedNames())
    for _, name in ipairs({ "plain", "checked", "quoted", "args", "both", "spelled" }) do
      assert.equal(log.readRecord(name).rev, reg.revision(name), name)
    end
    assert.equal(require("dyups.status").stateDigest(), reg.stats().digest)
    pickers.resetPickers()
  end)
end)

describe("registry lazy builds", function()
  it("builds a peer set on first lookup, rebuilds built ones at each change, and keeps digests equal", function()
    local ngx = fresh()
    local log = require("dyups.store.command_log")
    log.commit("a", record("a", "server 127.0.0.1:1; server 127.0.0.1:2;"))
    log.commit("b", record("b", "server 127.0.0.1:3;"))
    fake.another_worker(ngx)
    local reg = require("dyups.registry.sync")
    local log2 = require("dyups.store.command_log")
    local api = require("dyups.pipeline")
    local status = require("dyups.status")
    reg.sync()
    assert.equal(2, reg.stats().upstreams)
    assert.equal(0, reg.stats().built)
    assert.equal("server 127.0.0.1:3;", reg.record("b").body) -- no build needed to read the record
    assert.equal(0, reg.stats().built)
    assert.equal(2, reg.lookup("a").peers.total)
    assert.equal(1, reg.stats().built)
    assert.is_nil(reg.lookup("nope"))
    -- a change of a built upstream is built by the catch-up; of an unbuilt one, not
    log2.commit("a", (api.prepare("a", "server 127.0.0.1:5;", "api")))
    log2.commit("b", (api.prepare("b", "server 127.0.0.1:6; server 127.0.0.1:7;", "api")))
    reg.sync()
    assert.equal(1, reg.stats().built)
    assert.equal(3, reg.lookup("a").rev)
    assert.equal(1, reg.stats().built)
    assert.equal(2, reg.lookup("b").peers.total)
    assert.equal(2, reg.stats().built)
    assert.equal(status.stateDigest(), reg.stats().digest)
    log2.commit("a", nil)
    reg.sync()
    assert.is_nil(reg.lookup("a"))
    assert.is_nil(reg.record("a"))
    assert.equal(1, reg.stats().built)
    assert.equal(1, reg.stats().upstreams)
    assert.equal(status.stateDigest(), reg.stats().digest)
  end)
end)
