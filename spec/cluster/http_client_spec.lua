-- The cosocket HTTP/1.1 client (dyups.cluster.http_client) on scripted fake sockets: Content-Length,
-- chunked (split at every awkward point, extensions, trailers), close-delimited bodies, 1xx, the keepalive
-- decision, a pooled connection found closed (retried once), timeouts that resume a stream, bad framing.
local fake = require("spec.helpers.fake_ngx")

local sockets
--- a fake cosocket fed by `script`: strings are what receiveany returns next (cut to its max), { timeout = true }
--- a read timeout, { closed = true } (or the end of the script) a closed connection
local function sock(script, opts)
  opts = opts or {}
  local s = { sent = {}, closed = false, pooled = false, script = script }
  function s:settimeouts(c, w, r) self.timeouts = { c, w, r } end
  function s:connect(host, port)
    self.host, self.port = host, port
    if opts.refuse then return nil, "connection refused" end
    return 1
  end
  function s:getreusedtimes() return opts.reused or 0 end
  function s:send(data)
    if opts.send_fails then return nil, "broken pipe" end
    self.sent[#self.sent + 1] = data
    return #data
  end
  function s:receiveany(max)
    local c = table.remove(self.script, 1)
    if c == nil then return nil, "closed" end
    if type(c) == "table" then return nil, c.timeout and "timeout" or "closed" end
    if #c > max then table.insert(self.script, 1, c:sub(max + 1)); c = c:sub(1, max) end
    return c
  end
  function s:setkeepalive() self.pooled = true; return 1 end
  function s:close() self.closed = true; return 1 end
  return s
end

local function install(...)
  sockets = { ... }
  local all = { ... }
  ngx.socket = { tcp = function() return assert(table.remove(sockets, 1), "no more fake sockets") end }
  return all
end

--- splits s into pieces of n bytes
local function pieces(s, n)
  local out = {}
  for i = 1, #s, n do out[#out + 1] = s:sub(i, i + n - 1) end
  return out
end

local target = { host = "127.0.0.1", port = 2379 }
local function req(extra)
  local r = { method = "POST", path = "/v3/kv/range", body = "{}", connectTimeout = 100, sendTimeout = 200, readTimeout = 300 }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

describe("http client", function()
  local http
  before_each(function()
    fake.unload()
    fake.install()
    http = require("dyups.cluster.http_client")
  end)

  it("sends an HTTP/1.1 request and reads a Content-Length body cut into 1-byte pieces; pools the connection", function()
    local answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nX-A: 1\r\nx-a: 2\r\n\r\n{\"ok\":true}"
    local s = install(sock(pieces(answer, 1)))[1]
    local res, err = http.request(target, req({ headers = { Authorization = "tok" } }))
    assert.is_nil(err)
    assert.equal(200, res.status)
    assert.equal('{"ok":true}', res.body)
    assert.equal("application/json", res.headers["content-type"])
    assert.equal("1, 2", res.headers["x-a"])
    assert.is_true(s.pooled)
    assert.same({ 100, 200, 300 }, s.timeouts)
    local text = table.concat(s.sent)
    assert.matches("^POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent%-Length: 2\r\n", text)
    assert.matches("Authorization: tok\r\n", text)
    assert.matches("\r\n\r\n{}$", text)
  end)

  it("decodes a chunked body whatever the cuts, with chunk extensions and trailers", function()
    local body = "5;ext=1\r\nhello\r\n1\r\n \r\nb\r\nworld, etcd\r\n0\r\nX-Trailer: t\r\n\r\n"
    local answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" .. body
    for _, n in ipairs({ 1, 2, 3, 7, 1000 }) do
      local s = install(sock(pieces(answer, n)))[1]
      local res, err = http.request(target, req())
      assert.is_nil(err)
      assert.equal("hello world, etcd", res.body)
      assert.is_true(s.pooled)
    end
  end)

  it("reads a body delimited by the end of the connection, and never pools that connection", function()
    local s = install(sock({ "HTTP/1.0 200 OK\r\n\r\nabc", "def" }))[1]
    local res = http.request(target, req())
    assert.equal("abcdef", res.body)
    assert.is_false(s.pooled)
    assert.is_true(s.closed)
  end)

  it("does not pool a connection the server closes (Connection: close) or when asked not to", function()
    local s = install(sock({ "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" }))[1]
    assert.equal("", http.request(target, req()).body)
    assert.is_false(s.pooled)
    s = install(sock({ "HTTP/1.1 204 No Content\r\n\r\n" }))[1]
    local res = http.request(target, req({ keepalive = false }))
    assert.equal(204, res.status)
    assert.is_false(s.pooled)
    assert.matches("Connection: close\r\n", table.concat(s.sent))
  end)

  it("skips 1xx answers", function()
    install(sock({ "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok" }))
    local res = http.request(target, req())
    assert.equal(201, res.status)
    assert.equal("ok", res.body)
  end)

  it("a refused connection: nothing was sent", function()
    install(sock({}, { refuse = true }))
    local res, err, sent = http.request(target, req())
    assert.is_nil(res)
    assert.equal("cannot connect to 127.0.0.1:2379: connection refused", err)
    assert.is_false(sent)
  end)

  it("a pooled connection that the server had closed is retried once on a new one", function()
    local stale = sock({ { closed = true } }, { reused = 3 })
    local fresh = sock({ "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx" })
    install(stale, fresh)
    local res, err = http.request(target, req())
    assert.is_nil(err)
    assert.equal("x", res.body)
    assert.is_true(stale.closed)
  end)

  it("no answer on a new connection, or a timeout: failed, and the request may have been processed", function()
    install(sock({ { closed = true } }))
    local res, err, sent = http.request(target, req())
    assert.is_nil(res)
    assert.matches("no answer from 127.0.0.1:2379: closed", err)
    assert.is_true(sent)
    install(sock({ { timeout = true } }, { reused = 1 }))
    res, err, sent = http.request(target, req())
    assert.is_nil(res)
    assert.matches("timeout", err)
    assert.is_true(sent)
  end)

  it("refuses bad framing and oversized bodies", function()
    install(sock({ "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" }))
    local _, err = http.request(target, req())
    assert.matches('bad chunk size line "zz"', err)
    install(sock({ "SSH-2.0-OpenSSH\r\n" }))
    _, err = http.request(target, req())
    assert.matches("bad status line", err)
    install(sock({ "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345" }))
    _, err = http.request(target, req())
    assert.matches("connection closed before the end of the body", err)
    install(sock({ "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" .. string.rep("x", 100) }))
    _, err = http.request(target, req({ maxBody = 10 }))
    assert.matches("larger than 10 bytes", err)
    install(sock({ "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n" }))
    _, err = http.request(target, req())
    assert.matches('bad Content%-Length "%-1"', err)
  end)

  it("a stream: pieces as they come, a timeout in the middle of a chunk resumes where it stopped", function()
    local s = install(sock({
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
      "a\r\n01234", { timeout = true }, "56789\r", { timeout = true }, "\n3\r\nab", "c\r\n", { timeout = true }, "0\r\n\r\n",
    }))[1]
    local st = assert(http.open(target, req()))
    assert.equal(200, st.status)
    local got, timeouts = {}, 0
    for _ = 1, 20 do
      local data, err = http.readStream(st)
      if data == nil then
        assert.equal("timeout", err)
        timeouts = timeouts + 1
      elseif data == "" then
        break
      else
        got[#got + 1] = data
      end
    end
    assert.equal("0123456789abc", table.concat(got))
    assert.equal(3, timeouts)
    assert.is_false(s.pooled) -- streams are never pooled
    http.closeStream(st)
    assert.is_true(s.closed)
  end)

  it("parses chunk size lines", function()
    assert.equal(26, http.parseChunkSize("1a"))
    assert.equal(255, http.parseChunkSize("FF;name=value"))
    assert.equal(0, http.parseChunkSize("0"))
    assert.is_nil(http.parseChunkSize(""))
    assert.is_nil(http.parseChunkSize("g1"))
    assert.is_nil(http.parseChunkSize("1234567890abc"))
  end)
end)
