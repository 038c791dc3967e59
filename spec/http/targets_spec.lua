-- Where an upstream may point (dyups.targets): CIDR parsing, the default rule (link-local and metadata
-- refused), addresses that carry IPv4, the allowed_targets list with unix-socket folders. Plain LuaJIT.
local targets

local function ep(host, port) return { host = host, port = port or 80 } end

describe("targets", function()
  before_each(function()
    package.loaded["dyups.targets"] = nil
    targets = require("dyups.targets")
    assert(targets.configureTargets(nil))
  end)

  it("parses CIDRs and masks host bits", function()
    local c = assert(targets.parseCidr("10.1.2.3/8"))
    assert.same({ 10, 0, 0, 0 }, c.bytes)
    assert.equal(8, c.bits)
    c = assert(targets.parseCidr("fe80::1/10"))
    assert.equal(0xfe, c.bytes[1]); assert.equal(0x80, c.bytes[2]); assert.equal(0, c.bytes[16])
    assert.equal(32, assert(targets.parseCidr("127.0.0.1")).bits)
    assert.equal(128, assert(targets.parseCidr("::1")).bits)
    for _, bad in ipairs({ "10.0.0.0/33", "::/129", "10.0.0.0/x", "10.0.0.0/", "host.example", "", "1.2.3" }) do
      local ok, err = targets.parseCidr(bad)
      assert.is_nil(ok, bad); assert.is_string(err)
    end
  end)

  it("refuses link-local and metadata addresses by default, allows the rest", function()
    for _, h in ipairs({ "169.254.169.254", "169.254.0.1", "fe80::1", "FE80::abcd", "febf::1", "fd00:ec2::254",
      "100.100.100.200", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe" }) do
      assert.is_string(targets.targetProblem(ep(h)), h)
    end
    for _, h in ipairs({ "10.0.0.1", "127.0.0.1", "169.253.255.255", "169.255.0.1", "fec0::1", "::1", "2001:db8::1",
      "fd00:ec2::253", "100.100.100.201", "::ffff:10.0.0.1", "unix:/var/run/docker.sock" }) do
      assert.is_nil(targets.targetProblem(ep(h)), h)
    end
  end)

  it("allowed_targets: only listed CIDRs (IPv4-mapped addresses as IPv4) and unix folders", function()
    assert.equal(4, (targets.configureTargets({ "10.0.0.0/8", "2001:db8::/32", "unix:/run/app", "127.0.0.1" })))
    assert.is_nil(targets.targetProblem(ep("10.200.0.1")))
    assert.is_nil(targets.targetProblem(ep("::ffff:10.1.1.1")))
    assert.is_nil(targets.targetProblem(ep("2001:db8:1::5")))
    assert.is_nil(targets.targetProblem(ep("127.0.0.1")))
    assert.is_nil(targets.targetProblem(ep("unix:/run/app/a.sock", 0)))
    assert.is_nil(targets.targetProblem(ep("unix:/run/app/sub/b.sock", 0)))
    assert.matches("not in allowed_targets", targets.targetProblem(ep("127.0.0.2")))
    assert.matches("not in allowed_targets", targets.targetProblem(ep("169.254.169.254")))
    assert.matches("not in allowed_targets", targets.targetProblem(ep("2001:db9::1")))
    for _, p in ipairs({ "unix:/run/application.sock", "unix:/run/app/../docker.sock", "unix:/run/app/./x.sock",
      "unix:/run//app/x.sock", "unix:/var/run/docker.sock", "unix:relative.sock" }) do
      assert.matches("unix%-socket folder", targets.targetProblem(ep(p, 0)), p)
    end
  end)

  it("an explicit list replaces the default rule (listing link-local allows it)", function()
    assert(targets.configureTargets({ "169.254.0.0/16" }))
    assert.is_nil(targets.targetProblem(ep("169.254.169.254")))
    assert(targets.configureTargets({ "0.0.0.0/0", "::/0", "unix:/" }))
    assert.is_nil(targets.targetProblem(ep("fe80::1")))
    assert.is_nil(targets.targetProblem(ep("unix:/var/run/docker.sock", 0)))
  end)

  it("names the bad entry of allowed_targets", function()
    local ok, err = targets.configureTargets({ "10.0.0.0/8", "bogus" })
    assert.is_nil(ok)
    assert.matches('entry 2 %("bogus"%)', err)
    ok, err = targets.configureTargets({ "unix:/run/../etc" })
    assert.is_nil(ok)
    assert.matches("entry 1", err)
  end)

  it("checkTargets names the server; allowedOnly drops refused addresses and keeps the table when all pass", function()
    local spec = { servers = { { addr = "a.test:80" }, { addr = "meta.test:80" } } }
    assert.is_nil(targets.checkTargets(spec, { { ep("10.0.0.1") }, {} }))
    local p = targets.checkTargets(spec, { { ep("10.0.0.1") }, { ep("10.0.0.2"), ep("169.254.169.254") } })
    assert.matches("^server 2 %(meta%.test:80%): target 169%.254%.169%.254 is a link%-local", p)
    local all = { ep("10.0.0.1"), ep("10.0.0.2") }
    local kept, why = targets.allowedOnly(all)
    assert.equal(all, kept); assert.is_nil(why)
    kept, why = targets.allowedOnly({ ep("169.254.169.254"), ep("10.0.0.1"), ep("fe80::2") })
    assert.equal(1, #kept); assert.equal("10.0.0.1", kept[1].host)
    assert.matches("169%.254%.169%.254", why)
  end)
end)
