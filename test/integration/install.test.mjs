// The three ways to install (README, "Install"), each into a fresh folder, each run by a real nginx configured with
// the README's nginx.conf lines for that way (moved to the test's folder): lua_package_path holds only that folder and
// Debian's system Lua path (no dist/lua, no ";;"), and each passes the vertical slice: create an upstream over the
// interface, proxy to real backends, delete it.
//   rock:    `make rock`, then Debian's luarocks (installed by scripts/install-deps.sh --rock) installs the .all.rock
//            into a fresh tree with no network (unshare -n) and no Node on the way
//   tarball: `make dist`, the tarball unpacked; lib/ on the path, nginx/dyups.conf included
//   source:  `make install PREFIX=<tmp>`, then `make uninstall PREFIX=<tmp>` removes exactly what it installed
// `make` rebuilds dist/lua only when a source is newer (scripts/test.sh has just built it): nothing here changes the
// dist/lua that the other suites' nginx load from.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync, writeFileSync, mkdirSync, existsSync, chmodSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startNginx, ROOT, NGINX } from "./harness.mjs";

const VERSION = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).version;
const NAME = `dyups-${VERSION}`;
const DIST = path.join(ROOT, "dist");
// Debian's system Lua path (lua-resty-core, lua-nginx-dns); OpenResty keeps its own default path (";;")
const SYSTEM_PATH = NGINX === "/usr/sbin/nginx" ? "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua" : ";";
const LUAROCKS = ["luarocks", "--lua-version=5.1"];

let tmp;
let offline = []; // unshare -n: a new network namespace with no interface up (root only)

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: ROOT, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}
/** every file under dir, relative, sorted */
function files(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p); else out.push(path.relative(dir, p));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}
/**
 * The nginx.conf lines the README's "Install" section shows for one way (the text after its bold title), moved from
 * the README's folder (`from`: /usr/local or /opt) to this test's, and with Debian's system path for ";;".
 */
function readmeLines(title, from, to) {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  const at = readme.indexOf(`**${title}`);
  assert.ok(at >= 0, `README.md shows "${title}"`);
  const block = readme.slice(at).match(/```nginx\n([\s\S]*?)```/)[1];
  const pkgPath = block.match(/^lua_package_path "([^"]+)";/m)?.[1];
  const include = block.match(/^include (\S+);/m)?.[1];
  assert.ok(pkgPath && include, `lua_package_path and include under "${title}": ${block}`);
  assert.ok(pkgPath.endsWith(";;"), pkgPath);
  const move = (p) => p.split(from).join(to);
  return { luaPackagePath: `${move(pkgPath.slice(0, -1))}${SYSTEM_PATH}`, dyupsConf: move(include) };
}

/** luarocks with no network (when unshare is permitted) */
function luarocksOffline(...args) {
  const argv = [...offline, ...LUAROCKS, ...args];
  return sh(argv[0], argv.slice(1));
}

before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), "dyups-install-"));
  chmodSync(tmp, 0o755); // nginx's workers (nobody) read the installed Lua
  sh(path.join(ROOT, "scripts/install-deps.sh"), ["--rock"]);
  if (spawnSync("unshare", ["-n", "true"]).status === 0) offline = ["unshare", "-n"];
  else console.log("# unshare -n is not permitted here: the rock installs run with the network available");
  sh("make", ["-s", "-C", ROOT, "rock"]);
});
after(() => { if (tmp) rmSync(tmp, { recursive: true, force: true }); });

/** nginx on an installed copy: the slice, the version in /status, _VERSION and the start-up line, the module's file */
async function verticalSlice(luaPackagePath, dyupsConf, installedUnder) {
  const ng = await startNginx({
    workers: 2, backends: 2, luaPackagePath, dyupsConf,
    serverExtra: `location = /where { content_by_lua_block {
      ngx.print(package.searchpath("dyups", package.path), " ", require("dyups")._VERSION, " ", require("ngx.dyups")._VERSION)
    } }`,
  });
  try {
    const [a, b] = ng.backendPorts;
    const where = await ng.get("/where");
    assert.equal(where.body, `${installedUnder}/dyups/init.lua ${VERSION} ${VERSION}`, "dyups is loaded from the installed copy");
    assert.equal((await ng.proxy("dyhost")).status, 502);
    const r = await ng.post("/upstream/dyhost", `server 127.0.0.1:${a}; server 127.0.0.1:${b};`);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.body, "success");
    const seen = new Set();
    for (let i = 0; i < 8; i++) {
      const p = await ng.proxy("dyhost");
      assert.equal(p.status, 200, p.body);
      seen.add(p.body);
    }
    assert.deepEqual([...seen].sort(), [String(a), String(b)].sort());
    const st = JSON.parse((await ng.get("/status")).body);
    assert.equal(st.dyups_version, VERSION);
    const d = await ng.del("/upstream/dyhost");
    assert.equal(d.status, 200);
    assert.equal(d.body, "success");
    assert.equal((await ng.proxy("dyhost")).status, 502);
    assert.match(ng.errorLog(), new RegExp(`dyups: worker \\d+ \\(pid \\d+\\) started, version \\d+, dyups ${VERSION.replace(/\./g, "\\.")}`));
    assert.doesNotMatch(ng.errorLog(), /\[(crit|alert|emerg)\]|runtime error|not found:|no field package/);
  } finally {
    await ng.stop();
  }
}

test("make dist: the tarball holds the compiled Lua, dyups.conf, install.sh, the rockspec and the docs, nothing for Node", () => {
  const list = sh("tar", ["-tzf", path.join(DIST, `${NAME}.tar.gz`)]).split("\n").filter((l) => l && !l.endsWith("/"));
  for (const f of ["lib/dyups/init.lua", "lib/dyups/version.lua", "lib/ngx/dyups.lua", "nginx/dyups.conf",
    "nginx/dyups-http.conf", "nginx/dyups-location.conf", "install.sh",
    `${NAME}-1.rockspec`, "README.md", "LICENSE", "CHANGELOG.md"]) assert.ok(list.includes(`${NAME}/${f}`), `${f} in ${list}`);
  const other = list.filter((f) => !/^[^/]+\/(lib\/.*\.lua|nginx\/dyups(-http|-location)?\.conf|install\.sh|[^/]+\.rockspec|README\.md|LICENSE|CHANGELOG\.md)$/.test(f));
  assert.deepEqual(other, [], "nothing else (no TypeScript, package.json, node_modules)");
  assert.match(readFileSync(path.join(ROOT, "CHANGELOG.md"), "utf8"), new RegExp(`^## ${VERSION.replace(/\./g, "\\.")} `, "m"),
    "CHANGELOG.md has an entry for package.json's version");
});

test("rock: the .all.rock installs into a fresh tree with no network; nginx on that tree passes the slice", async () => {
  const tree = path.join(tmp, "rocktree");
  luarocksOffline("--tree", tree, "install", path.join(DIST, `${NAME}-1.all.rock`));
  const rockDir = sh(LUAROCKS[0], [...LUAROCKS.slice(1), "--tree", tree, "show", "--rock-dir", "dyups"]).trim();
  assert.equal(rockDir, path.join(tree, `lib/luarocks/rocks-5.1/dyups/${VERSION}-1`));
  const { luaPackagePath, dyupsConf } = readmeLines("A LuaRocks rock.", "/usr/local", tree);
  assert.equal(dyupsConf, path.join(rockDir, "conf/dyups.conf"));
  for (const f of ["dyups-http.conf", "dyups-location.conf"]) assert.ok(existsSync(path.join(rockDir, "conf", f)), f);
  await verticalSlice(luaPackagePath, dyupsConf, path.join(tree, "share/lua/5.1"));
});

test("rock: the .src.rock builds offline (builtin: no compiler, no Node) into the same files as the .all.rock", () => {
  const tree = path.join(tmp, "srctree");
  luarocksOffline("--tree", tree, "install", path.join(DIST, `${NAME}-1.src.rock`));
  const a = path.join(tmp, "rocktree/share/lua/5.1");
  const b = path.join(tree, "share/lua/5.1");
  assert.deepEqual(files(b), files(a));
  for (const f of files(a)) assert.equal(readFileSync(path.join(b, f), "utf8"), readFileSync(path.join(a, f), "utf8"), f);
});

test("tarball: unpacked anywhere, lib/ on lua_package_path and nginx/dyups.conf included; nginx passes the slice", async () => {
  const dir = path.join(tmp, "opt");
  mkdirSync(dir);
  sh("tar", ["-xzf", path.join(DIST, `${NAME}.tar.gz`), "-C", dir]);
  const { luaPackagePath, dyupsConf } = readmeLines("The release tarball.", "/opt", dir);
  await verticalSlice(luaPackagePath, dyupsConf, path.join(dir, NAME, "lib"));
});

test("make install PREFIX: Lua under PREFIX/share/lua/5.1, dyups.conf under PREFIX/share/dyups; nginx passes the slice", async () => {
  const prefix = path.join(tmp, "prefix");
  // something else already in the prefix, which uninstall must leave alone
  mkdirSync(path.join(prefix, "share/lua/5.1/ngx"), { recursive: true });
  writeFileSync(path.join(prefix, "share/lua/5.1/ngx/other.lua"), "return {}\n");
  sh("make", ["-s", "-C", ROOT, "install", `PREFIX=${prefix}`]);
  const lua = path.join(prefix, "share/lua/5.1");
  assert.ok(existsSync(path.join(lua, "dyups/init.lua")) && existsSync(path.join(lua, "ngx/dyups.lua")));
  assert.equal(statSync(path.join(lua, "dyups/init.lua")).mode & 0o777, 0o644);
  const { luaPackagePath, dyupsConf } = readmeLines("From source", "/usr/local", prefix);
  assert.equal(dyupsConf, path.join(prefix, "share/dyups/dyups.conf"));
  for (const f of ["dyups-http.conf", "dyups-location.conf"]) assert.ok(existsSync(path.join(prefix, "share/dyups", f)), f);
  await verticalSlice(luaPackagePath, dyupsConf, lua);

  // installing again (an upgrade) replaces the files and leaves no stale module behind
  writeFileSync(path.join(prefix, "share/dyups/installed-files"),
    `${readFileSync(path.join(prefix, "share/dyups/installed-files"), "utf8")}f share/lua/5.1/dyups/stale.lua\n`);
  writeFileSync(path.join(lua, "dyups/stale.lua"), "return {}\n");
  sh("make", ["-s", "-C", ROOT, "install", `PREFIX=${prefix}`]);
  assert.ok(!existsSync(path.join(lua, "dyups/stale.lua")), "the earlier install's files are removed first");

  sh("make", ["-s", "-C", ROOT, "uninstall", `PREFIX=${prefix}`]);
  assert.deepEqual(files(prefix), ["share/lua/5.1/ngx/other.lua"], "uninstall removes exactly what install put there");
  assert.deepEqual(readdirSync(path.join(prefix, "share")), ["lua"], "and the folders it created (share/dyups)");
});
