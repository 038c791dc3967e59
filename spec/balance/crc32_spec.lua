local S = require("balance.support")
local crc = require("dyups.balance.crc32")

describe("crc32", function()
  it("gives the standard check values", function()
    assert.equal(0xCBF43926, crc.crc32("123456789"))
    assert.equal(0, crc.crc32(""))
    assert.equal(0xE8B7BE43, crc.crc32("a"))
    assert.equal(0x414FA339, crc.crc32("The quick brown fox jumps over the lazy dog"))
  end)

  it("is unsigned", function()
    for i = 1, 200 do
      local v = crc.crc32("k" .. i)
      assert.is_true(v >= 0 and v < 4294967296 and v == math.floor(v))
    end
  end)

  it("agrees with a bitwise reference on random strings", function()
    math.randomseed(7)
    for _ = 1, 500 do
      local t = {}
      for j = 1, math.random(0, 64) do t[j] = string.char(math.random(0, 255)) end
      local s = table.concat(t)
      assert.equal(S.crc32(s), crc.crc32(s))
    end
  end)

  it("composes: update in pieces, one byte, 4 little-endian bytes", function()
    local c = crc.crc32Init()
    c = crc.crc32Update(c, "abc")
    c = crc.crc32UpdateByte(c, 0)
    c = crc.crc32UpdateU32LE(c, 0x04030201)
    assert.equal(S.crc32("abc\0\1\2\3\4"), crc.crc32Final(c))
    c = crc.crc32UpdateU32LE(crc.crc32Init(), 0xCBF43926)
    assert.equal(S.crc32("\38\57\244\203"), crc.crc32Final(c))
  end)
end)
