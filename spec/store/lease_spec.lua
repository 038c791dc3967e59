-- Leases (dyups.store.lease) and the command log's recovery from a writer killed mid-commit.
local fake = require("spec.helpers.fake_ngx")

local function fresh(pid, opts)
  fake.unload()
  local ngx = fake.install({ pid = pid })
  local options = require("dyups.options")
  options.setOptions(assert(options.validateOptions(opts)))
  require("dyups.store.dict").resetDict()
  return ngx, require("dyups.store.lease")
end

-- a pid that certainly is not running: beyond pid_max
local DEAD = 4194305 + 17
local ALIVE = 1

describe("leases", function()
  it("claim: one holder at a time; the holder renews; release frees it at once", function()
    local ngx, lease = fresh(ALIVE)
    assert.is_true(lease.claim("job", 5))
    assert.is_true(lease.claim("job", 5)) -- the holder renews
    assert.equal(ALIVE, lease.owner("job"))
    assert.is_true(lease.held("job"))
    -- another live process holds it: nobody else gets it
    ngx.shared.dyups:set("lease:other", ALIVE, 5)
    local _, lease2 = fresh(4242)
    _G.ngx.shared = ngx.shared
    require("dyups.store.dict").resetDict()
    assert.is_false(lease2.claim("other", 5))
    assert.is_false(lease2.held("other"))
    lease.release("job") -- not ours in this process: a no-op
  end)

  it("acquire is exclusive even for the holder's own process", function()
    local _, lease = fresh(ALIVE)
    assert.is_true(lease.acquire("lock", 5))
    assert.is_false(lease.acquire("lock", 5))
    lease.release("lock")
    assert.is_true(lease.acquire("lock", 5))
  end)

  it("a lease whose holder is dead is taken over at once, by exactly one claimant", function()
    local ngx, lease = fresh(ALIVE)
    ngx.shared.dyups:set("lease:dns", DEAD, 60)
    assert.is_false(lease.pidAlive(DEAD))
    assert.is_true(lease.pidAlive(ALIVE))
    assert.is_true(lease.claim("dns", 5))
    assert.equal(ALIVE, lease.owner("dns"))
    -- the takeover guard keeps a second claimant that saw the same dead holder from freeing the new lease
    assert.is_not_nil(ngx.shared.dyups:get("lease:dns:x" .. DEAD))
  end)

  it("an expired lease is free", function()
    local ngx, lease = fresh(ALIVE)
    ngx.shared.dyups:set("lease:x", 999999, 1)
    ngx._advance(2)
    assert.is_true(lease.acquire("x", 5))
  end)
end)

describe("a writer killed mid-commit", function()
  local function setup()
    local ngx = fresh(ALIVE)
    local pipeline = require("dyups.pipeline")
    local log = require("dyups.store.command_log")
    assert(pipeline.update("a", "server 127.0.0.1:1;"))
    return ngx, pipeline, log
  end

  it("holds the write lock: the next writer takes it over at once and writes", function()
    local ngx, pipeline, log = setup()
    ngx.shared.dyups:set(require("dyups.store.keys").LOCK, DEAD, 60)
    local v, err = pipeline.update("b", "server 127.0.0.1:2;")
    assert.equal(2, v, err)
    assert.equal(2, log.currentVersion())
  end)

  -- what a writer of "a" (revision 1 -> 2) killed at each step of its commit left behind
  local function killed_writer(dict, steps)
    local keys = require("dyups.store.keys")
    local rec = assert(require("dyups.pipeline").prepare("a", "server 127.0.0.1:7;", "api"))
    rec.rev, rec.created = 2, 1
    local journal = "2 s 1 a"
    dict:set(keys.JOURNAL, journal .. string.rep(" ", keys.JOURNAL_LEN - #journal))
    if steps >= 1 then dict:set("c:2", "a") end
    if steps >= 2 then dict:set("r:a@2", require("cjson.safe").encode(rec)) end
    if steps >= 3 then dict:set("u:a", 2, 0, 1) end
    if steps >= 4 then dict:delete("r:a@1") end
    dict:set(keys.LOCK, DEAD, 60)
  end

  it("after moving the pointer to its new record: the next writer publishes that change before its own", function()
    for _, steps in ipairs({ 3, 4 }) do
      local ngx, pipeline, log = setup()
      local dict = ngx.shared.dyups
      killed_writer(dict, steps)
      assert.equal(1, log.currentVersion())
      local v = pipeline.update("b", "server 127.0.0.1:2;")
      assert.equal(3, v)
      assert.equal("a", dict:get("c:2"))
      assert.equal("b", dict:get("c:3"))
      assert.equal(2, log.readRecord("a").rev)
      assert.is_nil(dict:get("r:a@1"), "the old record is freed")
      assert.equal(2, dict:get("n"))
      local t = log.scan(dict)
      assert.equal(t.digest, log.storedDigest())
      assert.equal(t.bytes, log.configBytes())
      -- a second worker converges on both changes
      fake.another_worker(ngx)
      local reg = require("dyups.registry.sync")
      reg.sync()
      assert.equal(require("dyups.status").stateDigest(), reg.stats().digest)
    end
  end)

  it("before moving the pointer: its log entry and its new record are dropped, the old record kept", function()
    for _, steps in ipairs({ 0, 1, 2 }) do
      local ngx, pipeline, log = setup()
      local dict = ngx.shared.dyups
      killed_writer(dict, steps)
      local v = pipeline.update("b", "server 127.0.0.1:2;")
      assert.equal(2, v)
      assert.equal("b", dict:get("c:2"))
      assert.equal(1, log.readRecord("a").rev)
      assert.is_nil(dict:get("r:a@2"), "no orphan record")
      assert.equal(log.scan(dict).bytes, log.configBytes())
    end
  end)

  it("in the middle of a delete: completed when the pointer is gone, dropped when not", function()
    local keys = require("dyups.store.keys")
    for _, gone in ipairs({ true, false }) do
      local ngx, pipeline, log = setup()
      local dict = ngx.shared.dyups
      local journal = "2 d 1 a"
      dict:set(keys.JOURNAL, journal .. string.rep(" ", keys.JOURNAL_LEN - #journal))
      dict:set("c:2", "a")
      if gone then dict:delete("u:a") end
      dict:set(keys.LOCK, DEAD, 60)
      local v = pipeline.update("b", "server 127.0.0.1:2;")
      assert.equal(gone and 3 or 2, v)
      if gone then
        assert.is_nil(log.readRecord("a"))
        assert.is_nil(dict:get("r:a@1"))
      else
        assert.equal(1, log.readRecord("a").rev)
      end
      assert.equal(1 + (gone and 0 or 1), dict:get("n"))
    end
  end)
end)
