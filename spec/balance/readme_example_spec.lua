-- The README's example picker is the file the specs and integration tests run: they never drift apart.
local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

describe("README: the example picker", function()
  it("is examples/pickers/fastest.lua, verbatim", function()
    local readme = read("README.md")
    local example = read("examples/pickers/fastest.lua")
    local from = readme:find("```lua\n-- A picker for dyups:", 1, true)
    assert.is_truthy(from, "the README has no example picker block")
    local body = readme:sub(from + #"```lua\n")
    body = body:sub(1, body:find("\n```\n", 1, true))
    assert.equal(example, body)
  end)
end)
