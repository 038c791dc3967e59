-- A picker for dyups: `balancer fastest [explore=0.1];` sends each try to the usable server whose last
-- response (in this worker) was the fastest, and a fraction `explore` of them to a random usable server,
-- so that a server that was slow, or failed, gets the chance to show it is fast again.
-- Register it in init_by_lua (before or after init()) or in init_worker_by_lua:
--   require("dyups").register_picker("fastest", require("fastest"))
local random = math.random
local huge = math.huge

local M = {}

-- Apply time (a POST, update(), upstream_conf, the state file, etcd), never per request: the directive's
-- key=value arguments (strings) -> the configuration build gets, or nil and a reason (the write gets 400).
function M.validate(args)
  local explore = 0.1
  for k, v in pairs(args) do
    if k == "explore" then
      explore = tonumber(v)
      if explore == nil or explore < 0 or explore > 1 then return nil, 'invalid explore "' .. v .. '" (0..1)' end
    else
      return nil, 'unknown parameter "' .. k .. '"'
    end
  end
  return { explore = explore }
end

-- Once per upstream version, in each worker that routes to it: what pick and outcome share. dyups keeps
-- the returned value as peers.data. servers[gi] is the server's address as written in the body.
function M.build(peers, config, servers)
  local last = {}
  for gi = 1, peers.total do last[gi] = 0 end
  return { explore = config.explore, last = last }
end

local function usable(peers, state, tried, gi)
  return not peers.down[gi] and not (tried and tried[gi]) and state.available(peers, gi)
end

-- Per try: the index (gi) of a usable peer, or 0 when there is none. Primaries are 1..peers.nPrimary,
-- backups peers.nPrimary+1..peers.total: use a backup only when no primary is usable. Allocate nothing.
function M.pick(peers, state, tried, key)
  local d = peers.data
  local first, last = 1, peers.nPrimary
  for _ = 1, 2 do
    if first <= last then
      if d.explore > 0 and random() < d.explore then
        local gi = random(first, last)
        if usable(peers, state, tried, gi) then return gi end
      end
      local best, best_time = 0, huge
      for gi = first, last do
        if d.last[gi] < best_time and usable(peers, state, tried, gi) then best, best_time = gi, d.last[gi] end
      end
      if best > 0 then return best end
    end
    first, last = peers.nPrimary + 1, peers.total
  end
  return 0
end

-- Per try that pick answered, once, in the same worker: ok is false for a connection error, a timeout or a
-- status the location retries on; elapsed is the try's time in seconds (nginx's clock: 1 ms resolution).
function M.outcome(peers, state, gi, ok, elapsed)
  peers.data.last[gi] = ok and elapsed or 60
end

return M
