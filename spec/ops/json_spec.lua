-- dyups.ops.json: the JSON API's strict decoder (RFC 8259, UTF-8, depth, arrays apart from objects) and its
-- encoder (real empty arrays, sorted keys).
local json = require("dyups.ops.json")
local cjson = require("cjson.safe")

local function ok(text)
  local v, err = json.decodeJson(text)
  assert(err == nil, string.format("%q: %s", text, tostring(err)))
  return v
end

local function bad(text, pattern)
  local v, err = json.decodeJson(text)
  assert(v == nil and type(err) == "string", string.format("%q should be refused", text))
  if pattern then assert.matches(pattern, err) end
end

describe("decodeJson", function()
  it("decodes every JSON value", function()
    local v = ok(' { "a" : [1, -2.5, 3e2, true, false, null, "x\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"], "b": {}, "c": [] } ')
    assert.same({ 1, -2.5, 300, true, false }, { v.a[1], v.a[2], v.a[3], v.a[4], v.a[5] })
    assert.equal(json.JSON_NULL, v.a[6])
    assert.equal('x"\\/\b\f\n\r\t\195\169\240\159\152\128', v.a[7])
    assert.is_true(json.isJsonArray(v.a))
    assert.is_true(json.isJsonArray(v.c))
    assert.is_false(json.isJsonArray(v.b))
    assert.is_false(json.isJsonArray(v))
    assert.equal(0, ok("0"))
    assert.equal(-0.5, ok("-0.5"))
    assert.equal("", ok('""'))
    assert.equal(math.huge, ok("1e400")) -- a number: ranges are the callers' to check
  end)

  it("refuses what JSON does not allow, with the byte it stopped at", function()
    bad("", "unexpected end")
    bad("   ")
    bad("{", "expected a string key")
    bad('{"a":1', 'expected ","')
    bad('{"a":1,}', "expected a string key")
    bad("[1,]", "unexpected character")
    bad("[1 2]", 'expected ","')
    bad('{"a" 1}', 'expected ":"')
    bad("{'a':1}", "expected a string key")
    bad("01", "leading zero")
    bad("-01", "leading zero")
    bad("1.", "text after")
    bad(".5", "unexpected character")
    bad("+1", "unexpected character")
    bad("0x10", "text after")
    bad("NaN", "unexpected character")
    bad("Infinity", "unexpected character")
    bad("nul", "unexpected character")
    bad("truex", "text after")
    bad('{"a":1}{"b":2}', "text after")
    bad('"abc', "unterminated string")
    bad('"a\tb"', "control character")
    bad('"a\0b"', "control character")
    bad('"\\x41"', "bad escape")
    bad('"\\u12"', "bad \\u escape")
    bad('"\\ud800"', "lone surrogate")
    bad('"\\udc00x"', "lone surrogate")
    bad('{"a":1,"a":2}', 'duplicate key "a"')
  end)

  it("refuses invalid UTF-8 anywhere in the text", function()
    for _, s in ipairs({ "\255", "\192\175", "\237\160\128", "\226\130", "\245\128\128\128", "\240\143\191\191", "\193\191" }) do
      bad('"' .. s .. '"', "not valid UTF%-8")
      bad('{"k' .. s .. '":1}', "not valid UTF%-8")
    end
    assert.equal("\226\130\172", ok('"\226\130\172"'))
    assert.is_nil(json.invalidUtf8At("plain ascii"))
    assert.equal(3, json.invalidUtf8At("ab\128"))
  end)

  it("refuses nesting deeper than MAX_DEPTH, and decodes MAX_DEPTH", function()
    local n = json.MAX_DEPTH
    ok(string.rep("[", n) .. string.rep("]", n))
    bad(string.rep("[", n + 1) .. string.rep("]", n + 1), "nested deeper")
    bad(string.rep('{"a":', 100000) .. "1" .. string.rep("}", 100000), "nested deeper")
    bad(string.rep("[", 200000), "nested deeper")
  end)

  it("never raises on random bytes", function()
    math.randomseed(99)
    for _ = 1, 3000 do
      local t = {}
      for i = 1, math.random(0, 40) do t[i] = string.char(({ 123, 125, 91, 93, 34, 92, 58, 44, 48, 49, 45, 101, 46, 110, 116, 117, 32 })[math.random(17)]) end
      local s = table.concat(t)
      local okcall, v, err = pcall(json.decodeJson, s)
      assert(okcall, s)
      assert(v ~= nil or type(err) == "string", s)
      -- whatever we accept, cjson accepts too (we are the stricter one)
      if v ~= nil and err == nil then assert(cjson.decode(s) ~= nil or s:match("^%s*null%s*$"), s) end
    end
  end)
end)

describe("encodeJson", function()
  it("writes empty arrays as [] when marked, sorts keys, and round-trips through the decoder", function()
    local v = { b = json.jsonArray(), a = { 1, 2, "x/y" }, c = {}, d = true, e = 1.5, f = 2 ^ 40, g = "\0" }
    local text = json.encodeJson(v)
    assert.equal('{"a":[1,2,"x/y"],"b":[],"c":{},"d":true,"e":1.5,"f":1099511627776,"g":"\\u0000"}', text)
    local back = ok(text)
    assert.is_true(json.isJsonArray(back.b))
    assert.equal(json.encodeJson(back), text)
    assert.equal("null", json.encodeJson(0 / 0))
    assert.equal("1795905575.037", json.encodeJson(1795905575.037))
  end)
end)
