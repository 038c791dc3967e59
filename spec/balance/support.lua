-- Shared by the balance specs (required as "balance.support"; .busted puts spec/ on package.path):
-- a fake PeerState, peer list builders, and reference implementations of nginx's loops written
-- independently of src/dyups/balance (straight from the C, allocating freely).
local bit = require("bit")
local ps = require("dyups.balance.peer_set")

local S = {}
S.ps = ps

--- A fake PeerState: st.up[gi] (default true), st.active[gi] (default 0) and st.clock (seconds) drive it.
function S.state()
  local st = { up = {}, active = {}, clock = 1000 }
  st.available = function(_, gi) return st.up[gi] ~= false end
  st.conns = function(_, gi) return st.active[gi] or 0 end
  st.now = function() return st.clock end
  return st
end

--- PeerInit list from a spec list: { w = 1, backup = false, down = false, id = "..." }.
function S.peers(list)
  local out = {}
  for i, p in ipairs(list) do
    local port = 8000 + i
    out[i] = {
      id = p.id or ("10.0.0." .. i .. ":" .. port),
      host = p.host or ("10.0.0." .. i),
      port = p.port or port,
      weight = p.w or 1,
      maxFails = 1,
      failTimeout = 10,
      maxConns = 0,
      backup = p.backup == true,
      down = p.down == true,
      server = p.server,
    }
  end
  return out
end

--- n peers of weight 1 (or weights from a list)
function S.weighted(weights)
  local l = {}
  for i, w in ipairs(weights) do l[i] = { w = w } end
  return S.peers(l)
end

function S.build(peers, method, extra)
  local opts = { method = method, hashConsistent = false, randomTwo = false, noRandomStart = true }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return ps.buildPeerSet(peers, opts)
end

function S.tried(list)
  local t = {}
  for _, gi in ipairs(list) do t[gi] = true end
  return t
end

-- ---------------------------------------------------------------------------------------------
-- references

--- CRC-32 bit by bit (no table), unsigned.
function S.crc32(s)
  local crc = 0xffffffff
  for i = 1, #s do
    crc = bit.bxor(crc, s:byte(i))
    for _ = 1, 8 do
      if bit.band(crc, 1) ~= 0 then
        crc = bit.bxor(bit.rshift(crc, 1), 0xedb88320)
      else
        crc = bit.rshift(crc, 1)
      end
    end
  end
  return bit.bxor(crc, 0xffffffff) % 4294967296
end

--- The bytes nginx's ip_hash hashes for a client address text.
function S.addr_bytes(text)
  local a, b, c = text:match("^(%d+)%.(%d+)%.(%d+)%.%d+$")
  if a then return { tonumber(a), tonumber(b), tonumber(c) } end
  if not text:find(":", 1, true) then return { 0, 0, 0 } end
  text = text:gsub("%%.*$", "")
  -- an embedded dotted quad becomes two hex groups
  local head, q1, q2, q3, q4 = text:match("^(.*:)(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if head then
    text = head .. string.format("%x:%x", q1 * 256 + q2, q3 * 256 + q4)
  end
  local function groups(part)
    local g = {}
    if part == "" then return g end
    for x in (part .. ":"):gmatch("([^:]*):") do g[#g + 1] = tonumber(x, 16) end
    return g
  end
  local left, right = text:match("^(.-)::(.*)$")
  local g
  if left then
    local l, r = groups(left), groups(right)
    g = {}
    for _, v in ipairs(l) do g[#g + 1] = v end
    for _ = 1, 8 - #l - #r do g[#g + 1] = 0 end
    for _, v in ipairs(r) do g[#g + 1] = v end
  else
    g = groups(text)
  end
  local bytes = {}
  for i = 1, 8 do
    bytes[#bytes + 1] = math.floor(g[i] / 256)
    bytes[#bytes + 1] = g[i] % 256
  end
  return bytes
end

--- nginx's peers as a list with the C fields: { weight, down, avail, current, effective }.
function S.ref_peers(weights, downs, unavailable)
  local peers = {}
  for i, w in ipairs(weights) do
    peers[i] = { weight = w, effective = w, current = 0, down = downs and downs[i] or false,
      avail = not (unavailable and unavailable[i]) }
  end
  return peers
end

--- ngx_http_upstream_get_peer over peers[first..last]; returns index or nil.
function S.ref_swrr(peers, tried, first, last)
  local best, total = nil, 0
  for i = first, last do
    local p = peers[i]
    if not tried[i] and not p.down and p.avail then
      p.current = p.current + p.effective
      total = total + p.effective
      if p.effective < p.weight then p.effective = p.effective + 1 end
      if best == nil or p.current > peers[best].current then best = i end
    end
  end
  if best then peers[best].current = peers[best].current - total end
  return best
end

--- ngx_http_upstream_get_ip_hash_peer (first try, primaries only), with its round-robin fallback.
function S.ref_ip_hash(peers, addr_text, tried)
  tried = tried or {}
  local addr = S.addr_bytes(addr_text)
  local total_weight = 0
  for _, p in ipairs(peers) do total_weight = total_weight + p.weight end
  local hash, tries = 89, 0
  while true do
    for i = 1, #addr do hash = (hash * 113 + addr[i]) % 6271 end
    local w = hash % total_weight
    local p = 1
    while w >= peers[p].weight do
      w = w - peers[p].weight
      p = p + 1
    end
    if not tried[p] and not peers[p].down and peers[p].avail then return p end
    tries = tries + 1
    if tries > 20 then return S.ref_swrr(peers, tried, 1, #peers), "rr" end
  end
end

--- ngx_http_upstream_get_hash_peer (first try), with its round-robin fallback.
function S.ref_hash(peers, key, tried)
  tried = tried or {}
  local total_weight = 0
  for _, p in ipairs(peers) do total_weight = total_weight + p.weight end
  local hash, rehash, tries = 0, 0, 0
  while true do
    local text = rehash > 0 and (tostring(rehash) .. key) or key
    hash = hash + bit.band(bit.rshift(S.crc32(text), 16), 0x7fff)
    rehash = rehash + 1
    local w = hash % total_weight
    local p = 1
    while w >= peers[p].weight do
      w = w - peers[p].weight
      p = p + 1
    end
    if not tried[p] and not peers[p].down and peers[p].avail then return p end
    tries = tries + 1
    if tries > 20 then return S.ref_swrr(peers, tried, 1, #peers), "rr" end
  end
end

--- ngx_http_upstream_init_chash: sorted unique points { hash, server } for server texts + weights.
function S.ref_ring(servers, weights)
  local points = {}
  for i, server in ipairs(servers) do
    local host, port
    if server:sub(1, 5):lower() == "unix:" then
      host, port = server:sub(6), ""
    else
      host, port = server:match("^(.-):(%d*)$")
      if not host then host, port = server, "" end
    end
    local prev = 0
    for _ = 1, 160 * weights[i] do
      local le = string.char(prev % 256, math.floor(prev / 256) % 256, math.floor(prev / 65536) % 256,
        math.floor(prev / 16777216) % 256)
      local h = S.crc32(host .. "\0" .. port .. le)
      points[#points + 1] = { hash = h, server = server }
      prev = h
    end
  end
  table.sort(points, function(x, y) return x.hash < y.hash end)
  local uniq = {}
  for _, p in ipairs(points) do
    if #uniq == 0 or uniq[#uniq].hash ~= p.hash then uniq[#uniq + 1] = p end
  end
  return uniq
end

--- ngx_http_upstream_get_chash_peer (first try): server text at the first point >= crc32(key),
--- moving on to the next point while that server has no usable peer. `usable(server)` decides.
function S.ref_chash(ring, key, usable)
  local h = S.crc32(key)
  local i = 1
  while i <= #ring and ring[i].hash < h do i = i + 1 end
  for tries = 0, 20 do
    local p = ring[((i - 1 + tries) % #ring) + 1]
    if usable(p.server) then return p.server end
  end
  return nil
end

return S
