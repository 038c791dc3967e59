-- renderBody (dyups.parse.render): render -> parse is the identity on specs. Every JSON write of the API is a
-- rendered spec parsed again, so this is what guarantees that a per-server change changes only that server.
local up = require("dyups.parse.upstream")
local render = require("dyups.parse.render")

local function parse(body)
  local spec, err = up.parseBody(body)
  assert(spec, "expected " .. string.format("%q", body) .. " to parse, got: " .. tostring(err))
  return spec
end

local function identity(body)
  local spec = parse(body)
  local text = render.renderBody(spec)
  local again, err = up.parseBody(text)
  assert(again, "the rendering of " .. string.format("%q", body) .. " does not parse: " .. tostring(err) .. "\n" .. text)
  assert.same(spec, again)
  -- and rendering is stable: the rendering of the rendering is the same text
  assert.equal(text, render.renderBody(again))
  return text
end

describe("render: words and times", function()
  it("leaves plain words bare and quotes the rest so the tokenizer reads them back", function()
    assert.equal("127.0.0.1:80", render.word("127.0.0.1:80"))
    assert.equal("[::1]:80", render.word("[::1]:80"))
    assert.equal("$request_uri", render.word("$request_uri"))
    assert.equal('"${arg_a}x"', render.word("${arg_a}x"))
    assert.equal('""', render.word(""))
    assert.equal('"a b"', render.word("a b"))
    assert.equal('"#x"', render.word("#x"))
    assert.equal('"a\\"b\\\\c\\n\\r\\t;"', render.word('a"b\\c\n\r\t;'))
  end)

  it("renders whole seconds as s and the rest as ms", function()
    assert.equal("30s", render.renderSeconds(30))
    assert.equal("0s", render.renderSeconds(0))
    assert.equal("1500ms", render.renderSeconds(1.5))
    assert.equal("1234ms", render.renderSeconds(1234 / 1000))
    assert.equal("1ms", render.renderSeconds(0.001))
  end)
end)

describe("render -> parse is the identity on specs", function()
  it("for every directive form", function()
    local bodies = {
      "server 127.0.0.1:8089;server 127.0.0.1:8088;",
      "server a.example weight=3 max_fails=5 fail_timeout=30s; server b.example weight=1 max_conns=10; server c.example backup; server d.example down;",
      "ip_hash;\nserver 10.0.0.1:80 weight=2;\nserver 10.0.0.2:80 down;\n",
      "hash $request_uri consistent; server [::1]:8080; server [2001:db8::2];",
      "hash ${arg_k}$cookie_x; server 10.1.1.1 max_fails=0 fail_timeout=1m30s500ms;",
      "least_conn; server 127.0.0.1:8088; server 127.0.0.1:8089; keepalive 16;",
      "random two least_conn; server unix:/tmp/a.sock; server 127.0.0.1;",
      "random; server 10.0.0.1 drain; server 10.0.0.2;",
      "server 127.0.0.1:18088; keepalive 8; keepalive_timeout 30s; keepalive_requests 50;",
      "server 127.0.0.1:18088; keepalive_timeout 1500ms;",
      "zone dyz 64k; server api.local:80 resolve; server svc.local resolve service=http;",
      "# comment\r\n\tserver\t'127.0.0.1:1' \"weight=2\" ; # tail\r\n",
      "check interval=3000 rise=2 fall=5 timeout=1000 type=http;\ncheck_http_send \"HEAD / HTTP/1.0\\r\\n\\r\\n\";\ncheck_http_expect_alive http_2xx http_3xx;\nserver 1.2.3.4;",
      "check type=tcp default_down=false port=8080; check_keepalive_requests 3; server 1.2.3.4;",
      "check type=ssl_hello; check_http_send \"\"; server 1.2.3.4;",
      "server 10.0.0.1; server 10.0.0.2 backup drain; least_conn;",
      "server \"unix:/tmp/a b;c#d\\\"e\" weight=2;",
      "hash \"a b\\\\c\"; server 10.0.0.1;",
      "server 10.0.0.1 weight=2147483647 max_fails=0 max_conns=2147483647 fail_timeout=0;",
      "server 10.0.0.1 fail_timeout=1w2d3h4m5s6ms;",
    }
    for _, b in ipairs(bodies) do identity(b) end
  end)

  it("keeps every server parameter: drain, backup and down together", function()
    local text = identity("server 10.0.0.1:80 weight=5 max_fails=3 fail_timeout=45s max_conns=7 backup down drain; server 10.0.0.2;")
    assert.equal("server 10.0.0.1:80 weight=5 max_fails=3 fail_timeout=45s max_conns=7 backup down drain;\nserver 10.0.0.2;\n", text)
    assert.is_true(parse(text).servers[1].drain)
    assert.is_nil(parse(text).servers[2].drain)
  end)

  it("on generated bodies (every combination of parameters, methods and checks)", function()
    math.randomseed(1717)
    local random = math.random
    local addrs = { "10.0.0.%d:%d", "[2001:db8::%d]:%d", "host%d.example:%d", "unix:/run/s%d-%d.sock" }
    local methods = { "", "least_conn;", "ip_hash;", "hash $remote_addr;", "hash $uri consistent;", "random;", "random two;" }
    local times = { "1", "10s", "1500ms", "2m", "1h30m", "0", "999ms" }
    local checks = {
      "", "check interval=1000 type=http; check_http_send \"GET /\\r\\n\\r\\n\"; check_http_expect_alive http_2xx;",
      "check type=tcp rise=1 fall=1 timeout=200 default_down=false;", "check type=mysql port=3306; check_keepalive_requests 10;",
    }
    local checked = 0
    for n = 1, 400 do
      local method = methods[random(#methods)]
      local backupOk = method == "" or method == "least_conn;"
      local lines = { method }
      local nservers = random(1, 6)
      for i = 1, nservers do
        local kind = random(#addrs)
        local addr = string.format(addrs[kind], random(1, 250), random(1, 65535))
        local p = { "server", addr }
        if random() < 0.5 then p[#p + 1] = "weight=" .. random(1, 100) end
        if random() < 0.3 then p[#p + 1] = "max_fails=" .. random(0, 10) end
        if random() < 0.3 then p[#p + 1] = "fail_timeout=" .. times[random(#times)] end
        if random() < 0.3 then p[#p + 1] = "max_conns=" .. random(0, 1000) end
        if i > 1 and backupOk and random() < 0.3 then p[#p + 1] = "backup" end
        if random() < 0.2 then p[#p + 1] = "down" end
        if random() < 0.2 then p[#p + 1] = "drain" end
        if kind == 3 and random() < 0.5 then p[#p + 1] = "resolve" end
        lines[#lines + 1] = table.concat(p, " ") .. ";"
      end
      if random() < 0.3 then lines[#lines + 1] = "keepalive " .. random(1, 64) .. ";" end
      if random() < 0.2 then lines[#lines + 1] = "keepalive_timeout " .. times[random(#times)] .. ";" end
      if random() < 0.2 then lines[#lines + 1] = "keepalive_requests " .. random(0, 5000) .. ";" end
      if random() < 0.2 then lines[#lines + 1] = "zone z" .. n .. " 64k;" end
      lines[#lines + 1] = checks[random(#checks)]
      -- shuffle the directives: order does not matter to the spec
      for i = #lines, 2, -1 do
        local j = random(i)
        lines[i], lines[j] = lines[j], lines[i]
      end
      local body = table.concat(lines, "\n")
      -- check_http_send must follow check: keep bodies where the shuffle broke that out
      if up.parseBody(body) then
        identity(body)
        checked = checked + 1
      end
    end
    assert.is_true(checked > 250, checked .. " bodies checked")
  end)
end)
