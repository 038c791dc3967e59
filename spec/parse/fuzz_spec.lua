-- Robustness and speed of the parser: mutated bodies never make it raise, every rejection has a reason,
-- every acceptance is a sane spec; a body of MAX_SERVERS servers parses well under a second.
local up = require("dyups.parse.upstream")
local lexer = require("dyups.parse.lexer")

local SEEDS = {
  "server 127.0.0.1:8089;server 127.0.0.1:8088;",
  "server a.example weight=3 max_fails=5 fail_timeout=30s; server b.example weight=1 max_conns=10; server c.example backup; server d.example down;",
  "ip_hash;\nserver 10.0.0.1:80 weight=2;\nserver 10.0.0.2:80 down;\n",
  "hash $request_uri consistent; server [::1]:8080; server [2001:db8::2];",
  "least_conn; server 127.0.0.1:8088; server 127.0.0.1:8089; keepalive 16;",
  "random two least_conn; server unix:/tmp/a.sock; server 127.0.0.1;",
  "server 127.0.0.1:18088; keepalive 8; keepalive_timeout 30s; keepalive_requests 50;",
  "zone dyz 64k; server api.local:80 resolve; server _http._tcp.svc resolve service=http;",
  "# comment\r\n\tserver\t'127.0.0.1:1' \"weight=2\" ; # tail\r\n",
  "check interval=3000 rise=2 fall=5 timeout=1000 type=http;\ncheck_http_send \"HEAD / HTTP/1.0\\r\\n\\r\\n\";\ncheck_http_expect_alive http_2xx http_3xx;\nserver 1.2.3.4;",
  "hash ${arg_k}$cookie_x; server 10.1.1.1 max_fails=0 fail_timeout=1m30s500ms;",
  "server 10.0.0.1; server 10.0.0.2 backup; least_conn;",
}

-- bytes that matter to the grammar, plus anything
local SPECIAL = { ";", "{", "}", '"', "'", "\\", "#", "$", " ", "\n", "\r", "\t", "=", ":", "[", "]", ".", "0", "a" }

local random = math.random

local function random_byte()
  if random() < 0.7 then return SPECIAL[random(#SPECIAL)] end
  return string.char(random(0, 255))
end

local function split_tokens(s)
  local t = {}
  for w in s:gmatch("%S+") do t[#t + 1] = w end
  return t
end

local MUTATIONS = {
  function(s) -- insert a byte
    local i = random(0, #s)
    return s:sub(1, i) .. random_byte() .. s:sub(i + 1)
  end,
  function(s) -- delete a byte
    if #s == 0 then return s end
    local i = random(#s)
    return s:sub(1, i - 1) .. s:sub(i + 1)
  end,
  function(s) -- replace a byte
    if #s == 0 then return random_byte() end
    local i = random(#s)
    return s:sub(1, i - 1) .. random_byte() .. s:sub(i + 1)
  end,
  function(s) -- truncate
    return s:sub(1, random(0, #s))
  end,
  function(s) -- swap two blank-separated tokens
    local t = split_tokens(s)
    if #t < 2 then return s end
    local a, b = random(#t), random(#t)
    t[a], t[b] = t[b], t[a]
    return table.concat(t, random() < 0.5 and " " or "\n")
  end,
  function(s) -- shuffle all tokens
    local t = split_tokens(s)
    for i = #t, 2, -1 do
      local j = random(i)
      t[i], t[j] = t[j], t[i]
    end
    return table.concat(t, " ")
  end,
  function(s) -- duplicate a slice
    if #s == 0 then return s end
    local i = random(#s)
    local j = random(i, #s)
    return s:sub(1, j) .. s:sub(i, j) .. s:sub(j + 1)
  end,
  function(s) -- replace a number by an edge value
    local edges = { "0", "-1", "65536", "2147483648", "99999999999999999999", "", "1.5", "0x10" }
    return (s:gsub("%d+", function(d) if random() < 0.3 then return edges[random(#edges)] end end, 1))
  end,
}

local function mutate(s)
  for _ = 1, random(1, 4) do
    s = MUTATIONS[random(#MUTATIONS)](s)
  end
  return s
end

local KINDS = { ip = true, name = true, unix = true }
local METHODS = { round_robin = true, ip_hash = true, hash = true, least_conn = true, random = true }

local function check_spec(spec, body)
  local ctx = string.format("%q", body)
  assert(type(spec) == "table", ctx)
  assert(METHODS[spec.method], ctx)
  assert(#spec.servers >= 1 and #spec.servers <= up.MAX_SERVERS, ctx)
  local primary = 0
  for i, s in ipairs(spec.servers) do
    assert(s.index == i, ctx)
    assert(KINDS[s.kind], ctx)
    assert(type(s.addr) == "string" and #s.addr > 0, ctx)
    assert(type(s.host) == "string" and #s.host > 0, ctx)
    if s.kind == "unix" then assert(s.port == 0, ctx) else assert(s.port >= 1 and s.port <= 65535, ctx) end
    assert(s.weight >= 1 and s.weight == math.floor(s.weight), ctx)
    assert(s.maxFails >= 0 and s.maxConns >= 0 and s.failTimeout >= 0, ctx)
    if s.backup then
      assert(spec.method == "round_robin" or spec.method == "least_conn", ctx)
    else
      primary = primary + 1
    end
  end
  assert(primary >= 1, ctx)
end

describe("fuzz: parseBody on mutated bodies", function()
  it("never raises; every rejection is a non-empty reason, every acceptance a sane spec", function()
    math.randomseed(20240611)
    local accepted, refused = 0, 0
    local reasons = {}
    for _ = 1, 600 do
      for _, seed in ipairs(SEEDS) do
        local body = mutate(seed)
        local okcall, spec, err = pcall(up.parseBody, body)
        assert(okcall, "parseBody raised on " .. string.format("%q", body) .. ": " .. tostring(spec))
        if spec == nil then
          assert(type(err) == "string" and #err > 0, "no reason for " .. string.format("%q", body))
          assert(not err:find("\n"), "multi-line reason for " .. string.format("%q", body))
          refused = refused + 1
          reasons[err:gsub('".*"', '"..."')] = true
        else
          assert(err == nil)
          check_spec(spec, body)
          accepted = accepted + 1
        end
      end
    end
    -- the mutations exercise both outcomes and many different reasons
    assert.is_true(accepted > 500)
    assert.is_true(refused > 2000)
    local distinct = 0
    for _ in pairs(reasons) do distinct = distinct + 1 end
    assert.is_true(distinct > 30)
  end)

  it("never raises on random bytes", function()
    math.randomseed(7)
    for _ = 1, 2000 do
      local n = random(0, 80)
      local t = {}
      for i = 1, n do t[i] = random_byte() end
      local body = table.concat(t)
      local okcall, spec, err = pcall(up.parseBody, body)
      assert(okcall, "parseBody raised on " .. string.format("%q", body))
      assert(spec ~= nil or (type(err) == "string" and #err > 0))
      local okt, toks, terr = pcall(lexer.tokenize, body)
      assert(okt, "tokenize raised on " .. string.format("%q", body))
      assert(toks ~= nil or (type(terr) == "string" and #terr > 0))
    end
  end)
end)

describe("fuzz: parseUpstreamFile on mutated files", function()
  it("never raises, names the file in every error, and gives bodies that re-parse to the same spec", function()
    math.randomseed(99)
    local parts = {}
    for i, seed in ipairs(SEEDS) do
      parts[#parts + 1] = "upstream u" .. i .. " {\n" .. seed .. "\n}\n"
    end
    local file = "# header\n" .. table.concat(parts, "\n")
    local blocks = assert(up.parseUpstreamFile(file, "f.conf"))
    assert.equal(#SEEDS, #blocks)
    local accepted = 0
    for _ = 1, 3000 do
      local text = mutate(file)
      local okcall, res, err = pcall(up.parseUpstreamFile, text, "f.conf")
      assert(okcall, "parseUpstreamFile raised on " .. string.format("%q", text) .. ": " .. tostring(res))
      if res == nil then
        assert(type(err) == "string" and err:find("^f%.conf:%d+: ."), "bad error " .. tostring(err))
      else
        accepted = accepted + 1
        for _, b in ipairs(res) do
          local spec, perr = up.parseBody(b.body)
          assert(spec, "block body does not re-parse: " .. tostring(perr) .. " in " .. string.format("%q", b.body))
          assert.same(b.spec, spec)
        end
      end
    end
    assert.is_true(accepted > 100)
  end)
end)

describe("speed", function()
  local function big_body(n)
    local parts = {}
    for i = 1, n do
      parts[i] = string.format("server 10.%d.%d.%d:%d weight=%d max_fails=2 fail_timeout=5s;\n",
        math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256, 1024 + i % 60000, 1 + i % 10)
    end
    return "least_conn;\nkeepalive 32;\n" .. table.concat(parts)
  end

  it("parses a body of MAX_SERVERS servers well under a second", function()
    local body = big_body(up.MAX_SERVERS)
    local t0 = os.clock()
    local spec, err = up.parseBody(body)
    local elapsed = os.clock() - t0
    assert.is_nil(err)
    assert.equal(up.MAX_SERVERS, #spec.servers)
    assert.equal("10.0.39.16:11024", spec.servers[up.MAX_SERVERS].addr)
    assert.is_true(elapsed < 0.5, string.format("took %.3f s", elapsed))
  end)

  it("finds an error at the end of a big body quickly, with its line", function()
    local body = big_body(up.MAX_SERVERS - 1) .. "server 10.0.0.1 weight=0;\n"
    local t0 = os.clock()
    local spec, err = up.parseBody(body)
    assert.is_nil(spec)
    assert.equal('invalid weight "0" in server 10000 at line 10002', err)
    assert.is_true(os.clock() - t0 < 0.5)
  end)
end)
