-- The write history (dyups.history, dyups.store.history) on a fake shared dict: what a write records (source,
-- revisions, body), the window (history_size entries, an eighth of the dict), entries without their body,
-- a history that cannot record (the write still succeeds, counted), and where a rollback finds its body.
local fake = require("spec.helpers.fake_ngx")

local function fresh(options, limit)
  fake.unload()
  local ngx = fake.install()
  if limit then ngx.shared.dyups.limit = limit end
  local opts = require("dyups.options")
  opts.setOptions(assert(opts.validateOptions(options)))
  require("dyups.store.dict").resetDict()
  return ngx
end

local HTTP = { kind = "http", client = "10.0.0.7", token = "ci", role = "write" }

describe("history", function()
  local pipeline, history, store
  local function load()
    pipeline = require("dyups.pipeline")
    history = require("dyups.history")
    store = require("dyups.store.history")
  end

  it("records every accepted write with its source, revisions and body; a delete has no body", function()
    fresh()
    load()
    assert.equal(1, (pipeline.update("App", "server 127.0.0.1:1;", nil, HTTP)))
    assert.equal(2, (pipeline.update("other", "server 127.0.0.1:2;")))
    assert.equal(3, (pipeline.update("app", "server 127.0.0.1:3;", nil, HTTP)))
    assert.equal(4, (pipeline.remove("app", nil, HTTP)))
    local all = history.listHistory(10)
    assert.same({ 4, 3, 2, 1 }, { all[1].seq, all[2].seq, all[3].seq, all[4].seq })
    assert.same({ kind = "http", client = "10.0.0.7", token = "ci" }, all[1].source)
    assert.same({ kind = "lua" }, all[3].source)
    assert.equal("delete", all[1].op)
    assert.is_nil(all[1].body)
    assert.same({ 3, 4 }, { all[1].rev_before, all[1].rev_after })
    assert.same({ 1, 3 }, { all[2].rev_before, all[2].rev_after })
    assert.equal("server 127.0.0.1:3;", all[2].body)
    assert.equal("App", all[4].display)
    assert.equal(1000, all[1].time)
    -- per upstream, and a limit
    local app = history.listHistory(10, "app")
    assert.equal(3, #app)
    assert.equal(1, #history.listHistory(1, "app"))
    -- a failed write records nothing
    assert.is_nil((pipeline.update("app", "server bogus bogus;", nil, HTTP)))
    assert.equal(4, #history.listHistory(10))
  end)

  it("gives a rollback the body of a revision: the current record, or the history's entry", function()
    fresh()
    load()
    pipeline.update("a", "server 127.0.0.1:1;")
    pipeline.update("a", "server 127.0.0.1:2;")
    assert.equal("server 127.0.0.1:1;", (history.bodyAt("a", 1)))
    assert.equal("server 127.0.0.1:2;", (history.bodyAt("a", 2)))
    pipeline.remove("a")
    assert.equal("server 127.0.0.1:2;", (history.bodyAt("a", 2)))
    local body, reason, status = history.bodyAt("a", 3) -- the delete's version: no body
    assert.is_nil(body)
    assert.equal(404, status)
    assert.matches('no revision 3 of upstream "a" in the history', reason, 1, true)
    assert.equal(404, select(3, history.bodyAt("b", 1)))
  end)

  it("keeps the last history_size entries", function()
    fresh({ history_size = 3 })
    load()
    for i = 1, 5 do pipeline.update("u", "server 127.0.0.1:" .. i .. ";") end
    local all = history.listHistory(100)
    assert.same({ 5, 4, 3 }, { all[1].seq, all[2].seq, all[3].seq })
    assert.equal(3, #all)
    assert.equal(3, store.historyStats().kept)
    assert.is_nil(ngx.shared.dyups:get("h:2"))
    assert.equal(404, select(3, history.bodyAt("u", 2)))
    assert.equal("server 127.0.0.1:3;", (history.bodyAt("u", 3)))
  end)

  it("holds at most an eighth of the dict: the oldest entries go first; a body larger than that is not kept", function()
    fresh(nil, 200000) -- budget 25 000 bytes: six one-page entries
    load()
    local big = "server 127.0.0.1:1;" .. string.rep(" ", 2500)
    for i = 1, 12 do assert.equal(i, (pipeline.update("big", big))) end
    local st = store.historyStats()
    assert.equal(25000, st.budget)
    assert.is_true(st.bytes <= st.budget)
    assert.is_true(st.kept >= 5 and st.kept <= 6, st.kept)
    assert.equal(12, history.listHistory(1)[1].rev_after)
    -- one body larger than the budget: the entry is kept without it
    local huge = "server 127.0.0.1:1;" .. string.rep(" ", 60000)
    assert.is_truthy((pipeline.update("huge", huge)))
    local e = history.listHistory(1)[1]
    assert.equal("huge", e.upstream)
    assert.is_nil(e.body)
    assert.matches("budget", e.body_omitted)
    assert.equal(1, store.historyStats().cut)
    -- the current record answers for the current revision; once replaced, that revision has no body to restore
    assert.equal(huge, (history.bodyAt("huge", e.rev_after)))
    pipeline.update("huge", "server 127.0.0.1:2;")
    local body, reason, status = history.bodyAt("huge", e.rev_after)
    assert.is_nil(body)
    assert.equal(410, status)
    assert.matches("was not kept", reason)
  end)

  it("never fails a write: a history it cannot record is counted (lock held, dict full)", function()
    local ngx = fresh()
    load()
    ngx.shared.dyups:set("lease:history", 4242) -- held by "this process" in another request: never released
    assert.equal(1, (pipeline.update("a", "server 127.0.0.1:1;")))
    assert.equal(1, store.historyStats().lost)
    assert.equal(0, store.historyStats().kept)
    assert.truthy(ngx._logs[#ngx._logs].msg:find("could not be recorded in the history", 1, true))
    ngx.shared.dyups:delete("lease:history")
    -- a dict with no room left for an entry even after the history gave up all of its own
    local d = ngx.shared.dyups
    d.limit = d.capacity() - d:free_space() + 300
    local seq, err = store.append(string.rep("x", 1000), 10)
    assert.is_nil(seq)
    assert.matches("no memory", err)
    assert.equal(2, store.historyStats().lost)
    assert.is_nil(d:get("lease:history"), "the lock is released")
  end)

  it("records nothing with history_size = 0", function()
    fresh({ history_size = 0 })
    load()
    pipeline.update("a", "server 127.0.0.1:1;")
    assert.same({}, history.listHistory(10))
    assert.equal(0, store.historyStats().lost)
  end)

  it("refuses a bad history_size", function()
    local options = require("dyups.options")
    assert.is_nil((options.validateOptions({ history_size = -1 })))
    assert.is_nil((options.validateOptions({ history_size = 1.5 })))
    assert.is_nil((options.validateOptions({ history_size = 100001 })))
    assert.equal(1000, options.validateOptions({}).history_size)
  end)
end)
