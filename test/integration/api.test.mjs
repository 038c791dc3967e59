// Operating day to day (issue 17), over HTTP against a real nginx (2 workers, tokens "ci" write and "grafana"
// read): the write history from every source, rollback (plain and JSON; of a replaced and of a deleted upstream;
// a body that no longer validates), each JSON API operation, drain with requests in flight (and across a
// restart: the state file keeps it, the history starts with what was restored), dry runs, If-Match conflicts,
// the OpenAPI document (every path answers as documented) and the agreement of the plain-text protocol and the
// JSON API after every change. The fuzz suite is api_fuzz.test.mjs.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync, rmSync, chmodSync, existsSync } from "node:fs";
import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import http from "node:http";
import path from "node:path";
import { startNginx, freePorts, request, eventually, sleep } from "./harness.mjs";

const W = "w".repeat(20) + "write-token";
const R = "r".repeat(20) + "read-token";
const AUTH = { authorization: `Bearer ${W}` };
const READ = { authorization: `Bearer ${R}` };

let ng;
let a, b; // the demo backends' ports (each answers its port)
let dns; // dnsmasq answering app.test (a DNS write after start)

/** dnsmasq on 127.0.0.1 (its own port) answering `app.test` from a hosts file; stopped in after(). */
async function startDns() {
  const dir = mkdtempSync(path.join(tmpdir(), "dyups-api-dns-"));
  chmodSync(dir, 0o755);
  writeFileSync(path.join(dir, "hosts"), "127.0.0.1 app.test\n", { mode: 0o644 });
  const log = path.join(dir, "log");
  const [port] = await freePorts(1);
  const proc = spawn("/usr/sbin/dnsmasq", ["--no-daemon", `--port=${port}`, "--listen-address=127.0.0.1", "--bind-interfaces",
    "--no-resolv", "--no-hosts", `--addn-hosts=${path.join(dir, "hosts")}`, "--local-ttl=60", "--local=/test/",
    `--log-facility=${log}`, "--pid-file=", "-C", "/dev/null"], { stdio: "ignore" });
  const exited = new Promise((r) => proc.once("exit", r));
  assert.ok(await eventually(() => existsSync(log) && readFileSync(log, "utf8").includes("read "), 5000), "dnsmasq started");
  return { port, stop: async () => { if (proc.exitCode === null) { proc.kill("SIGTERM"); await exited; } rmSync(dir, { recursive: true, force: true }); } };
}

/** A request to the interface with the write token (opts.headers merged), JSON body when opts.json. */
async function api(method, p, opts = {}) {
  const headers = { ...AUTH, ...(opts.headers || {}) };
  let body = opts.body;
  if (opts.json !== undefined) body = JSON.stringify(opts.json);
  const r = await request(ng.apiPort, method, p, { headers, body });
  let json;
  if ((r.headers["content-type"] || "").startsWith("application/json")) json = JSON.parse(r.body);
  return { ...r, json };
}

/** The plain-text protocol and the JSON API show the same state of `name` (or its absence). */
async function agree(name) {
  const v1 = await api("GET", `/v1/upstreams/${name}`);
  const plain = await api("GET", `/upstream/${name}?format=json`);
  const text = await api("GET", `/upstream/${name}`);
  const list = (await api("GET", "/list")).body.split("\n").filter(Boolean);
  if (v1.status === 404) {
    assert.equal(plain.status, 404);
    assert.ok(!list.map((x) => x.toLowerCase()).includes(name.toLowerCase()));
    return undefined;
  }
  assert.equal(v1.status, 200);
  assert.ok(list.includes(v1.json.name), `${name} listed`);
  assert.equal(plain.json.revision, v1.json.revision);
  assert.equal(v1.headers.etag, `"${v1.json.revision}"`);
  assert.equal(text.headers.etag, v1.headers.etag);
  assert.equal(plain.json.body, v1.json.body);
  assert.equal(plain.json.method, v1.json.method);
  assert.equal(plain.json.servers.length, v1.json.servers.length);
  const detail = (await api("GET", "/detail")).body;
  const block = detail.split("\n\n").find((blk) => blk.split("\n")[0] === v1.json.name);
  assert.ok(block, `${name} in /detail`);
  const lines = block.split("\n").slice(1).filter(Boolean);
  v1.json.servers.forEach((s, i) => {
    const p = plain.json.servers[i];
    assert.equal(p.addr, s.server);
    for (const [k, j] of [["weight", "weight"], ["max_fails", "max_fails"], ["max_conns", "max_conns"], ["fail_timeout", "fail_timeout"], ["backup", "backup"], ["down", "down"]]) {
      assert.equal(p[k], s[j], `${name} server ${i + 1} ${k}`);
    }
    assert.deepEqual(p.resolved, s.resolved);
    assert.equal(lines[i], `server ${s.resolved[0] ?? s.server} weight=${s.weight} max_conns=${s.max_conns} max_fails=${s.max_fails} ` +
      `fail_timeout=${Math.floor(s.fail_timeout)} backup=${s.backup ? 1 : 0} down=${s.down ? 1 : 0}`);
    const esc = s.server.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    assert.equal(new RegExp(`server ${esc}(\\s[^;]*)?\\sdrain[\\s;]`).test(v1.json.body), s.drain, `${name} server ${i + 1} drain`);
  });
  return v1.json;
}

/** Everything a client can observe of the state: the log version and every upstream's text. */
async function snapshot() {
  const st = await api("GET", "/status");
  return { version: st.json.version, detail: (await api("GET", "/detail")).body, v1: (await api("GET", "/v1/upstreams")).body };
}

async function history(name, limit) {
  const q = limit ? `?limit=${limit}` : "";
  const r = await api("GET", name ? `/history/${name}${q}` : `/history${q}`, { headers: READ });
  assert.equal(r.status, 200);
  return r.json.history;
}

let prefixPort; // a second interface location, under the prefix /dyups/

before(async () => {
  dns = await startDns();
  [prefixPort] = await freePorts(1);
  ng = await startNginx({
    workers: 2,
    backends: 2,
    init: {
      admin_tokens: [{ token: W, role: "write", name: "ci" }, { token: R, role: "read", name: "grafana" }],
      history_size: 200,
      resolver: [`127.0.0.1:${dns.port}`],
    },
    httpExtra: `server { listen 127.0.0.1:${prefixPort}; location /dyups/ { content_by_lua_block { require("dyups").interface({ prefix = "/dyups/" }) } } }`,
    upstreamConf: "upstream fromconf { server 127.0.0.1:1; }\nupstream dnsname { server app.test:1 resolve; }\n",
    serverExtra: `location = /lua-update {
      content_by_lua_block { local s, m = require("ngx.dyups").update(ngx.var.arg_name, ngx.unescape_uri(ngx.var.arg_body)); ngx.print(s, " ", m) }
    }`,
  });
  [a, b] = ng.backendPorts;
});
after(async () => { await ng?.stop(); await dns?.stop(); });

describe("history", () => {
  test("records writes from the interface (client and token name), the Lua API, DNS and upstream_conf", async () => {
    const r = await api("POST", "/upstream/hist1", { body: `server 127.0.0.1:${a};` });
    assert.equal(r.status, 200);
    const rev = Number(r.headers["x-dyups-version"]);
    const lua = await request(ng.apiPort, "GET", `/lua-update?name=hist2&body=${encodeURIComponent(`server 127.0.0.1:${b};`)}`);
    assert.equal(lua.body, "200 success");
    // the DNS timer resolves app.test of upstream_conf after start (init cannot query DNS): a write of its own
    const fromDns = await eventually(async () => (await history("dnsname")).find((e) => e.source.kind === "dns"), 5000);
    assert.ok(fromDns, "a DNS write in the history");
    assert.equal(fromDns.op, "update");
    assert.match(fromDns.body, /server app\.test:1 resolve;/);
    assert.equal((await api("GET", "/v1/upstreams/dnsname")).json.servers[0].resolved[0], "127.0.0.1:1");
    const all = await history();
    const conf = all.find((e) => e.upstream === "fromconf");
    assert.deepEqual(conf.source, { kind: "upstream_conf" });
    assert.equal(conf.rev_before, 0);
    assert.equal(conf.body.trim(), "server 127.0.0.1:1;");
    const h1 = all.find((e) => e.upstream === "hist1");
    assert.deepEqual(h1.source, { kind: "http", client: "127.0.0.1", token: "ci" });
    assert.equal(h1.rev_after, rev);
    assert.equal(h1.rev_before, 0);
    assert.equal(h1.body, `server 127.0.0.1:${a};`);
    assert.equal(typeof h1.time, "number");
    assert.ok(Math.abs(h1.time - Date.now() / 1000) < 60);
    const h2 = all.find((e) => e.upstream === "hist2");
    assert.deepEqual(h2.source, { kind: "lua" });
    // newest first; seq grows by one per entry; the JSON API serves the same
    for (let i = 1; i < all.length; i++) assert.equal(all[i - 1].seq, all[i].seq + 1);
    const v1 = await api("GET", "/v1/history", { headers: READ });
    assert.deepEqual(v1.json.history, all);
    assert.equal(v1.json.history_size, 200);
    assert.equal(v1.json.lost, 0);
    // per upstream, and ?limit
    const d = await api("DELETE", "/upstream/hist1");
    assert.equal(d.status, 200);
    const only = await history("HIST1");
    assert.deepEqual(only.map((e) => e.op), ["delete", "update"]);
    assert.equal(only[0].rev_before, rev);
    assert.equal(only[0].body, undefined);
    assert.equal((await history(undefined, 1)).length, 1);
    assert.equal((await api("GET", "/history?limit=x")).status, 400);
    assert.equal((await api("POST", "/history", { body: "" })).status, 405);
  });
});

describe("rollback", () => {
  test("of a replaced upstream (plain ?rollback=REV) and of a deleted one (JSON), each a new validated write", async () => {
    const r1 = await api("POST", "/upstream/rb", { body: `# first\nserver 127.0.0.1:${a};` });
    const rev1 = Number(r1.headers["x-dyups-version"]);
    const r2 = await api("POST", "/upstream/rb", { body: `server 127.0.0.1:${b};` });
    assert.equal(r2.status, 200);
    assert.equal((await ng.proxy("rb")).body, String(b));
    // a read token may not roll back
    const ro = await request(ng.apiPort, "POST", `/upstream/rb?rollback=${rev1}`, { headers: READ });
    assert.equal(ro.status, 403);
    const rb = await api("POST", `/upstream/rb?rollback=${rev1}`);
    assert.equal(rb.status, 200);
    assert.equal(rb.body, "success");
    const rev3 = Number(rb.headers["x-dyups-version"]);
    assert.ok(rev3 > rev1);
    assert.equal(rb.headers.etag, `"${rev3}"`);
    const now = await agree("rb");
    assert.equal(now.body, `# first\nserver 127.0.0.1:${a};`);
    assert.equal(now.revision, rev3);
    assert.equal((await ng.proxy("rb")).body, String(a));
    const [e] = await history("rb", 1);
    assert.equal(e.action, "rollback");
    assert.equal(e.rollback_to, rev1);
    assert.equal(e.rev_after, rev3);
    // a revision the history does not hold; a bad one; a body with ?rollback
    const none = await api("POST", "/upstream/rb?rollback=999999");
    assert.equal(none.status, 404);
    assert.match(none.body, /no revision 999999 of upstream "rb" in the history/);
    assert.equal((await api("POST", "/upstream/rb?rollback=x")).status, 400);
    assert.equal((await api("POST", `/upstream/rb?rollback=${rev1}`, { body: "server 127.0.0.1:1;" })).status, 400);
    // If-Match on a rollback: stale is 412, nothing changed
    const stale = await api("POST", `/upstream/rb?rollback=${rev1}`, { headers: { "if-match": `"${rev1}"` } });
    assert.equal(stale.status, 412);
    assert.equal((await agree("rb")).revision, rev3);

    // delete, then roll back (JSON): created again from the history
    assert.equal((await api("DELETE", "/upstream/rb")).status, 200);
    await agree("rb");
    const dry = await api("POST", "/v1/upstreams/rb/rollback?dry_run=1", { json: { revision: rev1 } });
    assert.equal(dry.status, 200);
    assert.equal(dry.json.operation, "create");
    assert.equal(dry.json.diff.added.length, 1);
    assert.equal((await api("GET", "/upstream/rb")).status, 404, "a dry run changes nothing");
    const back = await api("POST", "/v1/upstreams/rb/rollback", { json: { revision: rev1 } });
    assert.equal(back.status, 201);
    assert.equal(back.json.body, `# first\nserver 127.0.0.1:${a};`);
    assert.equal(back.headers.etag, `"${back.json.revision}"`);
    await agree("rb");
    assert.equal((await ng.proxy("rb")).body, String(a));
    // ?revision= works as the body does; unknown fields and bad revisions are 400
    assert.equal((await api("POST", `/v1/upstreams/rb/rollback?revision=${rev3}`)).status, 200);
    assert.equal((await api("POST", "/v1/upstreams/rb/rollback", { json: { revision: rev1, x: 1 } })).status, 400);
    assert.equal((await api("POST", "/v1/upstreams/rb/rollback", { json: { revision: -1 } })).status, 400);
    assert.equal((await api("POST", "/v1/upstreams/rb/rollback", { json: { revision: 999999 } })).status, 404);
  });
});

describe("the JSON API", () => {
  test("PUT creates and replaces an upstream; GET shows it; the plain protocol agrees", async () => {
    const doc = {
      method: "least_conn", keepalive: 16,
      servers: [{ server: `127.0.0.1:${a}`, weight: 3, max_fails: 2, fail_timeout: 1.5 }, { server: `127.0.0.1:${b}`, backup: true }],
    };
    const c = await api("PUT", "/v1/upstreams/JsonUp", { json: doc });
    assert.equal(c.status, 201);
    assert.equal(c.headers.etag, `"${c.json.revision}"`);
    assert.equal(c.headers["x-dyups-version"], String(c.json.revision));
    assert.equal(c.json.name, "JsonUp");
    assert.equal(c.json.body, `least_conn;\nserver 127.0.0.1:${a} weight=3 max_fails=2 fail_timeout=1500ms;\nserver 127.0.0.1:${b} backup;\nkeepalive 16;\n`);
    const got = await agree("jsonup");
    assert.equal(got.servers[0].fail_timeout, 1.5);
    assert.equal(got.servers[1].backup, true);
    assert.equal((await ng.proxy("jsonup")).body, String(a));
    // a GET document edited and put back (read-only fields are ignored)
    got.servers[1].backup = false;
    got.method = "round_robin";
    const rp = await api("PUT", "/v1/upstreams/jsonup", { json: got, headers: { "if-match": `"${got.revision}"` } });
    assert.equal(rp.status, 200);
    assert.equal(rp.json.method, "round_robin");
    const seen = new Set();
    for (let i = 0; i < 8; i++) seen.add((await ng.proxy("jsonup")).body);
    assert.deepEqual([...seen].sort(), [String(a), String(b)].sort());
    await agree("jsonup");
    // a plain POST is seen by the JSON API too
    assert.equal((await api("POST", "/upstream/jsonup", { body: `server 127.0.0.1:${b} weight=7 max_conns=9;` })).status, 200);
    const after = await agree("jsonup");
    assert.deepEqual(after.servers.map((s) => [s.server, s.weight, s.max_conns]), [[`127.0.0.1:${b}`, 7, 9]]);
    // GET of the list, 404s, a PUT that does not validate
    const all = await api("GET", "/v1/upstreams", { headers: READ });
    assert.ok(all.json.upstreams.some((u) => u.name === "jsonup"));
    assert.equal((await api("GET", "/v1/upstreams/nope")).status, 404);
    const bad = await api("PUT", "/v1/upstreams/jsonup", { json: { servers: [{ server: "127.0.0.1:0" }] } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.status, 400);
    assert.match(bad.json.reason, /invalid port in "127.0.0.1:0" of server 1$/);
    assert.equal((await agree("jsonup")).revision, after.revision);
  });

  test("add, change, drain and remove one server without re-sending the list", async () => {
    const c = await api("PUT", "/v1/upstreams/per", { json: { servers: [{ server: `127.0.0.1:${a}` }] } });
    assert.equal(c.status, 201);
    // add
    const add = await api("POST", "/v1/upstreams/per/servers", { json: { server: `127.0.0.1:${b}`, weight: 2 } });
    assert.equal(add.status, 201);
    assert.equal(add.json.server, `127.0.0.1:${b}`);
    assert.equal(add.json.weight, 2);
    assert.equal(add.json.active, 0);
    assert.equal(add.headers.location, `/v1/upstreams/per/servers/127.0.0.1%3A${b}`);
    let st = await agree("per");
    assert.equal(add.headers.etag, `"${st.revision}"`);
    assert.deepEqual(st.servers.map((s) => s.server), [`127.0.0.1:${a}`, `127.0.0.1:${b}`]);
    assert.equal((await api("POST", "/v1/upstreams/per/servers", { json: { server: `127.0.0.1:${b}` } })).status, 409);
    assert.equal((await api("POST", "/v1/upstreams/nope/servers", { json: { server: `127.0.0.1:${b}` } })).status, 404);
    // change each parameter
    for (const patch of [{ weight: 5 }, { max_fails: 0 }, { fail_timeout: 30 }, { max_conns: 100 }, { down: true }, { down: false }]) {
      const p = await api("PATCH", `/v1/upstreams/per/servers/127.0.0.1:${a}`, { json: patch });
      assert.equal(p.status, 200, JSON.stringify(p.json));
      for (const [k, v] of Object.entries(patch)) assert.equal(p.json[k], v);
      st = await agree("per");
      assert.equal(p.headers.etag, `"${st.revision}"`);
    }
    assert.deepEqual(st.servers.map((s) => [s.weight, s.max_fails, s.fail_timeout, s.max_conns, s.down]), [[5, 0, 30, 100, false], [2, 1, 10, 0, false]]);
    const bk = await api("PATCH", `/v1/upstreams/per/servers/127.0.0.1:${b}`, { json: { backup: true } });
    assert.equal(bk.status, 200);
    assert.equal((await agree("per")).servers[1].backup, true);
    // the address is the server's name: it cannot be changed; an unknown server is 404
    assert.equal((await api("PATCH", `/v1/upstreams/per/servers/127.0.0.1:${a}`, { json: { server: "127.0.0.1:9" } })).status, 400);
    assert.equal((await api("PATCH", "/v1/upstreams/per/servers/127.0.0.1:9", { json: { weight: 1 } })).status, 404);
    // GET one server
    const one = await api("GET", `/v1/upstreams/per/servers/127.0.0.1:${a}`, { headers: READ });
    assert.equal(one.json.weight, 5);
    // remove
    const rm = await api("DELETE", `/v1/upstreams/per/servers/127.0.0.1:${b}`);
    assert.equal(rm.status, 200);
    assert.deepEqual(rm.json.servers.map((s) => s.server), [`127.0.0.1:${a}`]);
    st = await agree("per");
    // the last server cannot go: an upstream has at least one
    const last = await api("DELETE", `/v1/upstreams/per/servers/127.0.0.1:${a}`);
    assert.equal(last.status, 400);
    assert.match(last.json.reason, /no servers are inside upstream/);
    assert.equal((await agree("per")).revision, st.revision);
    // the history names each action and its server
    const acts = (await history("per")).map((e) => [e.action, e.server ?? null]).reverse();
    assert.deepEqual(acts.slice(0, 2), [["put", null], ["add_server", `127.0.0.1:${b}`]]);
    assert.deepEqual(acts.at(-1), ["remove_server", `127.0.0.1:${b}`]);
    // a unix socket server is named by its URL-encoded address
    const u = await api("POST", "/v1/upstreams/per/servers", { json: { server: "unix:/tmp/dyups-test.sock", down: true } });
    assert.equal(u.status, 201);
    assert.equal((await api("GET", "/v1/upstreams/per/servers/unix%3A%2Ftmp%2Fdyups-test.sock")).json.down, true);
    assert.equal((await api("DELETE", "/v1/upstreams/per/servers/unix%3A%2Ftmp%2Fdyups-test.sock")).status, 200);
    // DELETE of the upstream
    const del = await api("DELETE", "/v1/upstreams/per");
    assert.equal(del.status, 200);
    assert.equal(del.json.deleted, "per");
    assert.equal(await agree("per"), undefined);
    assert.equal((await api("DELETE", "/v1/upstreams/per")).status, 404);
  });

  test("drain: requests in flight finish, no new request reaches the server, its count falls to 0", async () => {
    // a slow backend that counts what it receives
    const [slowPort] = await freePorts(1);
    let received = 0, inFlight = 0;
    const slow = http.createServer((req, res) => {
      received++; inFlight++;
      setTimeout(() => { inFlight--; res.end(String(slowPort)); }, 1500);
    });
    await new Promise((r) => slow.listen(slowPort, "127.0.0.1", r));
    try {
      const c = await api("PUT", "/v1/upstreams/drainme", { json: { servers: [{ server: `127.0.0.1:${slowPort}` }, { server: `127.0.0.1:${a}` }] } });
      assert.equal(c.status, 201);
      // requests until two are in flight on the slow server
      const pending = [];
      await eventually(async () => {
        if (inFlight < 2) pending.push(ng.proxy("drainme"));
        await sleep(10);
        return inFlight >= 2;
      }, 5000);
      const flying = inFlight;
      assert.ok(flying >= 2);
      const id = `127.0.0.1:${slowPort}`;
      // `active` comes from the traffic counters, which workers publish at their timer (about every 0.1 s here)
      const activeNow = async () => (await api("GET", `/v1/upstreams/drainme/servers/${id}`)).json.active;
      assert.ok(await eventually(async () => (await activeNow()) === flying, 1000), "active counts the requests in flight");
      const dr = await api("PATCH", `/v1/upstreams/drainme/servers/${id}`, { json: { drain: true } });
      assert.equal(dr.status, 200);
      assert.equal(dr.json.drain, true);
      assert.equal(await activeNow(), flying, "the drained server's requests are still in flight");
      const st = await agree("drainme");
      assert.match(st.body, new RegExp(`server 127.0.0.1:${slowPort} drain;`));
      // no new request reaches it, on either worker
      const got = received;
      const rs = await Promise.all(Array.from({ length: 20 }, () => ng.proxy("drainme")));
      assert.ok(rs.every((r) => r.status === 200 && r.body === String(a)));
      assert.equal(received, got, "no new request reached the drained server");
      // the requests in flight finish on it, and its count falls to 0
      const done = await Promise.all(pending);
      assert.equal(done.filter((r) => r.body === String(slowPort)).length, flying);
      assert.ok(done.every((r) => r.status === 200));
      const empty = await eventually(async () => (await api("GET", `/v1/upstreams/drainme/servers/${id}`)).json.active === 0, 3000);
      assert.ok(empty, "its active count fell to 0");
      // undrain: it gets requests again
      assert.equal((await api("PATCH", `/v1/upstreams/drainme/servers/${id}`, { json: { drain: false } })).status, 200);
      await Promise.all(Array.from({ length: 6 }, () => ng.proxy("drainme")));
      assert.ok(received > got);
      assert.equal((await api("DELETE", "/v1/upstreams/drainme")).status, 200);
    } finally {
      slow.closeAllConnections?.();
      await new Promise((r) => slow.close(r));
    }
  });

  test("dry_run answers the diff and changes nothing", async () => {
    assert.equal((await api("PUT", "/v1/upstreams/dry", { json: { servers: [{ server: `127.0.0.1:${a}` }, { server: `127.0.0.1:${b}` }] } })).status, 201);
    const s0 = await snapshot();
    const put = await api("PUT", "/v1/upstreams/dry?dry_run=1", {
      json: { method: "ip_hash", servers: [{ server: `127.0.0.1:${a}`, weight: 4 }, { server: "127.0.0.1:1" }] },
    });
    assert.equal(put.status, 200);
    assert.equal(put.json.dry_run, true);
    assert.equal(put.json.operation, "replace");
    assert.deepEqual(put.json.diff.added.map((s) => s.server), ["127.0.0.1:1"]);
    assert.deepEqual(put.json.diff.removed.map((s) => s.server), [`127.0.0.1:${b}`]);
    assert.deepEqual(put.json.diff.changed, [{ server: `127.0.0.1:${a}`, changes: { weight: { from: 1, to: 4 } } }]);
    assert.deepEqual(put.json.diff.settings, { method: { from: "round_robin", to: "ip_hash" } });
    assert.equal(put.json.body, `ip_hash;\nserver 127.0.0.1:${a} weight=4;\nserver 127.0.0.1:1;\n`);
    const create = await api("PUT", "/v1/upstreams/drynew?dry_run=true", { json: { servers: [{ server: `127.0.0.1:${a}` }] } });
    assert.equal(create.json.operation, "create");
    assert.equal(create.json.revision, 0);
    const add = await api("POST", "/v1/upstreams/dry/servers?dry_run=1", { json: { server: "127.0.0.1:2" } });
    assert.deepEqual(add.json.diff.added.map((s) => s.server), ["127.0.0.1:2"]);
    const patch = await api("PATCH", `/v1/upstreams/dry/servers/127.0.0.1:${b}?dry_run=1`, { json: { drain: true } });
    assert.deepEqual(patch.json.diff.changed, [{ server: `127.0.0.1:${b}`, changes: { drain: { from: false, to: true } } }]);
    const rm = await api("DELETE", `/v1/upstreams/dry/servers/127.0.0.1:${b}?dry_run=1`);
    assert.deepEqual(rm.json.diff.removed.map((s) => s.server), [`127.0.0.1:${b}`]);
    const del = await api("DELETE", "/v1/upstreams/dry?dry_run=1");
    assert.equal(del.json.operation, "delete");
    assert.equal(del.json.diff.removed.length, 2);
    // a dry run validates like the write: a bad body is 400, a stale If-Match 412
    const bad = await api("PUT", "/v1/upstreams/dry?dry_run=1", { json: { servers: [{ server: "169.254.169.254:80" }] } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.reason, /target 169\.254\.169\.254 is a link-local or cloud metadata address/);
    assert.equal((await api("PUT", "/v1/upstreams/dry?dry_run=1", { json: { servers: [{ server: "127.0.0.1:3" }] }, headers: { "if-match": '"1"' } })).status, 412);
    assert.equal((await api("PUT", "/v1/upstreams/dry?dry_run=maybe", { json: { servers: [{ server: "127.0.0.1:3" }] } })).status, 400);
    assert.deepEqual(await snapshot(), s0, "nothing changed");
    assert.equal((await api("GET", "/v1/upstreams/drynew")).status, 404);
  });

  test("If-Match conflicts give 412 with nothing changed; the right ETag writes", async () => {
    const c = await api("PUT", "/v1/upstreams/cond", { json: { servers: [{ server: `127.0.0.1:${a}` }] } });
    const etag = c.headers.etag;
    assert.equal((await api("POST", "/upstream/cond", { body: `server 127.0.0.1:${b};` })).status, 200); // someone else writes
    const s0 = await snapshot();
    const stale = { "if-match": etag };
    const tries = [
      ["PUT", "/v1/upstreams/cond", { servers: [{ server: `127.0.0.1:${a}` }] }],
      ["DELETE", "/v1/upstreams/cond"],
      ["POST", "/v1/upstreams/cond/servers", { server: "127.0.0.1:5" }],
      ["PATCH", `/v1/upstreams/cond/servers/127.0.0.1:${b}`, { weight: 9 }],
      ["DELETE", `/v1/upstreams/cond/servers/127.0.0.1:${b}`],
      ["POST", "/v1/upstreams/cond/rollback", { revision: c.json.revision }],
    ];
    for (const [m, p, json] of tries) {
      const r = await api(m, p, { json, headers: stale });
      assert.equal(r.status, 412, `${m} ${p}`);
      assert.equal(r.json.status, 412);
      assert.match(r.json.reason, /revision mismatch: upstream is at revision \d+/);
    }
    // create-only and must-exist
    assert.equal((await api("PUT", "/v1/upstreams/cond", { json: { servers: [{ server: "127.0.0.1:5" }] }, headers: { "if-none-match": "*" } })).status, 412);
    assert.equal((await api("PUT", "/v1/upstreams/condnew", { json: { servers: [{ server: "127.0.0.1:5" }] }, headers: { "if-match": "*" } })).status, 412);
    assert.equal((await api("PUT", "/v1/upstreams/cond", { json: { servers: [{ server: "127.0.0.1:5" }] }, headers: { "if-match": "garbage" } })).status, 400);
    assert.deepEqual(await snapshot(), s0, "nothing changed");
    // the current ETag writes; the answer carries the next one
    const cur = await api("GET", "/v1/upstreams/cond");
    const ok = await api("PATCH", `/v1/upstreams/cond/servers/127.0.0.1:${b}`, { json: { weight: 9 }, headers: { "if-match": cur.headers.etag } });
    assert.equal(ok.status, 200);
    assert.notEqual(ok.headers.etag, cur.headers.etag);
    assert.equal((await api("PUT", "/v1/upstreams/condnew", { json: { servers: [{ server: "127.0.0.1:5" }] }, headers: { "if-none-match": "*" } })).status, 201);
    assert.equal((await api("PUT", "/v1/upstreams/cond", { json: { servers: [{ server: "127.0.0.1:5" }] }, headers: { "if-match": "*" } })).status, 200);
    await agree("cond");
  });

  test("under a prefix location: /dyups/v1/... and /dyups/history", async () => {
    const px = (m, p, json) => request(prefixPort, m, p, { headers: AUTH, body: json === undefined ? undefined : JSON.stringify(json) });
    const c = await px("PUT", "/dyups/v1/upstreams/pfx", { servers: [{ server: "unix:/tmp/dyups-pfx.sock" }, { server: `127.0.0.1:${a}` }] });
    assert.equal(c.status, 201, c.body);
    const add = await px("POST", "/dyups/v1/upstreams/pfx/servers", { server: `127.0.0.1:${b}` });
    assert.equal(add.headers.location, `/dyups/v1/upstreams/pfx/servers/127.0.0.1%3A${b}`);
    const p = await px("PATCH", "/dyups/v1/upstreams/pfx/servers/unix%3A%2Ftmp%2Fdyups-pfx.sock", { down: true });
    assert.equal(p.status, 200, p.body);
    assert.equal(JSON.parse(p.body).down, true);
    assert.equal(JSON.parse((await px("GET", "/dyups/history/pfx")).body).history.length, 3);
    assert.equal((await px("GET", "/v1/upstreams/pfx")).status, 404, "outside the prefix");
    await agree("pfx");
    assert.equal((await api("DELETE", "/v1/upstreams/pfx")).status, 200);
  });

  test("roles and errors are JSON: no token 401, a read token writes nothing (403), unknown paths 404, wrong methods 405", async () => {
    const none = await request(ng.apiPort, "GET", "/v1/upstreams");
    assert.equal(none.status, 401);
    assert.equal(JSON.parse(none.body).status, 401);
    assert.match(none.headers["www-authenticate"], /^Bearer/);
    const ro = await api("PUT", "/v1/upstreams/ro", { json: { servers: [{ server: "127.0.0.1:5" }] }, headers: READ });
    assert.equal(ro.status, 403);
    assert.match(ro.json.reason, /read role/);
    assert.equal((await api("GET", "/v1/upstreams/ro")).status, 404);
    assert.equal((await api("GET", "/v1/nothing")).status, 404);
    const m = await api("POST", "/v1/upstreams/x");
    assert.equal(m.status, 405);
    assert.equal(m.headers.allow, "GET, HEAD, PUT, DELETE");
  });
});

describe("the OpenAPI document", () => {
  const deref = (doc, s) => { while (s && s.$ref) s = s.$ref.split("/").slice(1).reduce((o, k) => o[k], doc); return s; };
  /** A small JSON Schema (OpenAPI 3.0 subset) check: the problems found, [] when none. */
  function check(doc, schema, v, at = "$") {
    schema = deref(doc, schema);
    if (!schema || Object.keys(schema).length === 0) return [];
    if (v === null && schema.nullable) return [];
    const out = [];
    if (schema.allOf) for (const s of schema.allOf) out.push(...check(doc, s, v, at));
    if (schema.oneOf && !schema.oneOf.some((s) => check(doc, s, v, at).length === 0)) out.push(`${at}: matches none of oneOf`);
    const t = schema.type;
    const is = { object: (x) => x && typeof x === "object" && !Array.isArray(x), array: Array.isArray, string: (x) => typeof x === "string",
      integer: Number.isInteger, number: (x) => typeof x === "number", boolean: (x) => typeof x === "boolean" };
    if (t && !is[t](v)) return [...out, `${at}: not ${t}: ${JSON.stringify(v)}`];
    if (schema.enum && !schema.enum.includes(v)) out.push(`${at}: ${JSON.stringify(v)} not in enum`);
    if (schema.minimum !== undefined && v < schema.minimum) out.push(`${at}: below minimum`);
    if (t === "object") {
      for (const r of schema.required || []) if (!(r in v)) out.push(`${at}: missing ${r}`);
      for (const [k, x] of Object.entries(v)) {
        if (schema.properties && k in schema.properties) out.push(...check(doc, schema.properties[k], x, `${at}.${k}`));
        else if (schema.additionalProperties === false) out.push(`${at}: unexpected ${k}`);
        else if (typeof schema.additionalProperties === "object") out.push(...check(doc, schema.additionalProperties, x, `${at}.${k}`));
      }
    }
    if (t === "array" && schema.items) v.forEach((x, i) => out.push(...check(doc, schema.items, x, `${at}[${i}]`)));
    return out;
  }

  test("parses, carries the version, and every path answers as documented", async () => {
    const r = await api("GET", "/v1/openapi.json", { headers: READ });
    assert.equal(r.status, 200);
    const doc = r.json;
    assert.equal(doc.openapi, "3.0.3");
    assert.equal(doc.info.version, (await api("GET", "/status")).json.dyups_version);
    // every $ref resolves
    const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g);
    for (const ref of refs) assert.ok(deref(doc, { $ref: JSON.parse(`{${ref}}`).$ref }), ref);
    // the same document is kept in the repository
    const repo = JSON.parse(readFileSync(new URL("../../docs/openapi.json", import.meta.url), "utf8"));
    assert.deepEqual({ ...doc, info: { ...doc.info, version: "" } }, { ...repo, info: { ...repo.info, version: "" } });

    const n = "oa";
    const sv = `127.0.0.1:${a}`;
    const calls = [ // [method, path template, path params, { json, query, headers }] in an order that makes each succeed
      ["get", "/v1/openapi.json"],
      ["put", "/v1/upstreams/{name}", { name: n }, { json: { servers: [{ server: sv }] }, query: "?dry_run=1" }],
      ["put", "/v1/upstreams/{name}", { name: n }, { json: { servers: [{ server: sv }] } }],
      ["put", "/v1/upstreams/{name}", { name: n }, { json: { servers: [{ server: sv, weight: 2 }] } }],
      ["put", "/v1/upstreams/{name}", { name: n }, { json: { servers: [] } }],
      ["put", "/v1/upstreams/{name}", { name: n }, { json: { servers: [{ server: sv }] }, headers: { "if-match": '"1"' } }],
      ["get", "/v1/upstreams"],
      ["get", "/v1/upstreams/{name}", { name: n }],
      ["get", "/v1/upstreams/{name}", { name: "missing" }],
      ["get", "/v1/upstreams/{name}/servers", { name: n }],
      ["get", "/v1/upstreams/{name}/servers", { name: "missing" }],
      ["post", "/v1/upstreams/{name}/servers", { name: n }, { json: { server: "127.0.0.1:7" }, query: "?dry_run=1" }],
      ["post", "/v1/upstreams/{name}/servers", { name: n }, { json: { server: "127.0.0.1:7" } }],
      ["post", "/v1/upstreams/{name}/servers", { name: n }, { json: { server: "127.0.0.1:7" } }],
      ["get", "/v1/upstreams/{name}/servers/{server}", { name: n, server: "127.0.0.1:7" }],
      ["get", "/v1/upstreams/{name}/servers/{server}", { name: n, server: "127.0.0.1:8" }],
      ["patch", "/v1/upstreams/{name}/servers/{server}", { name: n, server: "127.0.0.1:7" }, { json: { drain: true } }],
      ["patch", "/v1/upstreams/{name}/servers/{server}", { name: n, server: "127.0.0.1:7" }, { json: { weight: 0 } }],
      ["delete", "/v1/upstreams/{name}/servers/{server}", { name: n, server: "127.0.0.1:7" }, { query: "?dry_run=1" }],
      ["delete", "/v1/upstreams/{name}/servers/{server}", { name: n, server: "127.0.0.1:7" }],
      ["post", "/v1/upstreams/{name}/rollback", { name: n }, { json: { revision: 999999 } }],
      ["post", "/v1/upstreams/{name}/rollback", { name: n }, { json: "latest" }],
      ["get", "/v1/history", {}, { query: "?limit=3" }],
      ["get", "/v1/history/{name}", { name: n }],
      ["delete", "/v1/upstreams/{name}", { name: n }, { query: "?dry_run=1" }],
      ["delete", "/v1/upstreams/{name}", { name: n }],
      ["delete", "/v1/upstreams/{name}", { name: n }],
    ];
    const exercised = new Set();
    for (const [method, tpl, params = {}, o = {}] of calls) {
      const op = doc.paths[tpl]?.[method];
      assert.ok(op, `${method} ${tpl} is documented`);
      let json = o.json;
      if (json === "latest") {
        const h = (await api("GET", `/v1/history/${n}`)).json.history.find((e) => e.op === "update" && e.body);
        json = { revision: h.rev_after };
      }
      const p = tpl.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(params[k])) + (o.query ?? "");
      const res = await api(method.toUpperCase(), p, { json, headers: o.headers });
      const documented = op.responses[String(res.status)];
      assert.ok(documented, `${method} ${p}: status ${res.status} is documented (${res.body})`);
      const resp = deref(doc, documented);
      const schema = resp.content?.["application/json"]?.schema;
      assert.ok(schema, `${method} ${p} ${res.status}: JSON documented`);
      assert.match(res.headers["content-type"], /^application\/json/);
      assert.deepEqual(check(doc, schema, res.json), [], `${method} ${p} ${res.status}: ${res.body}`);
      for (const [h, spec] of Object.entries(resp.headers || {})) {
        const v = res.headers[h.toLowerCase()];
        if (spec.required) assert.ok(v !== undefined, `${method} ${p} ${res.status}: header ${h}`);
        if (h === "ETag" && v !== undefined) assert.match(v, /^"\d+"$/);
      }
      exercised.add(`${method} ${tpl}`);
    }
    for (const [tpl, item] of Object.entries(doc.paths)) {
      for (const m of Object.keys(item)) if (m !== "parameters") assert.ok(exercised.has(`${m} ${tpl}`), `${m} ${tpl} was called`);
    }
  });
});

describe("across a restart (state file)", () => {
  test("a drained server stays drained; the history starts with what was restored, which can be rolled back to", async () => {
    const init = { admin_tokens: [{ token: W, role: "write", name: "ci" }] };
    const prefix = mkdtempSync(path.join(tmpdir(), "dyups-it-"));
    const stateFile = path.join(prefix, "state", "state.json");
    const [c] = await freePorts(1); // a backend of ours: the same port in both runs
    const o = { workers: 2, backends: 0, prefix, init: { ...init, state_file: stateFile }, httpExtra: `server { listen 127.0.0.1:${c}; location / { return 200 "${c}"; } }` };
    let x = await startNginx(o);
    const ax = (m, p, json) => request(x.apiPort, m, p, { headers: AUTH, body: json === undefined ? undefined : JSON.stringify(json) });
    try {
      assert.equal((await ax("PUT", "/v1/upstreams/keep", { servers: [{ server: `127.0.0.1:${c}` }, { server: "127.0.0.1:1", drain: true }] })).status, 201);
      assert.ok(await eventually(() => existsSync(stateFile) && readFileSync(stateFile, "utf8").includes("drain"), 5000));
      await x.stop();
      x = await startNginx(o);
      const doc = JSON.parse((await ax("GET", "/v1/upstreams/keep")).body);
      assert.deepEqual(doc.servers.map((s) => s.drain), [false, true]);
      const rs = await Promise.all(Array.from({ length: 10 }, () => request(x.proxyPort, "GET", "/", { headers: { host: "keep" } })));
      assert.ok(rs.every((r) => r.status === 200 && r.body === String(c)), "the drained server gets no request");
      const hist = JSON.parse((await ax("GET", "/history/keep")).body).history;
      assert.equal(hist.length, 1);
      assert.deepEqual(hist[0].source, { kind: "state_file" });
      assert.equal(hist[0].rev_after, doc.revision);
      assert.equal((await ax("PATCH", "/v1/upstreams/keep/servers/127.0.0.1:1", { drain: false })).status, 200);
      const back = await ax("POST", `/upstream/keep?rollback=${doc.revision}`);
      assert.equal(back.status, 200);
      assert.equal(JSON.parse((await ax("GET", "/v1/upstreams/keep")).body).servers[1].drain, true);
    } finally {
      await x.stop();
      rmSync(prefix, { recursive: true, force: true });
    }
  });
});

describe("a rollback to a body that no longer validates", () => {
  // last: it reloads nginx with a stricter allowed_targets (the dict, and so the history, survive a reload)
  test("answers 400 with the reason and changes nothing", async () => {
    const r1 = await api("POST", "/upstream/strict", { body: "server 127.0.0.2:80;" });
    const rev1 = Number(r1.headers["x-dyups-version"]);
    assert.equal((await api("POST", "/upstream/strict", { body: `server 127.0.0.1:${a};` })).status, 200);
    const conf = ng.conf.replace('require("dyups").init({', 'require("dyups").init({ ["allowed_targets"] = { "127.0.0.1/32" },');
    assert.notEqual(conf, ng.conf);
    writeFileSync(path.join(ng.prefix, "conf/nginx.conf"), conf);
    const old = ng.workerPids();
    ng.signal("HUP");
    assert.ok(await eventually(() => { const p = ng.workerPids(); return p.length === 2 && p.every((x) => !old.includes(x)); }, 10000));
    const s0 = await snapshot();
    const rb = await api("POST", `/upstream/strict?rollback=${rev1}`);
    assert.equal(rb.status, 400);
    assert.equal(rb.body, "add server failed: server 1 (127.0.0.2:80): target 127.0.0.2 is not in allowed_targets");
    const j = await api("POST", "/v1/upstreams/strict/rollback", { json: { revision: rev1 } });
    assert.equal(j.status, 400);
    assert.equal(j.json.reason, "server 1 (127.0.0.2:80): target 127.0.0.2 is not in allowed_targets");
    assert.deepEqual(await snapshot(), s0);
    assert.equal((await history("strict")).length, 2, "the history survived the reload");
    assert.doesNotMatch(ng.errorLog(), /runtime error|lua entry thread aborted|stack traceback/);
  });
});
