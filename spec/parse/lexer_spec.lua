-- The nginx tokenizer (dyups.parse.lexer): ngx_conf_read_token's rules.
local lexer = require("dyups.parse.lexer")

-- "kind:value" for words, the separator itself otherwise; eof left out
local function toks(text)
  local list, err = lexer.tokenize(text)
  if not list then return nil, err end
  local out = {}
  for _, t in ipairs(list) do
    if t.kind == "word" then
      out[#out + 1] = "w:" .. t.value
    elseif t.kind ~= "eof" then
      out[#out + 1] = t.kind
    end
  end
  return out
end

local function lines(text)
  local list = assert(lexer.tokenize(text))
  local out = {}
  for _, t in ipairs(list) do out[#out + 1] = t.line end
  return out
end

-- every directive of a text: { {args...}, term } until eof or an error
local function directives(text)
  local lx = lexer.newLexer(text)
  local out = {}
  while true do
    local term, err = lexer.readDirective(lx)
    if not term then return out, err, lx.errLine end
    local args = {}
    for i = 1, lx.nargs do args[i] = lx.args[i] end
    out[#out + 1] = { args = args, term = term, line = lx.dirLine }
    if term == "eof" then return out end
  end
end

describe("lexer.tokenize", function()
  it("splits words on any blank and keeps ; { } as separators", function()
    assert.same({ "w:server", "w:1.2.3.4", ";" }, toks("server 1.2.3.4;"))
    assert.same({ "w:a", "w:b", "w:c", "w:d", ";" }, toks(" a\tb\r\nc\n\n  d ;"))
    assert.same({ "w:a", "{", "w:b", ";", "}" }, toks("a{b;}"))
    assert.same({}, toks(""))
    assert.same({}, toks(" \t\r\n "))
  end)

  it("ends a word at ; and { but not at } (nginx: `a}` is one word)", function()
    assert.same({ "w:a", ";", "w:b", "{" }, toks("a;b{"))
    assert.same({ "w:a}" }, toks("a}"))
    assert.same({ "w:a", "}" }, toks("a }"))
  end)

  it("keeps ${var} in a word", function()
    assert.same({ "w:${host}x", ";" }, toks("${host}x;"))
    assert.same({ "w:a$b", "{" }, toks("a$b {"))
    assert.same({ "w:a$", "{" }, toks("a$ {"))
  end)

  it("treats # as a comment only at a token start", function()
    assert.same({ "w:a", ";" }, toks("a; # comment ; { }\n"))
    assert.same({ "w:a", ";", "w:b" }, toks("# first\na;#x\nb"))
    assert.same({ "w:a#b", ";" }, toks("a#b;"))
    assert.same({ "w:a" }, toks("a #"))
    assert.same({ "w:#x" }, toks("'#x'"))
  end)

  it("unquotes single and double quoted strings, which may hold blanks, ; { } # and newlines", function()
    assert.same({ "w:a b", "w:c;d", "w:{}#", ";" }, toks([["a b" 'c;d' "{}#";]]))
    assert.same({ "w:x\ny" }, toks('"x\ny"'))
    assert.same({ "w:", ";" }, toks('"";'))
    assert.same({ "w:it's" }, toks([["it's"]]))
    assert.same({ "w:say \"hi\"" }, toks([['say "hi"']]))
  end)

  it("applies nginx escapes and keeps the others as written", function()
    assert.same({ 'w:a"b' }, toks([["a\"b"]]))
    assert.same({ "w:a'b" }, toks([['a\'b']]))
    assert.same({ "w:a\\b" }, toks([["a\\b"]]))
    assert.same({ "w:\t\r\n" }, toks([["\t\r\n"]]))
    assert.same({ "w:\\x\\;" }, toks([["\x\;"]]))
    -- in bare words too, and an escaped ; or blank does not end the word
    assert.same({ "w:a\\;b", ";" }, toks([[a\;b;]]))
    assert.same({ "w:a\\ b" }, toks([[a\ b]]))
    assert.same({ "w:GET / HTTP/1.0\r\n\r\n", ";" }, toks([["GET / HTTP/1.0\r\n\r\n";]]))
    -- \\ then n: one backslash and a literal n
    assert.same({ "w:\\n" }, toks([["\\n"]]))
    -- a backslash as the last byte is kept
    assert.same({ "w:a\\" }, toks("a\\"))
  end)

  it("starts quotes only at a token start", function()
    assert.same({ 'w:a"b"', ";" }, toks('a"b";'))
    assert.same({ "w:a'", ";" }, toks("a';"))
  end)

  it("requires a blank, ; { or ) after a quoted string", function()
    local t, err = toks('"a"b;')
    assert.is_nil(t)
    assert.equal('unexpected "b" at line 1', err)
    assert.same({ "w:a", ";" }, toks('"a";'))
    assert.same({ "w:a", "{" }, toks('"a"{'))
    assert.same({ "w:a", "w:)" }, toks('"a")'))
    t, err = toks('\n"a"}')
    assert.is_nil(t)
    assert.equal('unexpected "}" at line 2', err)
    t, err = toks('"a"#')
    assert.equal('unexpected "#" at line 1', err)
  end)

  it("reports an unterminated quoted string at the line it starts", function()
    local t, err = toks('a;\nb "x\n\ny')
    assert.is_nil(t)
    assert.equal("unterminated quoted string at line 2", err)
    t, err = toks("'abc\\'")
    assert.equal("unterminated quoted string at line 1", err)
  end)

  it("escapes control bytes in error messages", function()
    local t, err = toks('"a"\1')
    assert.is_nil(t)
    assert.equal('unexpected "\\x01" at line 1', err)
  end)

  it("counts lines at LF, inside quotes, escapes and comments too", function()
    assert.same({ 1, 2, 2, 4, 7 }, lines('a\nb;\r\n\n"x\ny"\n# c\n'))
    assert.same({ 1, 2, 2 }, lines("a\\\nb;"))
  end)

  it("records token offsets", function()
    local lx = lexer.newLexer("ab  'cd' {")
    assert.equal("word", (lexer.nextToken(lx)))
    assert.same({ 1, 2 }, { lx.tokStart, lx.tokEnd })
    assert.equal("word", (lexer.nextToken(lx)))
    assert.same({ 5, 8, "cd" }, { lx.tokStart, lx.tokEnd, lx.value })
    assert.equal("{", (lexer.nextToken(lx)))
    assert.same({ 10, 10 }, { lx.tokStart, lx.tokEnd })
    assert.equal("eof", (lexer.nextToken(lx)))
    assert.equal("eof", (lexer.nextToken(lx)))
  end)

  it("starts where it is told, with the line it is told", function()
    local lx = lexer.newLexer("xxx\nyyy b", 9, 2)
    assert.equal("word", (lexer.nextToken(lx)))
    assert.same({ "b", 2 }, { lx.value, lx.tokLine })
  end)
end)

describe("lexer.readDirective", function()
  it("groups words into directives with their terminator and line", function()
    local ds, err = directives("a 1;\n b {\n}\n")
    assert.is_nil(err)
    assert.same({ "a", "1" }, ds[1].args)
    assert.same({ ";", 1 }, { ds[1].term, ds[1].line })
    assert.same({ "b" }, ds[2].args)
    assert.same({ "{", 2 }, { ds[2].term, ds[2].line })
    assert.same({ {}, "}", 3 }, { ds[3].args, ds[3].term, ds[3].line })
    assert.same({ {}, "eof" }, { ds[4].args, ds[4].term })
  end)

  it("refuses ; and { with no words, } after words, and the end of the text after words", function()
    local _, err, line = directives("a;\n;")
    assert.same({ 'unexpected ";"', 2 }, { err, line })
    _, err = directives("{")
    assert.equal('unexpected "{"', err)
    _, err, line = directives("a b\n\n }")
    assert.same({ 'unexpected "}"', 3 }, { err, line })
    _, err = directives("server 1.2.3.4")
    assert.equal('unexpected end of file, expecting ";" or "}"', err)
  end)

  it("keeps the lines of every word", function()
    local lx = lexer.newLexer("a\nb\n\nc;")
    assert.equal(";", (lexer.readDirective(lx)))
    assert.same({ 1, 2, 4 }, { lx.argLines[1], lx.argLines[2], lx.argLines[3] })
  end)
end)

describe("lexer.quote", function()
  it("quotes, escapes control bytes and cuts long values", function()
    assert.equal('"abc"', lexer.quote("abc"))
    assert.equal('"a\\x0ab"', lexer.quote("a\nb"))
    local long = lexer.quote(string.rep("x", 200))
    assert.equal('"' .. string.rep("x", 64) .. '..."', long)
  end)
end)
