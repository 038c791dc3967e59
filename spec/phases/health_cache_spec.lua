-- Passive health with the per-worker cache (dyups.store.peer_health): a failure recorded by one worker is
-- seen by another after its next healthSync; in the steady state a request reads one shm key, whatever
-- the number of peers; down marks end at their time without a read.
local fake = require("spec.helpers.fake_ngx")

local function worker(ngx)
  fake.another_worker(ngx)
  local api = require("dyups.pipeline")
  local ps = require("dyups.store.peer_health")
  local function set(body)
    local rec = assert(api.prepare("u", body, "api"))
    return require("dyups.registry.build").buildVersion(rec).peers
  end
  return { ps = ps, set = set, available = ps.peerState.available }
end

describe("passive health cache", function()
  local ngx, gets
  before_each(function()
    fake.unload()
    ngx = fake.install()
    local dict = ngx.shared.dyups
    local get = dict.get
    gets = 0
    dict.get = function(self, k) gets = gets + 1; return get(self, k) end
  end)

  it("a failure marked by one worker is seen by another at its next healthSync, and ends after fail_timeout", function()
    local w1 = worker(ngx)
    local s1 = w1.set("server 127.0.0.1:1 max_fails=1 fail_timeout=10; server 127.0.0.1:2;")
    local w2 = worker(ngx)
    local s2 = w2.set("server 127.0.0.1:1 max_fails=1 fail_timeout=10; server 127.0.0.1:2;")
    w2.ps.healthSync()
    assert.is_true(w2.available(s2, 1))
    w1.ps.reportFailure(s1, 1)
    assert.is_false(w1.available(s1, 1)) -- the reporter sees its own mark at once
    w2.ps.healthSync()
    assert.is_false(w2.available(s2, 1))
    assert.is_true(w2.available(s2, 2))
    ngx._advance(9.9)
    assert.is_false(w2.available(s2, 1))
    ngx._advance(0.2)
    assert.is_true(w2.available(s2, 1))
  end)

  it("in the steady state a request costs one shm get (the generation), for any number of peers", function()
    local w = worker(ngx)
    local s = w.set("server 127.0.0.1:1; server 127.0.0.1:2; server 127.0.0.1:3; server 127.0.0.1:4;")
    w.ps.healthSync()
    for gi = 1, 4 do w.available(s, gi); w.ps.reportSuccess(s, gi) end -- fills the cache
    gets = 0
    for _ = 1, 10 do
      w.ps.healthSync()
      for gi = 1, 4 do assert.is_true(w.available(s, gi)) end
      w.ps.reportSuccess(s, 2)
    end
    assert.equal(10, gets)
  end)

  it("a success clears a failure count another worker recorded, once the entry was checked after it", function()
    local w1 = worker(ngx)
    local s1 = w1.set("server 127.0.0.1:1 max_fails=3; server 127.0.0.1:2;")
    local w2 = worker(ngx)
    local s2 = w2.set("server 127.0.0.1:1 max_fails=3; server 127.0.0.1:2;")
    local key = "f:u/127.0.0.1:1#1"
    w2.ps.healthSync()
    w2.ps.reportSuccess(s2, 1) -- caches "no failure count"
    w1.ps.reportFailure(s1, 1)
    w1.ps.reportFailure(s1, 1)
    assert.equal(2, (ngx.shared.dyups:get(key)))
    w2.ps.healthSync()
    w2.ps.reportSuccess(s2, 1) -- right after the failures: nginx keeps counting (accessed == checked)
    assert.equal(2, (ngx.shared.dyups:get(key)))
    -- fail_timeout (10 s) later, a pick by w2 moves `checked`; its success then resets the count
    ngx._advance(11)
    w2.ps.healthSync()
    w2.ps.picked(s2, 1)
    w2.ps.reportSuccess(s2, 1)
    assert.is_nil((ngx.shared.dyups:get(key)))
    -- so two more failures do not reach max_fails=3
    w1.ps.reportFailure(s1, 1)
    w1.ps.reportFailure(s1, 1)
    w2.ps.healthSync()
    assert.is_true(w2.available(s2, 1))
  end)
end)
