-- The check_status page (dyups.health.page) against the reference build's captures, byte for byte
-- (check-behaviour.md §4): html, csv, json, filtered, empty; and where we differ on purpose (valid JSON
-- after filtering, escaped names).
local page = require("dyups.health.page")

local rows = {
  { index = 0, upstream = "st", name = "127.0.0.1:26101", down = false, rise = 4, fall = 0, type = "http", port = 0 },
  { index = 1, upstream = "st", name = "127.0.0.1:26103", down = true, rise = 0, fall = 4, type = "http", port = 0 },
  { index = 2, upstream = "dy", name = "127.0.0.1:26104", down = false, rise = 4, fall = 0, type = "tcp", port = 26105 },
}

local HTML = [[
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN
"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
  <title>Nginx http upstream check status</title>
</head>
<body>
<h1>Nginx http upstream check status</h1>
<h2>Check upstream server number: 3, generation: 1</h2>
<table style="background-color:white" cellspacing="0"        cellpadding="3" border="1">
  <tr bgcolor="#C0C0C0">
    <th>Index</th>
    <th>Upstream</th>
    <th>Name</th>
    <th>Status</th>
    <th>Rise counts</th>
    <th>Fall counts</th>
    <th>Check type</th>
    <th>Check port</th>
  </tr>
  <tr>
    <td>0</td>
    <td>st</td>
    <td>127.0.0.1:26101</td>
    <td>up</td>
    <td>4</td>
    <td>0</td>
    <td>http</td>
    <td>0</td>
  </tr>
  <tr bgcolor="#FF0000">
    <td>1</td>
    <td>st</td>
    <td>127.0.0.1:26103</td>
    <td>down</td>
    <td>0</td>
    <td>4</td>
    <td>http</td>
    <td>0</td>
  </tr>
  <tr>
    <td>2</td>
    <td>dy</td>
    <td>127.0.0.1:26104</td>
    <td>up</td>
    <td>4</td>
    <td>0</td>
    <td>tcp</td>
    <td>26105</td>
  </tr>
</table>
</body>
</html>
]]

local JSON = [[
{"servers": {
  "total": 3,
  "generation": 1,
  "server": [
    {"index": 0, "upstream": "st", "name": "127.0.0.1:26101", "status": "up", "rise": 4, "fall": 0, "type": "http", "port": 0},
    {"index": 1, "upstream": "st", "name": "127.0.0.1:26103", "status": "down", "rise": 0, "fall": 4, "type": "http", "port": 0},
    {"index": 2, "upstream": "dy", "name": "127.0.0.1:26104", "status": "up", "rise": 4, "fall": 0, "type": "tcp", "port": 26105}
  ]
}}
]]

describe("check_status page", function()
  it("html as the reference (1132 bytes)", function()
    local body = page.renderPage("html", rows, 1)
    assert.equal(HTML, body)
    assert.equal(1132, #body)
    assert.equal("text/html", page.contentType("html"))
  end)

  it("csv as the reference (110 bytes), and status=up (73 bytes)", function()
    local body = page.renderPage("csv", rows, 1)
    assert.equal("0,st,127.0.0.1:26101,up,4,0,http,0\n1,st,127.0.0.1:26103,down,0,4,http,0\n2,dy,127.0.0.1:26104,up,4,0,tcp,26105\n", body)
    assert.equal(110, #body)
    assert.equal(73, #page.renderPage("csv", page.filterRows(rows, "up"), 1))
    assert.equal("text/plain", page.contentType("csv"))
  end)

  it("json as the reference (456 bytes)", function()
    local body = page.renderPage("json", rows, 1)
    assert.equal(JSON, body)
    assert.equal(456, #body)
    assert.equal("application/json", page.contentType("json"))
  end)

  it("json filtered to the down rows is valid (the reference leaves a trailing comma: 198 bytes, ours 197)", function()
    local body = page.renderPage("json", page.filterRows(rows, "down"), 1)
    assert.equal([[
{"servers": {
  "total": 1,
  "generation": 1,
  "server": [
    {"index": 1, "upstream": "st", "name": "127.0.0.1:26103", "status": "down", "rise": 0, "fall": 4, "type": "http", "port": 0}
  ]
}}
]], body)
    assert.equal(197, #body)
  end)

  it("html filtered keeps the indexes and counts the printed rows", function()
    local body = page.renderPage("html", page.filterRows(rows, "down"), 1)
    assert.truthy(body:find("<h2>Check upstream server number: 1, generation: 1</h2>", 1, true))
    assert.truthy(body:find("<td>1</td>", 1, true))
    assert.falsy(body:find("<td>26101</td>", 1, true))
  end)

  it("with nothing to list: html 647 bytes, csv empty, json an empty array", function()
    assert.equal(647, #page.renderPage("html", {}, 1))
    assert.equal("", page.renderPage("csv", {}, 1))
    assert.equal('{"servers": {\n  "total": 0,\n  "generation": 1,\n  "server": [\n  ]\n}}\n', page.renderPage("json", {}, 1))
  end)

  it("escapes names (the reference prints them raw)", function()
    local r = { { index = 0, upstream = 'q"x<b>,', name = "unix:/tmp/a\\b", down = false, rise = 1, fall = 0, type = "tcp", port = 0 } }
    local json = page.renderPage("json", r, 1)
    assert.truthy(json:find('"upstream": "q\\"x<b>,"', 1, true))
    assert.truthy(json:find('"name": "unix:/tmp/a\\\\b"', 1, true))
    assert.truthy(page.renderPage("html", r, 1):find("<td>q&quot;x&lt;b&gt;,</td>", 1, true))
    assert.equal('0,"q""x<b>,",unix:/tmp/a\\b,up,1,0,tcp,0\n', page.renderPage("csv", r, 1))
  end)
end)
