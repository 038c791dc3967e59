-- dyups.ops.document and dyups.ops.diff: JSON documents to drafts (with reasons naming the field), drafts that
-- render to bodies the parser reads back, and the dry-run diff.
local doc = require("dyups.ops.document")
local diff = require("dyups.ops.diff")
local json = require("dyups.ops.json")
local render = require("dyups.parse.render")
local up = require("dyups.parse.upstream")

local function decode(text) return assert(json.decodeJson(text)) end

describe("parseUpstreamDoc", function()
  it("turns a document into the body it describes", function()
    local d = assert(doc.parseUpstreamDoc(decode([[{"method":"hash","hash_key":"$request_uri","hash_consistent":true,
      "keepalive":8,"keepalive_timeout":1.5,"zone":"z","check":{"type":"http","interval":2000,"expect_alive":["http_2xx"]},
      "servers":[{"server":"10.0.0.1:80","weight":5,"max_fails":0,"fail_timeout":0.25,"max_conns":3,"down":true,"drain":true},
                 {"server":"app.local:8080","resolve":true,"service":null}],
      "name":"App","revision":7,"body":"ignored"}]]), "app"))
    assert.equal('hash $request_uri consistent;\nserver 10.0.0.1:80 weight=5 max_fails=0 fail_timeout=250ms max_conns=3 down drain;\n' ..
      'server app.local:8080 resolve;\nkeepalive 8;\nkeepalive_timeout 1500ms;\nzone z;\n' ..
      'check interval=2000 rise=2 fall=5 timeout=1000 type=http;\ncheck_http_expect_alive http_2xx;\n', render.renderBody(d))
    local spec = assert(up.parseBody(render.renderBody(d)))
    -- and the document of that spec describes it again
    local back = assert(doc.parseUpstreamDoc(decode(json.encodeJson(doc.settingsDoc(spec)):gsub("}$", ',"servers":' ..
      json.encodeJson({ doc.serverDoc(spec.servers[1]), doc.serverDoc(spec.servers[2]) }) .. "}")), "app"))
    assert.equal(render.renderBody(d), render.renderBody(back))
  end)

  it("names the field and where it is in every refusal", function()
    local function refused(text, reason)
      local d, err = doc.parseUpstreamDoc(decode(text), "app")
      assert.is_nil(d)
      assert.equal(reason, err)
    end
    refused('[]', "the upstream must be a JSON object, got an array")
    refused('{}', '"servers" is required: an array of at least one server')
    refused('{"servers":{}}', '"servers" must be an array of servers, got an object')
    refused('{"servers":[1]}', "a server must be a JSON object in server 1, got a number")
    refused('{"servers":[{}]}', '"server" (the address, as in a body: "10.0.0.1:8080") is required in server 1')
    refused('{"servers":[{"server":"a:1"},{"server":"b:1","weight":0}]}', '"weight" must be an integer in [1, 2147483647] in server 2, got a number')
    refused('{"servers":[{"server":"a:1","weight":1.5}]}', '"weight" must be an integer in [1, 2147483647] in server 1, got a number')
    refused('{"servers":[{"server":"a:1","weight":"2"}]}', '"weight" must be an integer in [1, 2147483647] in server 1, got a string')
    refused('{"servers":[{"server":"a:1","fail_timeout":0.0001}]}', '"fail_timeout" must have at most 3 decimals (milliseconds) in server 1')
    refused('{"servers":[{"server":"a:1","backup":1}]}', '"backup" must be true or false in server 1, got a number')
    refused('{"servers":[{"server":"a:1","bogus":1}]}', 'unknown field "bogus" in server 1')
    refused('{"servers":[{"server":"a\\n:1"}]}', '"server" must not contain control characters in server 1')
    refused('{"bogus":1,"servers":[]}', 'unknown field "bogus" in the upstream')
    refused('{"method":"rr","servers":[]}', '"method" must be one of round_robin, least_conn, ip_hash, hash, random')
    refused('{"method":"hash","servers":[{"server":"a:1"}]}', 'method "hash" needs "hash_key" (e.g. "$request_uri")')
    refused('{"hash_key":"$uri","servers":[{"server":"a:1"}]}', '"hash_key" and "hash_consistent" are only for method "hash"')
    refused('{"random_two":true,"servers":[{"server":"a:1"}]}', '"random_two" is only for method "random"')
    refused('{"name":"other","servers":[{"server":"a:1"}]}', '"name" must be the upstream the path names ("app")')
    refused('{"check":[],"servers":[{"server":"a:1"}]}', '"check" must be an object or null, got an array')
    refused('{"check":{"port":65536},"servers":[{"server":"a:1"}]}', '"port" must be an integer in [0, 65535] in check, got a number')
    refused('{"check":{"expect_alive":[]},"servers":[{"server":"a:1"}]}', '"expect_alive" must be a non-empty array of http_2xx, http_3xx, http_4xx, http_5xx in check')
    refused('{"keepalive":1e400,"servers":[{"server":"a:1"}]}', '"keepalive" must be an integer in [0, 2147483647], got a non-finite number')
  end)
end)

describe("patchServer", function()
  local base = doc.defaultServer("10.0.0.1:80")
  it("changes only what the document names", function()
    local s = assert(doc.patchServer(base, decode('{"weight":4,"drain":true,"active":99}')))
    assert.same({ 4, true, 1, false }, { s.weight, s.drain, s.maxFails, s.down })
    assert.equal(1, base.weight, "the original is not modified")
    s = assert(doc.patchServer(s, decode('{"drain":false,"server":"10.0.0.1:80"}')))
    assert.is_nil(s.drain)
  end)
  it("refuses a new address, an empty change and unknown fields", function()
    assert.matches('"server" cannot be changed', select(2, doc.patchServer(base, decode('{"server":"10.0.0.2:80"}'))))
    assert.matches("nothing to change", select(2, doc.patchServer(base, decode("{}"))))
    assert.equal('unknown field "slow_start"', select(2, doc.patchServer(base, decode('{"slow_start":1}'))))
    assert.equal("a server change must be a JSON object, got an array", select(2, doc.patchServer(base, decode("[]"))))
  end)
end)

describe("diffSpecs", function()
  local function spec(body) return assert(up.parseBody(body)) end
  it("matches servers by address (in order for repeated ones) and lists settings that change", function()
    local d = diff.diffSpecs(spec("server a:1; server b:1 weight=2; server a:1 down;"), spec("least_conn; server a:1; server c:1; server a:1; server b:1 weight=3 drain;"))
    assert.same({ "c:1" }, { d.added[1].server })
    assert.equal(1, #d.added)
    assert.same({}, d.removed)
    assert.same({
      { server = "a:1", changes = { down = { from = true, to = false } } },
      { server = "b:1", changes = { weight = { from = 2, to = 3 }, drain = { from = false, to = true } } },
    }, d.changed)
    assert.same({ method = { from = "round_robin", to = "least_conn" } }, d.settings)
    assert.equal('{"added":[{"backup":false,"down":false,"drain":false,"fail_timeout":10,"max_conns":0,"max_fails":1,"resolve":false,"server":"c:1","weight":1}],' ..
      '"changed":[{"changes":{"down":{"from":true,"to":false}},"server":"a:1"},{"changes":{"drain":{"from":false,"to":true},"weight":{"from":2,"to":3}},"server":"b:1"}],' ..
      '"removed":[],"settings":{"method":{"from":"round_robin","to":"least_conn"}}}', json.encodeJson(d))
  end)
  it("creates and deletes", function()
    local s = spec("server a:1;")
    assert.equal(1, #diff.diffSpecs(nil, s).added)
    assert.equal(1, #diff.diffSpecs(s, nil).removed)
    assert.equal('{"added":[],"changed":[],"removed":[],"settings":{}}', json.encodeJson(diff.diffSpecs(s, s)))
  end)
end)
