-- The per-request modules compile to plain Lua: no TSTL lualib helpers, no multi-return packing into tables,
-- no closures created in function bodies (every `function` in them is a top-level definition).
local files = { "dist/lua/dyups/phases/balancer.lua", "dist/lua/dyups/phases/request_slot.lua", "dist/lua/dyups/store/peer_health.lua",
  "dist/lua/dyups/metrics/counters.lua",
  "dist/lua/dyups/health/cache.lua" }

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

describe("hot path output", function()
  for _, path in ipairs(files) do
    it(path .. " uses no lualib helpers and packs no multiple returns", function()
      local text = read(path)
      assert.is_nil(text:find("__TS__", 1, true))
      assert.is_nil(text:find("lualib_bundle", 1, true))
      assert.is_nil(text:find("unpack(", 1, true))
    end)
    it(path .. " creates no closures inside functions", function()
      local nested = {}
      for line in read(path):gmatch("[^\n]+") do
        -- top-level definitions start at column 1; an indented `function(` is a closure built at run time
        if line:match("^%s+.*function%s*%(") then nested[#nested + 1] = line end
      end
      assert.same({}, nested)
    end)
  end
end)
