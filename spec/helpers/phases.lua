-- What the specs of the phase entry points share (dyups.phases.balancer under the fake ngx and a fake
-- ngx.balancer): a fresh environment, a request routed to an upstream, the peer a try went to, a write.
local fake = require("spec.helpers.fake_ngx")

local P = {}

--- A fresh fake nginx (opts: fake.install's) with the default options, an empty dict and a fake ngx.balancer.
--- Returns ngx and the fake balancer (also kept here for request and peer).
function P.load(opts)
  fake.unload()
  local ngx = fake.install(opts)
  local options = require("dyups.options")
  options.setOptions(assert(options.validateOptions(nil)))
  require("dyups.store.dict").resetDict()
  P.ngx, P.b = ngx, fake.fake_balancer()
  return P.ngx, P.b
end

--- A new request (its own address, its own ngx.ctx) routed to `upstream`, answered 200, no try made yet.
--- Returns its handle for ngx._use_request.
function P.request(upstream)
  local ngx, b = P.ngx, P.b
  local r = ngx._new_request()
  ngx.ctx = {}
  ngx.var.dyups_upstream = upstream
  ngx.status = 200
  ngx.var.upstream_header_time = nil
  ngx.var.upstream_connect_time = nil
  b.calls = {}
  b.more_tries = nil
  b.failure = nil
  return r
end

--- "host:port" of try i (default: the last one), or nil.
function P.peer(i)
  local calls = P.b.calls
  local c = calls[i or #calls]
  return c and (c.host .. ":" .. c.port)
end

--- Creates or replaces upstream NAME through the write pipeline; raises with the status and reason if refused.
function P.update(name, body)
  local v, err, status = require("dyups.pipeline").update(name, body)
  assert(v, tostring(status) .. " " .. tostring(err))
  return v
end

return P
