-- The compiled parser stays plain Lua: no TSTL lualib helpers, no ngx.* (it runs under bare LuaJIT).
local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("compiled dyups.parse modules", function()
  for _, mod in ipairs({ "lexer", "upstream" }) do
    it(mod .. ".lua needs no lualib helper and no ngx", function()
      local src = read("dist/lua/dyups/parse/" .. mod .. ".lua")
      assert.is_nil(src:find("lualib_bundle", 1, true))
      assert.is_nil(src:find("__TS__", 1, true))
      assert.is_nil(src:find("ngx%."))
    end)
  end

  it("loads with no ngx global", function()
    local saved = rawget(_G, "ngx")
    _G.ngx = nil
    package.loaded["dyups.parse.upstream"] = nil
    package.loaded["dyups.parse.lexer"] = nil
    local okcall, up = pcall(require, "dyups.parse.upstream")
    local spec = okcall and up.parseBody("server 127.0.0.1;")
    _G.ngx = saved
    assert.is_true(okcall, tostring(up))
    assert.truthy(spec)
  end)
end)
