-- The compiled pickers must stay hand-quality Lua: no TSTL lualib helpers, no closures anywhere in the
-- balance modules, and no table constructors or string concatenation inside the pick path.
local dir = "dist/lua/dyups/balance/"
local modules = { "peer_set", "swrr", "least_conn", "walk", "hash", "chash", "random", "crc32", "ip_addr", "ewma",
  "pickers", "outcome" }
local hot = {
  peer_set = { "pick" },
  swrr = { "swrrStep", "visit", "swrrFew", "inBackupTier", "tiered", "swrrRange", "rrPick", "noteFailure" },
  least_conn = { "leastConnRange", "leastConnPick" },
  walk = { "primaryAt", "usable" },
  hash = { "ipHashPick", "hashPick" },
  chash = { "findPoint", "chashPick" },
  random = { "randomPick", "random2Pick" },
  crc32 = { "crc32Update", "crc32UpdateByte", "crc32Final", "crc32" },
  ip_addr = { "pseudo", "hexValue", "parseQuad", "parseIPv6", "parseClientAddr" },
  ewma = { "scoreAt", "cost", "cheapest", "ewmaRange", "ewmaPick", "ewmaOutcome" },
  pickers = { "anyUsablePrimary", "registeredPick" },
  outcome = { "noteOutcome" },
}

local function read(name)
  local f = assert(io.open(dir .. name .. ".lua", "r"))
  local text = f:read("*a")
  f:close()
  return text
end

-- the body of `local function NAME(...)` (after its header line) up to its closing `end` at column 0,
-- comments removed
local function body(text, fname)
  local from = text:find("\nlocal function " .. fname .. "%(")
  assert(from, "no local function " .. fname)
  local header_end = text:find("\n", from + 1, true)
  local to = text:find("\nend\n", from, true)
  return (text:sub(header_end, to):gsub("%-%-[^\n]*", ""))
end

describe("emitted Lua of the balance modules", function()
  for _, m in ipairs(modules) do
    it(m .. ".lua uses no lualib helper and creates no closure", function()
      local text = read(m)
      assert.is_nil(text:find("__TS__", 1, true))
      assert.is_nil(text:find("lualib_bundle", 1, true))
      assert.is_nil(text:find("function%s*%("))
    end)

    it(m .. ".lua hot functions allocate nothing", function()
      local text = read(m)
      for _, fname in ipairs(hot[m]) do
        local b = body(text, fname)
        assert.is_nil(b:find("{", 1, true), fname .. " builds a table")
        assert.is_nil(b:find("..", 1, true), fname .. " concatenates strings")
        assert.is_nil(b:find("function", 1, true), fname .. " makes a closure")
      end
    end)
  end
end)
