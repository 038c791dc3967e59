-- The interface's router (dyups.http.router) and access gate (dyups.http.auth) on the fake ngx: the
-- whole URI as the resource, declared prefixes, token files and lists, roles, loopback mode, Host and
-- Origin checks, the per-client failure limit in the fake shared dict.
local fake = require("spec.helpers.fake_ngx")

describe("router", function()
  local router
  before_each(function()
    package.loaded["dyups.http.router"] = nil
    router = require("dyups.http.router")
  end)

  it("takes the whole URI at /", function()
    local segs, n = router.resource("/api/list", "/")
    assert.equal(2, n); assert.same({ "api", "list" }, segs)
    segs, n = router.resource("/upstream/x/", "/")
    assert.equal(2, n); assert.same({ "upstream", "x" }, segs)
    assert.equal(0, select(2, router.resource("/", "/")))
  end)

  it("cuts a declared prefix; anything outside is OUTSIDE", function()
    local segs, n = router.resource("/dyups/upstream/x", "/dyups/")
    assert.equal(2, n); assert.same({ "upstream", "x" }, segs)
    assert.equal(0, select(2, router.resource("/dyups/", "/dyups/")))
    assert.equal(0, select(2, router.resource("/dyups", "/dyups/")))
    for _, uri in ipairs({ "/list", "/upstream/x", "/dyupsx/list", "/DYUPS/list", "/" }) do
      assert.equal(router.OUTSIDE, select(2, router.resource(uri, "/dyups/")), uri)
    end
  end)

  it("guesses an undeclared prefix once", function()
    assert.is_nil(router.undeclaredPrefix({ "upstream", "x" }, 2))
    assert.is_nil(router.undeclaredPrefix({ "list" }, 1))
    assert.is_nil(router.undeclaredPrefix({ "a", "b" }, 2))
    assert.equal("/dyups/", router.undeclaredPrefix({ "dyups", "upstream", "x" }, 3))
    assert.is_nil(router.undeclaredPrefix({ "api", "list" }, 2))
  end)

  it("normalizes and checks interface() options", function()
    assert.equal("/", router.interfacePrefix(nil))
    assert.equal("/", router.interfacePrefix({}))
    assert.equal("/dyups/", router.interfacePrefix({ prefix = "/dyups" }))
    assert.equal("/a/b/", router.interfacePrefix({ prefix = "/a/b/" }))
    assert.has_error(function() router.interfacePrefix({ prefix = "dyups/" }) end)
    assert.has_error(function() router.interfacePrefix({ prefix = 3 }) end)
    assert.has_error(function() router.interfacePrefix({ prefx = "/x/" }) end)
    assert.has_error(function() router.interfacePrefix("/dyups/") end)
  end)
end)

describe("access gate", function()
  local auth, ngx
  local W = "write-token-0123456789abcdef"
  local R = "read-token-0123456789abcdef0"

  local function setup(options)
    fake.unload()
    ngx = fake.install()
    ngx.hmac_sha1 = function(key, data) return ngx.md5(key .. "\0" .. data) end
    local o = require("dyups.options")
    local opts = assert(o.validateOptions(options))
    o.setOptions(opts)
    auth = require("dyups.http.auth")
    assert(auth.configureAuth(opts))
  end

  local function req(over)
    local r = { method = "GET", client = "127.0.0.1", host = "127.0.0.1:8081" }
    for k, v in pairs(over or {}) do r[k] = v end
    return r
  end

  describe("token files", function()
    before_each(function() setup() end)

    it("reads TOKEN ROLE [NAME] lines with comments", function()
      local list = assert(auth.parseTokenFile("# comment\n\n  tok1 write ci  # trailing\ntok#2 read\r\n", "/t"))
      assert.equal(2, #list)
      assert.same({ token = "tok1", role = "write", name = "ci" }, list[1])
      assert.same({ token = "tok#2", role = "read", name = "line-4" }, list[2])
    end)

    it("names the file and line of a problem, never the token", function()
      for text, re in pairs({
        ["secret-1 admin\n"] = "/t:1: the role",
        ["\nsecret-1\n"] = "/t:2: expected",
        ["secret-1 read a b\n"] = "/t:1: expected",
        ["secret-1 read na/me\n"] = "/t:1: the name",
      }) do
        local ok, err = auth.parseTokenFile(text, "/t")
        assert.is_nil(ok)
        assert.matches(re, err, 1, true)
        assert.is_nil(err:find("secret-1", 1, true))
      end
    end)

    it("checks the inline list", function()
      assert.is_nil((auth.parseTokenList({ { token = "a b", role = "write" } })))
      assert.is_nil((auth.parseTokenList({ { token = "x", role = "admin" } })))
      assert.is_nil((auth.parseTokenList({ { token = "x", role = "read", extra = 1 } })))
      assert.is_nil((auth.parseTokenList({ token = "x", role = "read" })))
      local l = assert(auth.parseTokenList({ { token = "x", role = "read" } }))
      assert.equal("token-1", l[1].name)
    end)

    it("refuses duplicate tokens and empty lists; warns about short tokens without logging them", function()
      local o = require("dyups.options")
      local ok, err = auth.configureAuth(assert(o.validateOptions({ admin_tokens = {
        { token = "same-token-value", role = "read", name = "a" }, { token = "same-token-value", role = "write", name = "b" } } })))
      assert.is_nil(ok); assert.matches('"a" and "b" are the same token', err)
      ok = auth.configureAuth(assert(o.validateOptions({ admin_tokens = {} })))
      assert.is_nil(ok)
      assert.equal(1, (auth.configureAuth(assert(o.validateOptions({ admin_tokens = { { token = "tiny-tok", role = "read", name = "s" } } })))))
      local warned = false
      for _, l in ipairs(ngx._logs) do
        assert.is_nil(l.msg:find("tiny-tok", 1, true))
        if l.msg:find('admin token "s" is shorter', 1, true) then warned = true end
      end
      assert.is_true(warned)
    end)
  end)

  describe("with tokens", function()
    before_each(function()
      setup({ admin_tokens = { { token = W, role = "write", name = "ci" }, { token = R, role = "read", name = "dash" } },
        auth_fail_limit = 3, auth_fail_window = 60 })
    end)

    it("401 without a token or with a wrong one; roles decide writes", function()
      local who, r = auth.admit(req())
      assert.is_nil(who); assert.equal(401, r.status); assert.equal('Bearer realm="dyups"', r.authenticate)
      who, r = auth.admit(req({ authorization = "Bearer nope" }))
      assert.equal(401, r.status); assert.matches('error="invalid_token"', r.authenticate)
      who = assert(auth.admit(req({ authorization = "Bearer " .. R })))
      assert.same({ kind = "http", client = "127.0.0.1", token = "dash", role = "read" }, who)
      who, r = auth.admit(req({ method = "POST", authorization = "Bearer " .. R }))
      assert.equal(403, r.status); assert.matches('token "dash" has the read role', r.body)
      who = assert(auth.admit(req({ method = "DELETE", authorization = "bearer " .. W, client = "203.0.113.5", host = "x.example" })))
      assert.equal("ci", who.token); assert.equal("203.0.113.5", who.client)
    end)

    it("counts wrong tokens per client, refuses with 429 at the limit, logs it once, forgets after the window", function()
      local bad = req({ client = "203.0.113.7", authorization = "Bearer wrong" })
      for _ = 1, 3 do assert.equal(401, select(2, auth.admit(bad)).status) end
      local _, r = auth.admit(req({ client = "203.0.113.7", authorization = "Bearer " .. W }))
      assert.equal(429, r.status); assert.equal(60, r.retryAfter)
      assert.is_table((auth.admit(req({ client = "203.0.113.8", authorization = "Bearer " .. W }))))
      local warns = 0
      for _, l in ipairs(ngx._logs) do
        if l.level == ngx.WARN and l.msg:find("from 203.0.113.7", 1, true) then warns = warns + 1 end
        assert.is_nil(l.msg:find("wrong", 1, true))
      end
      assert.equal(1, warns)
      ngx._advance(61)
      assert.is_table((auth.admit(req({ client = "203.0.113.7", authorization = "Bearer " .. W }))))
    end)

    it("keys IPv6 clients by /64", function()
      assert.equal("v6:20010db800010002", auth.clientKey("2001:db8:1:2::5"))
      assert.equal(auth.clientKey("2001:db8:1:2::5"), auth.clientKey("2001:db8:1:2:ffff::1"))
      assert.equal("10.0.0.1", auth.clientKey("10.0.0.1"))
    end)
  end)

  describe("without tokens", function()
    it("loopback mode: loopback clients and Hosts only", function()
      setup({ interface_hosts = { "Dyups.Internal" } })
      for _, c in ipairs({ "127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1", "unix:" }) do
        assert.is_table((auth.admit(req({ client = c }))), c)
      end
      for _, c in ipairs({ "203.0.113.5", "::2", "10.0.0.1", "::ffff:10.0.0.1", "" }) do
        local _, r = auth.admit(req({ client = c }))
        assert.equal(403, r.status, c); assert.matches("admin_tokens_file", r.body)
      end
      for _, h in ipairs({ "localhost", "LOCALHOST:8081", "a.localhost", "127.0.0.1", "[::1]:8081", "localhost.",
        "dyups.internal:8081" }) do
        assert.is_table((auth.admit(req({ host = h }))), h)
      end
      for _, h in ipairs({ "evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "[::2]", "10.0.0.1:8081", "" }) do
        local _, r = auth.admit(req({ host = h }))
        assert.equal(403, r.status, h); assert.matches("interface_hosts", r.body)
      end
      assert.is_table((auth.admit(req({ host = nil }))))
    end)

    it("any mode: everyone", function()
      setup({ interface_access = "any" })
      assert.is_table((auth.admit(req({ client = "203.0.113.5", host = "x.example", method = "POST" }))))
    end)

    it("cross-site writes are refused in every mode; reads and own-origin writes pass", function()
      setup()
      local host = "127.0.0.1:8081"
      for _, o in ipairs({ "http://evil.example", "null", "http://127.0.0.1:8082", "http://localhost:8081", "file://" }) do
        local _, r = auth.admit(req({ method = "POST", origin = o, host = host }))
        assert.equal(403, r.status, o); assert.matches("cross%-site", r.body)
      end
      local _, r = auth.admit(req({ method = "DELETE", fetchSite = "cross-site" }))
      assert.equal(403, r.status)
      assert.is_table((auth.admit(req({ method = "POST", origin = "http://127.0.0.1:8081", host = host }))))
      assert.is_table((auth.admit(req({ method = "POST", fetchSite = "same-origin" }))))
      assert.is_table((auth.admit(req({ method = "GET", origin = "http://evil.example" }))))
      setup({ interface_access = "any" })
      assert.is_table((auth.admit(req({ method = "POST", origin = "https://dyups.example", host = "dyups.example" }))))
      assert.is_table((auth.admit(req({ method = "POST", origin = "http://dyups.example", host = "dyups.example:80" }))))
      _, r = auth.admit(req({ method = "POST", origin = "https://dyups.example", host = "dyups.example:8443" }))
      assert.equal(403, r.status)
    end)
  end)
end)
