-- Replays spec/balance/fixtures/nginx_picks.lua, recorded from a real nginx 1.22 by nginx_fixture.sh.
local S = require("balance.support")
local ps = S.ps
local fx = dofile("spec/balance/fixtures/nginx_picks.lua")

local function build(method, consistent, retry)
  local list = {}
  for i, w in ipairs(fx.weights) do
    local port = fx.base + i
    if retry and i == 2 then port = fx.base + 9 end
    list[i] = { id = "127.0.0.1:" .. port, host = "127.0.0.1", port = port, w = w, down = i == fx.down }
  end
  return S.build(S.peers(list), method, { hashConsistent = consistent })
end

-- first try; when it lands on server 2 (the one that fails in the *_retry upstreams), a second try
local function answer(set, key, retry)
  local st = S.state()
  local gi = ps.pick(set, st, nil, key)
  if retry and gi == 2 then gi = ps.pick(set, st, { [2] = true }, key) end
  return gi
end

describe("parity with a real " .. fx.nginx, function()
  local cases = {
    { "ip_hash_v4", "ip_hash", false, false },
    { "ip_hash_v6", "ip_hash", false, false },
    { "hash", "hash", false, false },
    { "chash", "hash", true, false },
    { "ip_hash_v4_retry", "ip_hash", false, true },
    { "hash_retry", "hash", false, true },
    { "chash_retry", "hash", true, true },
  }
  for _, c in ipairs(cases) do
    local name, method, consistent, retry = c[1], c[2], c[3], c[4]
    it(name .. ": the same server for every recorded input (" .. #fx[name] .. ")", function()
      local set = build(method, consistent, retry)
      local retried = 0
      for _, e in ipairs(fx[name]) do
        if retry and ps.pick(set, S.state(), nil, e[1]) == 2 then retried = retried + 1 end
        assert.equal(e[2], answer(set, e[1], retry), e[1])
      end
      if retry then assert.is_true(retried > 0) end
    end)
  end

  it("round robin 5,1,1: nginx's first 14 picks", function()
    local list = { { w = 5 }, { w = 1 }, { w = 1 } }
    local set = S.build(S.peers(list), "round_robin")
    local got = {}
    for i = 1, #fx.rr do got[i] = ps.pick(set, S.state(), nil, nil) end
    assert.same(fx.rr, got)
  end)
end)
