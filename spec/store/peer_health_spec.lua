-- Passive health per server entry with nginx's rules (dyups.store.peer_health), on a controlled clock:
-- fails / accessed / checked, the reset rule (a success resets only after the entry was checked after its
-- last failure), one probe request when fail_timeout ends, and state that belongs to one entry of one upstream.
local fake = require("spec.helpers.fake_ngx")

local ngx, ph, pipeline, reg

local function version(name)
  reg.sync()
  return reg.lookup(name)
end

local function update(name, body)
  assert(pipeline.update(name, body))
  return version(name).peers
end

describe("passive health per server entry (nginx's rules)", function()
  before_each(function()
    fake.unload()
    ngx = fake.install()
    fake.another_worker(ngx)
    require("dyups.store.dict").resetDict()
    ph = require("dyups.store.peer_health")
    pipeline = require("dyups.pipeline")
    reg = require("dyups.registry.sync")
  end)

  it("names entries by upstream, address and occurrence", function()
    local p = update("u", "server 127.0.0.1:1; server 127.0.0.1:1; server 127.0.0.1:2 backup;")
    assert.same({ "u/127.0.0.1:1#1", "u/127.0.0.1:1#2", "u/127.0.0.1:2#1" }, p.entries)
    assert.same({ "f:u/127.0.0.1:1#1", "f:u/127.0.0.1:1#2", "f:u/127.0.0.1:2#1" }, p.fkeys)
  end)

  it("a success right after a failure does not reset the count; one after fail_timeout and a pick does", function()
    local p = update("u", "server 127.0.0.1:1 max_fails=2 fail_timeout=30; server 127.0.0.1:2;")
    ph.healthSync()
    ph.reportFailure(p, 1)
    ph.reportSuccess(p, 1)
    assert.equal(1, ngx.shared.dyups:get("f:u/127.0.0.1:1#1"))
    ngx._advance(10)
    ph.picked(p, 1) -- within fail_timeout of `checked`: it does not move
    ph.reportSuccess(p, 1)
    assert.equal(1, ngx.shared.dyups:get("f:u/127.0.0.1:1#1"))
    -- so the second failure, 10 s after the first, reaches max_fails
    ph.reportFailure(p, 1)
    assert.is_false(ph.peerState.available(p, 1))
    assert.is_true(ph.peerState.available(p, 2))
    ngx._advance(31)
    assert.is_true(ph.peerState.available(p, 1)) -- fail_timeout since `checked` has passed
    ph.picked(p, 1) -- one request tries it: `checked` = now ...
    assert.is_false(ph.peerState.available(p, 1)) -- ... and the others wait for its outcome
    ph.reportSuccess(p, 1) -- accessed < checked: the count is reset
    assert.is_nil(ngx.shared.dyups:get("f:u/127.0.0.1:1#1"))
    assert.is_true(ph.peerState.available(p, 1))
  end)

  it("a failed probe after fail_timeout keeps the server out for another fail_timeout", function()
    local p = update("u", "server 127.0.0.1:1 max_fails=1 fail_timeout=10; server 127.0.0.1:2;")
    ph.healthSync()
    ph.reportFailure(p, 1)
    assert.is_false(ph.peerState.available(p, 1))
    ngx._advance(10.5)
    assert.is_true(ph.peerState.available(p, 1))
    ph.picked(p, 1)
    ph.reportFailure(p, 1)
    assert.equal(2, ngx.shared.dyups:get("f:u/127.0.0.1:1#1"))
    ngx._advance(9.9)
    assert.is_false(ph.peerState.available(p, 1))
    ngx._advance(0.2)
    assert.is_true(ph.peerState.available(p, 1))
  end)

  it("two upstreams listing the same address, and two entries of one address, have separate state", function()
    local u = update("u", "server 127.0.0.1:1 max_fails=2; server 127.0.0.1:2;")
    local u2 = update("u2", "server 127.0.0.1:1 max_fails=2; server 127.0.0.1:2;")
    local twice = update("twice", "server 127.0.0.1:1 max_fails=1; server 127.0.0.1:1 max_fails=1; server 127.0.0.1:2;")
    ph.healthSync()
    ph.reportFailure(u, 1)
    ph.reportFailure(u, 1)
    assert.is_false(ph.peerState.available(u, 1))
    assert.is_true(ph.peerState.available(u2, 1))
    ph.reportFailure(twice, 1)
    assert.is_false(ph.peerState.available(twice, 1))
    assert.is_true(ph.peerState.available(twice, 2))
  end)

  it("an update keeps the state of entries it keeps and releases the others; a delete releases all", function()
    local p = update("u", "server 127.0.0.1:1 max_fails=5; server 127.0.0.1:2 max_fails=5;")
    ph.healthSync()
    ph.reportFailure(p, 1)
    ph.reportFailure(p, 2)
    update("u", "server 127.0.0.1:1 max_fails=5 weight=3; server 127.0.0.1:3;")
    assert.equal(1, ngx.shared.dyups:get("f:u/127.0.0.1:1#1"))
    assert.is_nil(ngx.shared.dyups:get("f:u/127.0.0.1:2#1"))
    assert.is_nil(ngx.shared.dyups:get("fa:u/127.0.0.1:2#1"))
    assert(pipeline.remove("u"))
    assert.is_nil(ngx.shared.dyups:get("f:u/127.0.0.1:1#1"))
    assert.is_nil(ngx.shared.dyups:get("fc:u/127.0.0.1:1#1"))
  end)

  it("max_conns is counted per entry", function()
    local p = update("mc", "server 127.0.0.1:1 max_conns=1; server 127.0.0.1:1 max_conns=1; server 127.0.0.1:2;")
    ph.healthSync()
    ph.connOpen(p, 1)
    assert.is_false(ph.peerState.available(p, 1))
    assert.is_true(ph.peerState.available(p, 2))
    ph.connClose(p, 1)
    assert.is_true(ph.peerState.available(p, 1))
    assert.is_nil(ngx.shared.dyups:get("k:mc/127.0.0.1:1#1"))
  end)

  it("10 000 updates with failures leave the dict flat", function()
    local dict = ngx.shared.dyups
    local p = update("u", "server 127.0.0.1:1 max_fails=5; server 127.0.0.1:2 max_fails=5;")
    ph.healthSync()
    local before
    for i = 1, 10000 do
      p = update("u", "server 127.0.0.1:" .. (3 + i % 7) .. " max_fails=5; server 127.0.0.1:2 max_fails=5;")
      ph.reportFailure(p, 1)
      if i == 2000 then before = dict:free_space() end -- the log is at its 1 024 entries by then
    end
    assert.is_true(math.abs(dict:free_space() - before) < 4096, (before - dict:free_space()) .. " bytes grew")
  end)
end)
