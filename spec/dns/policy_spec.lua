-- The pure rules of DNS re-resolution (dyups.dns.policy): TTL clamp and jitter, back-off, endpoint-set
-- comparison, SRV answers, the serve-stale state machine. Plain LuaJIT, no ngx.
local policy = require("dyups.dns.policy")

local TYPE_SRV = 33
local LIM = { minTtl = 1, maxTtl = 60, staleTtl = 10 }

local function server(over)
  local s = { addr = "api.test:8080", host = "api.test", port = 8080, kind = "name", weight = 1, maxFails = 1,
    failTimeout = 10, maxConns = 0, backup = false, down = false, resolve = true, index = 1 }
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end

local function hosts(eps)
  local out = {}
  for i, e in ipairs(eps) do out[i] = e.host .. ":" .. e.port .. (e.weight and ("/" .. e.weight) or "") end
  return table.concat(out, " ")
end

describe("clampTtl", function()
  it("keeps a TTL inside [min, max]", function()
    assert.equal(30, policy.clampTtl(30, 1, 60))
  end)
  it("raises a short TTL to min and lowers a long one to max", function()
    assert.equal(5, policy.clampTtl(0, 5, 60))
    assert.equal(60, policy.clampTtl(86400, 5, 60))
  end)
  it("treats a missing or negative TTL as min", function()
    assert.equal(5, policy.clampTtl(nil, 5, 60))
    assert.equal(5, policy.clampTtl(-3, 5, 60))
    assert.equal(5, policy.clampTtl(0 / 0, 5, 60))
  end)
end)

describe("refreshDelay", function()
  it("is the clamped TTL when the jitter is 0", function()
    assert.equal(30, policy.refreshDelay(30, 1, 60, 0))
    assert.equal(60, policy.refreshDelay(600, 1, 60, 0))
  end)
  it("refreshes up to 10% early, never late", function()
    for _, r in ipairs({ 0, 0.25, 0.5, 0.999 }) do
      local d = policy.refreshDelay(100, 1, 3600, r)
      assert.is_true(d <= 100 and d > 90, tostring(d))
    end
    assert.is_true(policy.refreshDelay(100, 1, 3600, 0.2) > policy.refreshDelay(100, 1, 3600, 0.8))
  end)
  it("never goes below the 1 s floor, whatever dns_min_ttl and the TTL say", function()
    assert.equal(policy.FLOOR_DELAY, policy.refreshDelay(0, 0, 60, 0.9))
    assert.equal(1, policy.refreshDelay(1, 1, 60, 0.9))
  end)
end)

describe("retryDelay", function()
  it("doubles from max(min, 1) per consecutive failure", function()
    assert.equal(2, policy.retryDelay(1, 2, 60, 0))
    assert.equal(4, policy.retryDelay(2, 2, 60, 0))
    assert.equal(8, policy.retryDelay(3, 2, 60, 0))
    assert.equal(1, policy.retryDelay(1, 0, 60, 0))
  end)
  it("is capped by dns_max_ttl and by MAX_RETRY", function()
    assert.equal(2, policy.retryDelay(10, 1, 2, 0))
    assert.equal(policy.MAX_RETRY, policy.retryDelay(50, 1, 3600, 0))
  end)
  it("adds up to 10% jitter", function()
    local d = policy.retryDelay(1, 10, 60, 0.5)
    assert.is_true(d > 10 and d <= 11, tostring(d))
  end)
end)

describe("endpoint sets", function()
  local a = { { host = "10.0.0.2", port = 80 }, { host = "10.0.0.1", port = 80 } }
  local b = { { host = "10.0.0.1", port = 80 }, { host = "10.0.0.2", port = 80 } }
  it("are equal regardless of order and duplicates", function()
    assert.is_true(policy.sameEndpoints(a, b))
    assert.is_true(policy.sameEndpoints(a, { b[1], b[2], b[1] }))
  end)
  it("differ by address, port or weight", function()
    assert.is_false(policy.sameEndpoints(a, { { host = "10.0.0.1", port = 80 } }))
    assert.is_false(policy.sameEndpoints(a, { { host = "10.0.0.1", port = 80 }, { host = "10.0.0.3", port = 80 } }))
    assert.is_false(policy.sameEndpoints(a, { { host = "10.0.0.1", port = 80 }, { host = "10.0.0.2", port = 81 } }))
    assert.is_false(policy.sameEndpoints({ { host = "h", port = 1, weight = 2 } }, { { host = "h", port = 1, weight = 3 } }))
  end)
  it("treat nil as empty", function()
    assert.is_true(policy.sameEndpoints(nil, {}))
    assert.is_false(policy.sameEndpoints(nil, a))
  end)
  it("sort to one stable order without duplicates", function()
    local s = policy.sortedEndpoints({ { host = "10.0.0.2", port = 80 }, { host = "10.0.0.1", port = 81 },
      { host = "10.0.0.1", port = 80 }, { host = "10.0.0.2", port = 80 } })
    assert.equal("10.0.0.1:80 10.0.0.1:81 10.0.0.2:80", hosts(s))
  end)
end)

describe("srvName and queryKey", function()
  it("build _service._tcp.NAME like nginx, or take a dotted prefix as written", function()
    assert.equal("_http._tcp.api.test", policy.srvName("API.test", "http"))
    assert.equal("_sip._udp.api.test", policy.srvName("api.test", "_sip._udp"))
  end)
  it("key A queries by host and SRV queries by SRV name", function()
    assert.equal("a:api.test", policy.queryKey(server({ host = "Api.Test" })))
    assert.equal("srv:_http._tcp.api.test", policy.queryKey(server({ service = "http" })))
  end)
end)

describe("srvTargets", function()
  it("keeps only the best priority, with port, weight (0 counts as 1) and the smallest TTL", function()
    local targets, ttl = policy.srvTargets({
      { type = TYPE_SRV, priority = 10, weight = 5, port = 8080, target = "B1.test", ttl = 30 },
      { type = TYPE_SRV, priority = 10, weight = 0, port = 8081, target = "b2.test", ttl = 20 },
      { type = TYPE_SRV, priority = 20, weight = 9, port = 9090, target = "backup.test", ttl = 5 },
      { type = 5, cname = "x" },
    }, TYPE_SRV)
    assert.equal(2, #targets)
    assert.same({ target = "b1.test", port = 8080, weight = 5 }, targets[1])
    assert.same({ target = "b2.test", port = 8081, weight = 1 }, targets[2])
    assert.equal(20, ttl)
  end)
  it("drops the '.' target (service not offered) and records without a port", function()
    local targets = policy.srvTargets({
      { type = TYPE_SRV, priority = 0, weight = 1, port = 0, target = ".", ttl = 30 },
    }, TYPE_SRV)
    assert.equal(0, #targets)
  end)
  it("answers nothing for an empty answer", function()
    local targets, ttl = policy.srvTargets({}, TYPE_SRV)
    assert.equal(0, #targets)
    assert.is_nil(ttl)
  end)
end)

describe("serverEndpoints", function()
  it("gives nothing to say for a never-resolved state (the record keeps what it has)", function()
    assert.is_nil(policy.serverEndpoints(server(), nil))
    assert.is_nil(policy.serverEndpoints(server(), policy.newState("api.test", "a", 0)))
  end)
  it("gives A answers the server's port", function()
    local st = policy.newState("api.test", "a", 0, { { host = "10.0.0.2", port = 0 }, { host = "10.0.0.1", port = 0 } })
    assert.equal("10.0.0.1:8080 10.0.0.2:8080", hosts(policy.serverEndpoints(server(), st)))
  end)
  it("gives SRV answers their port and weight, unless the server sets its own weight", function()
    local st = policy.newState("_http._tcp.api.test", "srv", 0, { { host = "10.0.0.1", port = 81, weight = 7 } })
    assert.equal("10.0.0.1:81/7", hosts(policy.serverEndpoints(server({ service = "http" }), st)))
    assert.equal("10.0.0.1:81/3", hosts(policy.serverEndpoints(server({ service = "http", weight = 3 }), st)))
  end)
  it("gives no endpoints once the stale addresses expired", function()
    local st = policy.newState("api.test", "a", 0, { { host = "10.0.0.1", port = 0 } })
    st.expired = true
    assert.same({}, policy.serverEndpoints(server(), st))
  end)
end)

describe("the serve-stale state machine", function()
  local good = { { host = "10.0.0.1", port = 0 } }
  local other = { { host = "10.0.0.9", port = 0 } }

  it("first answer: resolved, next refresh at the clamped TTL", function()
    local st = policy.newState("api.test", "a", 100)
    assert.equal("resolved", policy.onAnswer(st, good, 30, 100, LIM, 0))
    assert.equal(130, st.next)
    assert.equal(100, st.at)
    assert.equal(30, st.ttl)
  end)

  it("same answer: none; other answer: changed", function()
    local st = policy.newState("api.test", "a", 100)
    policy.onAnswer(st, good, 30, 100, LIM, 0)
    assert.equal("none", policy.onAnswer(st, good, 30, 130, LIM, 0))
    assert.equal("changed", policy.onAnswer(st, other, 30, 160, LIM, 0))
    assert.equal("10.0.0.9", st.eps[1].host)
  end)

  it("failures keep the last good addresses, stale since the first failure, logged once per change", function()
    local st = policy.newState("api.test", "a", 100)
    policy.onAnswer(st, good, 1, 100, LIM, 0)
    assert.equal("failing", policy.onFailure(st, "timeout", 101, LIM, 0))
    assert.equal(101, st.stale)
    assert.equal("none", policy.onFailure(st, "timeout", 102, LIM, 0))
    assert.equal("error-changed", policy.onFailure(st, "nxdomain", 104, LIM, 0))
    assert.equal(101, st.stale)
    assert.equal(3, st.fails)
    assert.equal("10.0.0.1", policy.serverEndpoints(server(), st)[1].host)
  end)

  it("retries no later than the stale deadline, and expires the addresses there", function()
    local lim = { minTtl = 1, maxTtl = 60, staleTtl = 5 }
    local st = policy.newState("api.test", "a", 0)
    policy.onAnswer(st, good, 1, 0, lim, 0)
    policy.onFailure(st, "timeout", 1, lim, 0)     -- stale since 1, deadline 6
    policy.onFailure(st, "timeout", 2, lim, 0)     -- retry in 2
    policy.onFailure(st, "timeout", 4, lim, 0)     -- retry in 4 -> capped to the deadline
    assert.equal(6, st.next)
    assert.equal("expired", policy.onFailure(st, "timeout", 6, lim, 0))
    assert.is_true(st.expired)
    assert.same({}, policy.serverEndpoints(server(), st))
    -- expired is final until an answer: further failures change nothing
    assert.equal("none", policy.onFailure(st, "timeout", 8, lim, 0))
    assert.equal("recovered", policy.onAnswer(st, good, 1, 9, lim, 0))
    assert.is_nil(st.expired)
    assert.is_nil(st.stale)
    assert.equal(0, st.fails)
    assert.equal("10.0.0.1", policy.serverEndpoints(server(), st)[1].host)
  end)

  it("a never-resolved name that fails stays unresolved (unavailable), with no stale time", function()
    local st = policy.newState("api.test", "a", 0)
    assert.equal("failing", policy.onFailure(st, "nxdomain", 0, LIM, 0))
    assert.is_nil(st.stale)
    assert.is_nil(policy.serverEndpoints(server(), st))
    assert.equal(1, st.next)
  end)

  it("a state seeded from a record reports a differing first answer as a change, an equal one as none", function()
    local st = policy.newState("api.test", "a", 0, good)
    assert.equal("none", policy.onAnswer(st, good, 1, 0, LIM, 0))
    local st2 = policy.newState("api.test", "a", 0, good)
    assert.equal("changed", policy.onAnswer(st2, other, 1, 0, LIM, 0))
  end)

  it("a state seeded from a record's endpoints serves them stale when DNS fails", function()
    local st = policy.newState("api.test", "a", 0, good)
    assert.equal("failing", policy.onFailure(st, "timeout", 0, LIM, 0))
    assert.equal(0, st.stale)
    assert.equal("10.0.0.1", policy.serverEndpoints(server(), st)[1].host)
  end)
end)
