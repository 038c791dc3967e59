-- The per-request slot table (dyups.phases.request_slot): open addressing over preallocated arrays, checked
-- against a plain Lua table through random opens and closes, with addresses chosen to collide and wrap.
local fake = require("spec.helpers.fake_ngx")

describe("request slots", function()
  local rs
  before_each(function()
    fake.unload()
    fake.install()
    rs = require("dyups.phases.request_slot")
  end)

  it("finds, keeps and releases slots like a table would, through collisions, wrap-around and growth", function()
    math.randomseed(7)
    local ref, live = {}, {}
    local ver = { refs = 0 }
    local function key()
      -- addresses 16-byte aligned, many on the same home bucket (multiples of 16 x 256), some near the end
      local r = math.random(1, 4)
      if r == 1 then return 0x55550000000 + 16 * 256 * math.random(1, 40) end
      if r == 2 then return 0x55550000000 + 16 * (256 - math.random(0, 3)) end
      return 0x55550000000 + 16 * math.random(1, 100000)
    end
    for step = 1, 20000 do
      if math.random() < 0.55 or #live == 0 then
        local k = key()
        if ref[k] == nil then
          local s = rs.openSlot(k, ver, step)
          ref[k] = s
          live[#live + 1] = k
        end
      else
        local i = math.random(#live)
        local k = live[i]
        live[i] = live[#live]
        live[#live] = nil
        assert.equal(ref[k], rs.slotOf(k))
        rs.closeSlot(k, ref[k])
        ref[k] = nil
        assert.is_nil(rs.slotOf(k))
      end
      if step % 997 == 0 then
        for _, k in ipairs(live) do assert.equal(ref[k], rs.slotOf(k)) end
        assert.equal(#live, rs.slotsInUse())
      end
    end
    for _, k in ipairs(live) do rs.closeSlot(k, ref[k]) end
    assert.equal(0, rs.slotsInUse())
  end)
end)
