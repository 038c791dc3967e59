-- Micro-benchmark of dyups.balance.peer_set's pick: picks per second per method, 10 and 1000 peers.
--   bash tools/build.sh && luajit spec/balance/bench_pick.lua [seconds-per-case]
-- The fake PeerState answers from plain tables (the real one reads shared memory: slower per call).
-- Keys and client addresses are prepared up front so the loop measures pick alone.
local root = (arg and arg[0] or ""):match("^(.*)spec/balance/[^/]*$") or "./"
package.path = root .. "dist/lua/?.lua;" .. root .. "dist/lua/?/init.lua;" .. package.path
local ps = require("dyups.balance.peer_set")

local budget = tonumber(arg and arg[1]) or 0.3

local function peers(n)
  local out = {}
  for i = 1, n do
    out[i] = { id = "10." .. math.floor(i / 256) .. "." .. (i % 256) .. ".1:8080", host = "10.0.0." .. i, port = 8080,
      weight = (i % 3) + 1, maxFails = 1, failTimeout = 10, maxConns = 0, backup = false, down = false }
  end
  return out
end

local up, active = {}, {}
for i = 1, 1000 do up[i] = true; active[i] = i % 7 end
local state = {
  available = function(_, gi) return up[gi] end,
  conns = function(_, gi) return active[gi] end,
  now = function() return 1000 end,
}

local keys, addrs = {}, {}
for i = 1, 1024 do
  keys[i] = "/api/items/" .. (i * 7919)
  addrs[i] = (i % 4 == 0) and string.format("2001:db8::%x:%x", i, i * 3)
    or string.format("%d.%d.%d.%d", i % 223 + 1, (i * 7) % 256, (i * 13) % 256, i % 256)
end

local cases = {
  { "round_robin", {}, nil },
  { "least_conn", {}, nil },
  { "ip_hash", {}, addrs },
  { "hash", {}, keys },
  { "hash", { hashConsistent = true }, keys },
  { "random", {}, nil },
  { "random", { randomTwo = true }, nil },
  { "balancer", { picker = "ewma" }, nil },
}

local pick = ps.pick
print(string.format("%-18s %6s %14s %10s %10s", "method", "peers", "picks/s", "ns/pick", "build ms"))
for _, n in ipairs({ 10, 1000 }) do
  local list = peers(n)
  for _, c in ipairs(cases) do
    local method, extra, inputs = c[1], c[2], c[3]
    local opts = { method = method, hashConsistent = extra.hashConsistent == true, randomTwo = extra.randomTwo == true,
      picker = extra.picker }
    local t0 = os.clock()
    local set = ps.buildPeerSet(list, opts)
    local build_ms = (os.clock() - t0) * 1000
    -- warm up (JIT), then count picks in batches until the budget is spent
    for i = 1, 20000 do pick(set, state, nil, inputs and inputs[(i % 1024) + 1]) end
    local picks, sink = 0, 0
    local start = os.clock()
    local elapsed = 0
    repeat
      for i = 1, 10000 do sink = sink + pick(set, state, nil, inputs and inputs[(i % 1024) + 1]) end
      picks = picks + 10000
      elapsed = os.clock() - start
    until elapsed >= budget
    assert(sink > 0)
    local name = (opts.picker or method) .. (opts.hashConsistent and " consistent" or "") .. (opts.randomTwo and " two" or "")
    print(string.format("%-18s %6d %14.0f %10.1f %10.2f", name, n, picks / elapsed, elapsed / picks * 1e9, build_ms))
  end
end
