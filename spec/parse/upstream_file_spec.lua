-- parseUpstreamFile (dyups.parse.upstream): files of `upstream NAME { ... }` blocks.
local up = require("dyups.parse.upstream")

local function parse(text)
  return up.parseUpstreamFile(text, "upstream.conf")
end

local function rejects(text, reason)
  local blocks, err = parse(text)
  assert(blocks == nil, "expected the file to be refused")
  assert.equal(reason, err)
end

describe("parseUpstreamFile", function()
  it("returns the blocks in file order with names, lines, exact bodies and specs", function()
    local text = table.concat({
      "# upstreams managed by dyups",      -- 1
      "",                                  -- 2
      "upstream Host1 {",                  -- 3
      "    server 127.0.0.1:8088;",        -- 4
      "}",                                 -- 5
      "upstream host2 { ip_hash; server 127.0.0.1:8089 weight=2; }  # trailing",  -- 6
      "upstream",                          -- 7
      "  host3",                           -- 8
      "{server unix:/tmp/s.sock;}",        -- 9
    }, "\n")
    local blocks, err = parse(text)
    assert.is_nil(err)
    assert.equal(3, #blocks)
    assert.same({ "host1", 3, "\n    server 127.0.0.1:8088;\n" }, { blocks[1].name, blocks[1].line, blocks[1].body })
    assert.same({ "host2", 6, " ip_hash; server 127.0.0.1:8089 weight=2; " }, { blocks[2].name, blocks[2].line, blocks[2].body })
    assert.same({ "host3", 7, "server unix:/tmp/s.sock;" }, { blocks[3].name, blocks[3].line, blocks[3].body })
    assert.equal("127.0.0.1", blocks[1].spec.servers[1].host)
    assert.same({ "ip_hash", 2 }, { blocks[2].spec.method, blocks[2].spec.servers[1].weight })
    assert.equal("unix", blocks[3].spec.servers[1].kind)
  end)

  it("gives bodies that parse back to the same spec", function()
    local text = [[
upstream a {
    # a comment with } and { inside
    server 10.0.0.1:80 weight=3 max_fails=2 fail_timeout=5s;
    server "10.0.0.2:80" backup;   # quoted
    server b.local resolve;
    keepalive 16; keepalive_timeout 30s;
    check interval=1000 type=http;
    check_http_send "GET /health HTTP/1.0\r\n\r\n";
    check_http_expect_alive http_2xx;
}
upstream b{hash $arg_k consistent;server '10.0.0.3';server [::1]:81;}
]]
    local blocks = assert(parse(text))
    assert.equal(2, #blocks)
    for _, b in ipairs(blocks) do
      local spec, err = up.parseBody(b.body)
      assert.is_nil(err)
      assert.same(b.spec, spec)
    end
    assert.equal("GET /health HTTP/1.0\r\n\r\n", blocks[1].spec.check.httpSend)
  end)

  it("accepts an empty file and a file of comments", function()
    assert.same({}, (parse("")))
    assert.same({}, (parse("# nothing\n\n   # here\r\n")))
  end)

  it("names the file and the line of the error inside a block", function()
    rejects("upstream a {\n  server 1.2.3.4;\n  server 1.2.3.5 bogus=1;\n}\n",
      'upstream.conf:3: invalid parameter "bogus=1" in server 2')
    rejects("upstream a { server 1.2.3.4; }\n\nupstream b {\n server 1.2.3.4 weight=0; }",
      'upstream.conf:4: invalid weight "0" in server 1')
    rejects("upstream a {\n foo;\n}", 'upstream.conf:2: unknown directive "foo"')
    rejects("upstream a {\n server 1.2.3.4 backup;\n server 1.2.3.5;\n hash $x;\n}",
      'upstream.conf:2: "backup" parameter is incompatible with hash in server 1')
  end)

  it("refuses blocks without servers, at the line of the block", function()
    rejects("\nupstream a {\n}\n", "upstream.conf:2: no servers are inside upstream")
    rejects("upstream a { server 1.2.3.4; }\nupstream b {\n  keepalive 2;\n}",
      "upstream.conf:2: no servers are inside upstream")
  end)

  it("refuses duplicate names, case-insensitively", function()
    rejects("upstream a { server 1.2.3.4; }\n\nupstream A { server 1.2.3.5; }",
      'upstream.conf:3: duplicate upstream "a" (first defined at line 1)')
  end)

  it("refuses invalid names", function()
    rejects("upstream a:80 { server 1.2.3.4; }",
      'upstream.conf:1: invalid upstream name "a:80": only letters, digits, ".", "_" and "-" are allowed')
    rejects("upstream '' { server 1.2.3.4; }", "upstream.conf:1: upstream name is empty")
  end)

  it("refuses anything but upstream blocks", function()
    rejects("server 1.2.3.4;", 'upstream.conf:1: unknown directive "server"')
    rejects("http {\n}", 'upstream.conf:1: unknown directive "http"')
    rejects("upstream a;", 'upstream.conf:1: directive "upstream" has no opening "{"')
    rejects("upstream {\n server 1.2.3.4; }", 'upstream.conf:1: invalid number of arguments in "upstream" directive')
    rejects("upstream a b {\n server 1.2.3.4; }", 'upstream.conf:1: invalid number of arguments in "upstream" directive')
    rejects("upstream a { server 1.2.3.4; }\n}", 'upstream.conf:2: unexpected "}"')
    rejects("\n;", 'upstream.conf:2: unexpected ";"')
  end)

  it("refuses nested blocks and unterminated ones", function()
    rejects("upstream a {\n server 1.2.3.4;\n upstream b { server 1.2.3.5; }\n}",
      'upstream.conf:3: "upstream" directive is not allowed here')
    rejects("upstream a {\n server 1.2.3.4 {\n}\n}", 'upstream.conf:2: directive "server" is not terminated by ";"')
    rejects("upstream a {\n server 1.2.3.4;\n", 'upstream.conf:3: unexpected end of file, expecting "}"')
    rejects("upstream a {\n server 1.2.3.4;\n # }", 'upstream.conf:3: unexpected end of file, expecting "}"')
    rejects("upstream a {\n server 1.2.3.4 }", 'upstream.conf:2: unexpected "}"')
    rejects("upstream a {\n server 1.2.3.4;}x", 'upstream.conf:2: unexpected end of file, expecting ";" or "}"')
    rejects("upstream a {\n server '1.2.3.4;\n}", "upstream.conf:2: unterminated quoted string")
  end)

  it("uses the file name it is given", function()
    local _, err = up.parseUpstreamFile("bogus;", "/etc/nginx/dyups.upstreams")
    assert.equal('/etc/nginx/dyups.upstreams:1: unknown directive "bogus"', err)
  end)

  it("raises for non-string arguments (a caller bug)", function()
    assert.has_error(function() up.parseUpstreamFile(nil, "f") end)
    assert.has_error(function() up.parseUpstreamFile("", nil) end)
  end)
end)
