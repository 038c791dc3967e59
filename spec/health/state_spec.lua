-- rise/fall counting (dyups.health.state) as the check module counts, the state encoding, and the check
-- configuration's identity (dyups.health.config).
local fake = require("spec.helpers.fake_ngx")

describe("health state", function()
  local st_mod
  before_each(function()
    fake.unload()
    fake.install()
    st_mod = require("dyups.health.state")
  end)

  it("default_down=true: down until `rise` successes in a row, then up; one transition reported", function()
    local st = st_mod.newState(true, 100)
    assert.is_true(st.down)
    assert.is_nil(st_mod.countProbe(st, true, "", 2, 3, 101))
    assert.same({ true, 1, 0 }, { st.down, st.rise, st.fall })
    assert.equal("up", st_mod.countProbe(st, true, "", 2, 3, 102))
    assert.same({ false, 2, 0, 102 }, { st.down, st.rise, st.fall, st.since })
    assert.is_nil(st_mod.countProbe(st, true, "", 2, 3, 103))
    assert.equal(3, st.rise) -- counters grow without bound
  end)

  it("down at the `fall`-th failure in a row; a success in between starts again", function()
    local st = st_mod.newState(false, 100)
    assert.is_nil(st_mod.countProbe(st, false, "timeout", 2, 3, 101))
    assert.is_nil(st_mod.countProbe(st, false, "timeout", 2, 3, 102))
    assert.is_nil(st_mod.countProbe(st, true, "", 2, 3, 103))
    assert.same({ false, 1, 0 }, { st.down, st.rise, st.fall })
    assert.is_nil(st_mod.countProbe(st, false, "refused", 2, 3, 104))
    assert.is_nil(st_mod.countProbe(st, false, "refused", 2, 3, 105))
    assert.equal("down", st_mod.countProbe(st, false, "refused", 2, 3, 106))
    assert.same({ true, 0, 3, 106, "refused", 6, 5 }, { st.down, st.rise, st.fall, st.since, st.lastError, st.probes, st.failures })
    assert.is_nil(st_mod.countProbe(st, false, "refused", 2, 3, 107))
    assert.equal(4, st.fall)
    -- rise=1: one success brings it back
    assert.equal("up", st_mod.countProbe(st, true, "", 1, 3, 108))
  end)

  it("encodes and decodes (error text with any bytes)", function()
    local st = st_mod.newState(true, 1764363343.125)
    st_mod.countProbe(st, false, "check protocol http error: status 500 | x\nnext", 2, 1, 1764363344.5)
    local back = st_mod.decodeState(st_mod.encodeState(st))
    assert.same({ true, 0, 1, 1764363343.125, 1764363344.5, 1, 1, "check protocol http error: status 500 | x next" },
      { back.down, back.rise, back.fall, back.since, back.last, back.probes, back.failures, back.lastError })
    assert.is_nil(st_mod.decodeState("garbage"))
  end)
end)

describe("check configuration", function()
  local cfg, up
  before_each(function()
    fake.unload()
    local ngx = fake.install()
    ngx.md5 = function(s) return string.format("%08x%08x", ngx.crc32_short(s), ngx.crc32_short(s .. "#")) end
    cfg = require("dyups.health.config")
    up = require("dyups.parse.upstream")
  end)
  local function check(body) return cfg.resolveCheck(assert(up.parseBody(body .. " server 1.2.3.4;")).check) end

  it("fills in the module's defaults", function()
    local c = check("check type=http;")
    assert.same({ "http", 30000, 2, 5, 1000, true, 0, "GET / HTTP/1.0\r\n\r\n", 6, 1 },
      { c.type, c.interval, c.rise, c.fall, c.timeout, c.defaultDown, c.port, c.send, c.mask, c.keepaliveRequests })
    assert.equal("GET / HTTP/1.0\r\n\r\n", check('check type=http; check_http_send "";').send)
  end)

  it("expect masks: status classes, and nothing outside 200..599", function()
    local c = check("check type=http; check_http_expect_alive http_4xx http_5xx;")
    assert.same({ false, false, true, true, false }, { cfg.statusAlive(c, 200), cfg.statusAlive(c, 302), cfg.statusAlive(c, 404), cfg.statusAlive(c, 500), cfg.statusAlive(c, 600) })
    c = check("check type=http;")
    assert.same({ true, true, false, false, false }, { cfg.statusAlive(c, 204), cfg.statusAlive(c, 399), cfg.statusAlive(c, 404), cfg.statusAlive(c, 503), cfg.statusAlive(c, 199) })
  end)

  it("different configurations never share a state; default_down is not part of the identity", function()
    local base = check("check interval=1000 type=http;")
    local ids = {
      check("check interval=1000 type=http; check_http_expect_alive http_4xx;").id,
      check("check interval=1000 type=tcp;").id,
      check("check interval=2000 type=http;").id,
      check("check interval=1000 type=http rise=3;").id,
      check("check interval=1000 type=http port=81;").id,
      check('check interval=1000 type=http; check_http_send "GET /x HTTP/1.0\\r\\n\\r\\n";').id,
      check("check interval=1000 type=http; check_keepalive_requests 5;").id,
    }
    for _, id in ipairs(ids) do assert.not_equal(base.id, id) end
    assert.equal(base.id, check("check interval=1000 type=http default_down=false;").id)
    assert.equal(base.id, check('check interval=1000 type=http; check_http_send "GET / HTTP/1.0\\r\\n\\r\\n";').id)
    assert.equal(base.id .. "/127.0.0.1:80", cfg.stateId(base, "127.0.0.1:80"))
  end)
end)
