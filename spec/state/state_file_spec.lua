-- The state file's reader and its file operations (dyups.state.load, dyups.state.files) on real files in a
-- temp folder: every record is checked like a POST, a file that is not a state is moved aside under a name
-- of its own (also twice in the same millisecond), copies are never overwritten, writes are whole.
local fake = require("spec.helpers.fake_ngx")

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d) == 0 or true)
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "wb")); f:write(text); f:close()
end

local function read(path)
  local f = io.open(path, "rb"); if not f then return nil end
  local t = f:read("*a"); f:close(); return t
end

local function ls(dir)
  local out = {}
  local p = io.popen("ls -1 " .. dir)
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  table.sort(out)
  return out
end

describe("state file", function()
  local dir, load, files
  before_each(function()
    fake.unload()
    fake.install()
    local options = require("dyups.options")
    options.setOptions(assert(options.validateOptions(nil)))
    load = require("dyups.state.load")
    files = require("dyups.state.files")
    dir = tmpdir()
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("checks each record like a POST and keeps the good ones", function()
    local path = dir .. "/state.json"
    write(path, [==[{"format":"dyups-state/1","upstreams":[
      {"name":"ok","body":"server 127.0.0.1:1;"},
      7, null, "s", [1],
      {"name":"Two Words","body":"x"},
      {"name":"MiXed","body":"server 127.0.0.1:2;","endpoints":[[{"host":"10.0.0.1","port":80}]]},
      {"name":"mixed","body":"server 127.0.0.1:3;"},
      {"name":"eps","body":"b","endpoints":[[{"host":"1.2.3.4;server 6.6.6.6","port":80}]]},
      {"name":"eps2","body":"b","endpoints":[[{"host":"name.example","port":80}]]},
      {"name":"eps3","body":"b","endpoints":[[{"host":"10.0.0.1","port":70000}]]},
      {"name":"eps4","body":"b","endpoints":[[{"host":"unix:/tmp/s","port":0}],[{"host":"::1","port":8080,"weight":2}]]},
      {"name":"src","body":"b","source":{}}
    ],"conf_seen":{"a":"x"}}]==])
    local l = load.readState(path)
    assert.is_nil(l.fileError)
    local names = {}
    for _, e in ipairs(l.entries) do names[#names + 1] = e.name end
    assert.same({ "ok", "mixed", "eps4" }, names)
    local reasons = {}
    for _, r in ipairs(l.rejected) do reasons[r.index] = r.reason end
    assert.matches("a number %(7%)", reasons[2])
    assert.matches("is null", reasons[3])
    assert.matches("is a string", reasons[4])
    assert.matches("an array or object", reasons[5])
    assert.matches('invalid upstream name "Two Words"', reasons[6])
    assert.matches("duplicate of record 7", reasons[8])
    assert.matches("is not an address", reasons[9])
    assert.matches("is not an address", reasons[10])
    assert.matches("bad port", reasons[11])
    assert.matches("its source is", reasons[13])
    assert.equal("x", l.confSeen.a)
    assert.same({ "state.json" }, ls(dir), "a partly bad file is left where it is (startup keeps a copy)")
  end)

  it("moves a file that is not a state aside, each under its own name, in the same millisecond too", function()
    local path = dir .. "/state.json"
    local shapes = { "", "[]", "null", "{", '{"format":"other","upstreams":[]}', '{"format":"dyups-state/1","upstreams":{"a":{}}}',
      '{"format":"dyups-state/1"}' }
    for i, text in ipairs(shapes) do
      write(path, text)
      local l = load.readState(path)
      assert.is_not_nil(l.fileError, text)
      assert.equal(text, read(l.movedTo))
      assert.is_nil(read(path))
    end
    local kept = ls(dir)
    assert.equal(#shapes, #kept)
    for _, f in ipairs(kept) do assert.matches("^state%.json%.corrupt%-%d+T%d+%.%d%d%d%-%d+%-%d+$", f) end
  end)

  it("copies aside with O_EXCL and writes whole files (temp, fsync, rename)", function()
    local path = dir .. "/state.json"
    local a = assert(files.copyAside(path, "kept", "one"))
    local b = assert(files.copyAside(path, "kept", "two"))
    assert.are_not.equal(a, b)
    assert.equal("one", read(a)); assert.equal("two", read(b))
    local f = assert(files.openTemp(path))
    assert(files.writeAll(f, string.rep("x", 100000)))
    assert(files.writeAll(f, "end"))
    assert.is_nil(read(path), "nothing visible before the commit")
    assert(files.commitTemp(f))
    assert.equal(100003, #read(path))
    assert.equal(3, #ls(dir), "no temp file left")
    assert.is_false(files.folderWritable("/nonexistent-dir/x"))
    assert.is_true(files.folderWritable(path))
    local _, err = files.openTemp("/nonexistent-dir/x.json")
    assert.matches("No such file or directory", err)
  end)

  it("reports a file it cannot read without touching it", function()
    local path = dir .. "/state.json"
    os.execute("mkdir " .. path)
    local l = load.readState(path)
    assert.matches("cannot read", l.fileError)
    assert.is_nil(l.movedTo)
    local none = load.readState(dir .. "/absent.json")
    assert.is_nil(none.fileError)
    assert.same({}, none.entries)
  end)
end)
