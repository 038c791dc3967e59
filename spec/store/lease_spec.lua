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

  it("after writing the record: the next writer publishes that change before its own", function()
    local ngx, pipeline, log = setup()
    local dict = ngx.shared.dyups
    -- what the killed writer did: c:2 and u:a at revision 2, then died before incrementing v
    local rec = assert(pipeline.prepare("a", "server 127.0.0.1:7;", "api"))
    rec.rev = 2
    rec.created = 1
    dict:set("c:2", "a")
    dict:set("u:a", require("cjson.safe").encode(rec), 0, 1)
    dict:set(require("dyups.store.keys").LOCK, DEAD, 60)
    assert.equal(1, log.currentVersion())
    local v = pipeline.update("b", "server 127.0.0.1:2;")
    assert.equal(3, v)
    assert.equal("a", dict:get("c:2"))
    assert.equal("b", dict:get("c:3"))
    assert.equal(2, log.readRecord("a").rev)
    assert.equal(2, dict:get("n"))
    -- a second worker converges on both changes
    fake.another_worker(ngx)
    local reg = require("dyups.registry.sync")
    reg.sync()
    assert.equal(require("dyups.status").stateDigest(), reg.stats().digest)
  end)

  it("before writing the record: its log entry is dropped and the record kept as it was", function()
    local ngx, pipeline, log = setup()
    local dict = ngx.shared.dyups
    dict:set("c:2", "a") -- the killed writer got this far
    dict:set(require("dyups.store.keys").LOCK, DEAD, 60)
    local v = pipeline.update("b", "server 127.0.0.1:2;")
    assert.equal(2, v)
    assert.equal("b", dict:get("c:2"))
    assert.equal(1, log.readRecord("a").rev)
  end)
end)
