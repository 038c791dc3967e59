-- Cluster mode without etcd: the option's validation and the key layout (dyups.cluster.config), monotonic
-- applies with tombstones (dyups.cluster.apply + store/cluster), the write path's decisions against a
-- scripted etcd (dyups.cluster.writer: rebase, If-Match, a lost answer recognised by the write id, faults),
-- and the watcher's handling of watch answers (events, compaction, errors).
local fake = require("spec.helpers.fake_ngx")

-- the write pipeline answers (version) or (nil, reason, status); these specs read (status, message, version)
local function as_status_api(p)
  local function wrap(fn)
    return function(...)
      local v, reason, status = fn(...)
      if v ~= nil then return 200, "success", v end
      return status, reason
    end
  end
  return { update = wrap(p.update), remove = wrap(p.remove), revisionOf = p.revisionOf }
end
local cjson = require("cjson.safe")

local CLUSTER = { etcd = { "127.0.0.1:2379", "http://10.0.0.2:2379" } }

--- fresh modules over a fresh fake ngx in cluster mode; `etcd_call` (optional) replaces etcd.call
local function fresh(etcd_call, extra)
  fake.unload()
  local ngx = fake.install()
  ngx.encode_base64 = function(s) return "b64:" .. s end
  ngx.decode_base64 = function(s) return (s:gsub("^b64:", "")) end
  local options = require("dyups.options")
  local o = { cluster = CLUSTER }
  for k, v in pairs(extra or {}) do o[k] = v end
  options.setOptions(assert(options.validateOptions(o)))
  require("dyups.store.dict").resetDict()
  if etcd_call then
    local etcd = require("dyups.cluster.etcd")
    local stub = setmetatable({ call = etcd_call }, { __index = etcd })
    package.loaded["dyups.cluster.etcd"] = stub
  end
  return ngx
end

describe("cluster option", function()
  local config, options
  before_each(function()
    fresh()
    config = require("dyups.cluster.config")
    options = require("dyups.options")
  end)

  it("normalises endpoints and the prefix", function()
    local c = assert(config.validateCluster({ etcd = { "127.0.0.1:2379", "http://etcd.local:2380/", "[::1]:2379" } }))
    assert.same({ host = "127.0.0.1", port = 2379, name = "127.0.0.1:2379" }, c.endpoints[1])
    assert.same({ host = "etcd.local", port = 2380, name = "etcd.local:2380" }, c.endpoints[2])
    assert.same({ host = "::1", port = 2379, name = "[::1]:2379" }, c.endpoints[3])
    assert.equal("/dyups", c.prefix)
    assert.equal("/prod/edge", assert(config.validateCluster({ etcd = { "a:1" }, prefix = "/prod/edge", user = "u", password = "p" })).prefix)
  end)

  it("refuses what it cannot use, with the reason", function()
    local cases = {
      { 1, 'option "cluster" must be a table' },
      { {}, 'option "cluster.etcd" is required' },
      { { etcd = {} }, "at least one endpoint" },
      { { etcd = "127.0.0.1:2379" }, 'option "cluster.etcd" must be a list' },
      { { etcd = { "127.0.0.1" } }, 'entry 1 %(127.0.0.1%) must be "host:port"' },
      { { etcd = { "https://127.0.0.1:2379" } }, "entry 1" },
      { { etcd = { "a:70000" } }, "entry 1" },
      { { etcd = { "a:1" }, prefix = "dyups" }, 'option "cluster.prefix"' },
      { { etcd = { "a:1" }, prefix = "/dyups/" }, 'option "cluster.prefix"' },
      { { etcd = { "a:1" }, prefix = "/a//b" }, 'option "cluster.prefix"' },
      { { etcd = { "a:1" }, password = "p" }, "go together" },
      { { etcd = { "a:1" }, user = "", password = "p" }, "must not be empty" },
      { { etcd = { "a:1" }, ttl = 3 }, 'unknown key "ttl"' },
    }
    for _, case in ipairs(cases) do
      local c, err = config.validateCluster(case[1])
      assert.is_nil(c)
      assert.matches(case[2], err)
    end
    local o, err = options.validateOptions({ cluster = { etcd = { "a:1" } }, upstream_conf = "/etc/u.conf" })
    assert.is_nil(o)
    assert.matches('"upstream_conf" cannot be used with "cluster"', err)
  end)

  it("lays out one key per upstream under <prefix>/upstreams/", function()
    local c = assert(config.validateCluster({ etcd = { "a:1" }, prefix = "/p" }))
    assert.equal("/p/upstreams/web", config.upstreamKey(c, "web"))
    assert.equal("/p/upstreams0", config.prefixEnd("/p/upstreams/"))
    assert.equal("web", config.nameOfKey(c, "/p/upstreams/web"))
    assert.is_nil(config.nameOfKey(c, "/p/upstreams/"))
    assert.is_nil(config.nameOfKey(c, "/p/other/web"))
  end)
end)

describe("cluster apply", function()
  local apply, log, cl, api
  before_each(function()
    fresh()
    apply = require("dyups.cluster.apply")
    log = require("dyups.store.command_log")
    cl = require("dyups.store.cluster")
    api = as_status_api(require("dyups.pipeline"))
  end)
  local function put(name, port, rev)
    return apply.applyValue(name, cjson.encode({ name = name, body = "server 127.0.0.1:" .. port .. ";" }), rev)
  end

  it("never goes back in etcd revisions; a delete leaves a tombstone that refuses older puts", function()
    assert.is_true((put("web", 1, 5)))
    assert.equal(5, log.readRecord("web").etcd)
    assert.equal(5, api.revisionOf(log.readRecord("web")), "the ETag in cluster mode is the etcd revision")
    local v = log.currentVersion()
    assert.is_false((put("web", 2, 4)), "an older revision is stale")
    assert.is_false((put("web", 2, 5)), "the same revision is already there")
    assert.equal(v, log.currentVersion(), "a stale apply writes nothing")
    assert.is_true((apply.applyRevision("web", nil, 7)))
    assert.is_nil(log.readRecord("web"))
    assert.equal(7, cl.localRevision("web", nil))
    assert.is_false((put("web", 3, 6)), "a put older than the delete does not bring it back")
    assert.is_nil(log.readRecord("web"))
    assert.is_true((put("web", 3, 8)))
    assert.equal("server 127.0.0.1:3;", log.readRecord("web").body)
    assert.is_false((apply.applyRevision("gone", nil, 9)), "deleting a name this node does not have changes nothing")
    -- etcd restored to older revisions: the watcher's full read forces etcd's state
    assert.is_true((apply.applyValue("web", cjson.encode({ name = "web", body = "server 127.0.0.1:4;" }), 2, true)))
    assert.equal(2, log.readRecord("web").etcd)
    assert.is_true((put("web", 5, 3)), "and from there on, revisions move forward again")
  end)

  it("refuses values it cannot use (400), and applies names it cannot resolve yet (the DNS timer's job)", function()
    local _, err, status = apply.applyValue("web", "not json", 3)
    assert.equal(400, status); assert.matches("not JSON", err)
    _, err, status = apply.applyValue("web", cjson.encode({ name = "other", body = "server 1.2.3.4;" }), 3)
    assert.equal(400, status); assert.matches("names another upstream", err)
    _, err, status = apply.applyValue("web", cjson.encode({ name = "web", body = "server 1.2.3.4 bogus;" }), 3)
    assert.equal(400, status); assert.matches("invalid parameter", err)
    _, err, status = apply.applyValue("Web", cjson.encode({ body = "server 1.2.3.4;" }), 3)
    assert.equal(400, status); assert.matches("not a valid upstream name", err)
    ngx.get_phase = function() return "init_worker" end -- no DNS here: the name stays unresolved
    assert.is_true((apply.applyValue("named", cjson.encode({ body = "server no.such.name.invalid:80;" }), 4)))
    assert.same({}, log.readRecord("named").endpoints[1])
  end)
end)

describe("cluster writer", function()
  local calls, answers
  --- a scripted etcd: each call takes the next answer: a function(body) -> doc | nil, err, kind
  local function etcd_call(path, body)
    calls[#calls + 1] = { path = path, body = body }
    local a = table.remove(answers, 1)
    assert(a, "unexpected etcd call " .. path)
    return a(body)
  end
  local function ok(rev, extra)
    return function()
      local doc = { header = { revision = tostring(rev) }, succeeded = true, responses = { { response_put = {} } } }
      for k, v in pairs(extra or {}) do doc[k] = v end
      return doc
    end
  end
  local function compare_failed(rev, mod, value)
    return function()
      return { header = { revision = tostring(rev) }, responses = { { response_range = { kvs = mod and { { mod_revision = tostring(mod), value = value } } or nil } } } }
    end
  end
  local function fail(err, kind) return function() return nil, err, kind end end
  local function value_of(body) return body.success[1].request_put.value end

  local writer, log, api
  before_each(function()
    calls, answers = {}, {}
    fresh(etcd_call)
    writer = require("dyups.cluster.writer")
    log = require("dyups.store.command_log")
    api = as_status_api(require("dyups.pipeline"))
  end)

  it("a write is one guarded transaction; the node applies it before it answers", function()
    answers = { ok(10) }
    local status, msg, v = api.update("Web", "server 127.0.0.1:1;")
    assert.same({ 200, "success", 10 }, { status, msg, v })
    assert.equal("/v3/kv/txn", calls[1].path)
    local cmp = calls[1].body.compare[1]
    assert.same({ key = "b64:/dyups/upstreams/web", target = "MOD", mod_revision = "0", result = "EQUAL" }, cmp)
    local stored = cjson.decode((value_of(calls[1].body):gsub("^b64:", "")))
    assert.equal("web", stored.name)
    assert.equal("server 127.0.0.1:1;", stored.body)
    assert.equal(10, log.readRecord("web").etcd)
    -- the next plain write is based on the revision this node holds
    answers = { ok(11) }
    api.update("web", "server 127.0.0.1:2;")
    assert.equal("10", calls[2].body.compare[1].mod_revision)
  end)

  it("a bad body never reaches etcd", function()
    local status, msg = api.update("web", "server 127.0.0.1:1 bogus=1;")
    assert.equal(400, status)
    assert.matches("^add server failed: invalid parameter", msg)
    assert.equal(0, #calls)
  end)

  it("plain write: a newer revision written elsewhere is read back and the write re-based on it", function()
    answers = { compare_failed(12, 12, "b64:{}"), ok(13) }
    local status, _, v = api.update("web", "server 127.0.0.1:1;")
    assert.equal(200, status); assert.equal(13, v)
    assert.equal("12", calls[2].body.compare[1].mod_revision)
  end)

  it("If-Match: 412 with the revision etcd holds, nothing changed here", function()
    answers = { compare_failed(9, 7, "b64:{}") }
    local status, msg = api.update("web", "server 127.0.0.1:1;", 5)
    assert.equal(412, status)
    assert.equal("add server failed: revision mismatch: upstream is at revision 7", msg)
    assert.equal("5", calls[1].body.compare[1].mod_revision)
    assert.is_nil(log.readRecord("web"))
  end)

  it("an answer lost after etcd applied the write: the retry finds the write's own id, 200 with its revision", function()
    answers = {
      fail("no answer from 127.0.0.1:2379: timeout", "unknown"),
      function(body) return compare_failed(20, 20, value_of(calls[1].body))() end,
    }
    local status, _, v = api.update("web", "server 127.0.0.1:1;", 0)
    assert.equal(200, status); assert.equal(20, v)
    assert.equal(20, log.readRecord("web").etcd)
    assert.equal(2, #calls)
  end)

  it("If-Match after a lost answer, and another write since: 503 not confirmed (never a false 412 or 200)", function()
    answers = { fail("timeout", "unknown"), compare_failed(22, 21, "b64:" .. cjson.encode({ by = "someone-else" })) }
    local status, msg = api.update("web", "server 127.0.0.1:1;", 0)
    assert.equal(503, status)
    assert.matches("etcd did not confirm the write", msg)
  end)

  it("etcd unreachable: 503 with the reasons, nothing changed anywhere; an undecided etcd: 503 after the deadline", function()
    answers = { fail("etcd is unreachable (cannot connect to 127.0.0.1:2379: connection refused)", "unreachable") }
    local status, msg = api.update("web", "server 127.0.0.1:1;")
    assert.equal(503, status)
    assert.equal("add server failed: etcd is unreachable (cannot connect to 127.0.0.1:2379: connection refused); nothing was changed", msg)
    assert.is_nil(log.readRecord("web"))
    for _ = 1, 100 do answers[#answers + 1] = fail("etcd 127.0.0.1:2379: etcdserver: no leader", "unknown") end
    status, msg = api.remove("web")
    assert.equal(503, status)
    assert.matches("^etcd did not confirm the write within 6 s %(etcd 127.0.0.1:2379: etcdserver: no leader%)", msg)
    assert.matches("etcd did not confirm", require("dyups.store.cluster").lastWriteError().error)
  end)

  it("delete: 200 and a tombstone; 404 when etcd has no such key", function()
    answers = { ok(5) }
    api.update("web", "server 127.0.0.1:1;")
    answers = { ok(6, { responses = { { response_delete_range = { deleted = "1" } } } }) }
    local status, _, v = api.remove("web")
    assert.equal(200, status); assert.equal(6, v)
    assert.equal("5", calls[2].body.compare[1].mod_revision)
    assert.is_nil(log.readRecord("web"))
    assert.equal(6, require("dyups.store.cluster").localRevision("web", nil))
    answers = { ok(6, { responses = { { response_delete_range = {} } } }) }
    assert.same({ 404, "not found uptream" }, { api.remove("web") })
  end)

  it("a write from a phase that cannot use sockets: 503, nothing sent", function()
    ngx.get_phase = function() return "init_worker" end
    local status, msg = api.update("web", "server 127.0.0.1:1;")
    assert.equal(503, status)
    assert.matches("need a phase that can use sockets", msg)
    assert.equal(0, #calls)
  end)
end)

describe("cluster watcher answers", function()
  local watcher, log, c
  before_each(function()
    fresh()
    watcher = require("dyups.cluster.watcher")
    log = require("dyups.store.command_log")
    c = require("dyups.options").getOptions().cluster
  end)
  local function ev(kind, name, rev, body)
    local kv = { key = "b64:/dyups/upstreams/" .. name, mod_revision = tostring(rev) }
    if body then kv.value = "b64:" .. cjson.encode({ name = name, body = body }) end
    return { type = kind, kv = kv }
  end

  it("applies events in order (puts and deletes), moves the applied revision, ignores other keys", function()
    local line = cjson.encode({ result = { header = { revision = "4" }, events = {
      ev(nil, "a", 2, "server 127.0.0.1:1;"), ev(nil, "b", 3, "server 127.0.0.1:2;"), ev("DELETE", "a", 4),
      { kv = { key = "b64:/dyups/meta", mod_revision = "4" } },
    } } })
    assert.is_nil((watcher.handleAnswer(c, line)))
    assert.is_nil(log.readRecord("a"))
    assert.equal(3, log.readRecord("b").etcd)
    assert.equal(4, require("dyups.store.cluster").appliedRevision())
    -- a replayed older event changes nothing
    assert.is_nil((watcher.handleAnswer(c, cjson.encode({ result = { events = { ev(nil, "a", 2, "server 127.0.0.1:1;") } } }))))
    assert.is_nil(log.readRecord("a"))
  end)

  it("a compacted watch ends the session for a full read; errors and cancels end it with the reason", function()
    assert.is_true((watcher.handleAnswer(c, cjson.encode({ result = { canceled = true, compact_revision = "40" } }))))
    local stop, why = watcher.handleAnswer(c, cjson.encode({ result = { canceled = true, cancel_reason = "permission denied" } }))
    assert.is_false(stop); assert.matches("permission denied", why)
    stop, why = watcher.handleAnswer(c, cjson.encode({ error = { message = "etcdserver: no leader" } }))
    assert.is_false(stop); assert.matches("no leader", why)
    stop, why = watcher.handleAnswer(c, "<html>")
    assert.is_false(stop); assert.matches("not JSON", why)
    assert.is_nil((watcher.handleAnswer(c, cjson.encode({ result = { created = true } }))))
  end)
end)
