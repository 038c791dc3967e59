-- Properties every method shares, over random sets, availability and tried peers.
local S = require("balance.support")
local ps = S.ps

local methods = {
  { "round_robin", {} },
  { "least_conn", {} },
  { "ip_hash", {} },
  { "hash", {} },
  { "hash", { hashConsistent = true } },
  { "random", {} },
  { "random", { randomTwo = true } },
}

local function name(m) return m[1] .. (m[2].hashConsistent and " consistent" or "") .. (m[2].randomTwo and " two" or "") end

describe("every method", function()
  for _, m in ipairs(methods) do
    it(name(m) .. ": picks a usable peer, and 0 exactly when there is none", function()
      math.randomseed(51)
      for _ = 1, 400 do
        local n = math.random(1, 8)
        local list = {}
        for i = 1, n do
          local backup = (m[1] == "round_robin" or m[1] == "least_conn") and i > 1 and math.random() < 0.25
          list[i] = { w = math.random(1, 5), down = math.random() < 0.2, backup = backup }
        end
        local set = S.build(S.peers(list), m[1], m[2])
        local st = S.state()
        local tried = {}
        local any = false
        for gi = 1, set.total do
          st.up[gi] = math.random() > 0.3
          st.active[gi] = math.random(0, 4)
          if gi <= set.nPrimary and math.random() < 0.2 then tried[gi] = true end
          if not set.down[gi] and st.up[gi] and not tried[gi] then any = true end
        end
        local key = (m[1] == "ip_hash") and ("10.0." .. math.random(0, 255) .. ".1") or ("k" .. math.random(1, 1000))
        local gi = ps.pick(set, st, next(tried) and tried or nil, key)
        if any then
          assert.is_true(gi >= 1 and gi <= set.total)
          assert.is_false(set.down[gi]); assert.is_true(st.up[gi]); assert.is_nil(tried[gi])
        else
          assert.equal(0, gi)
        end
      end
    end)

    it(name(m) .. ": returns 0 when everything is down", function()
      local set = S.build(S.peers({ { down = true }, { down = true, w = 3 }, { down = true } }), m[1], m[2])
      assert.equal(0, ps.pick(set, S.state(), nil, "10.0.0.1"))
      assert.equal(0, ps.pick(S.build({}, m[1], m[2]), S.state(), nil, "k"))
    end)
  end
end)
