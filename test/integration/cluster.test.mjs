// Cluster mode on a real etcd (one member, started here with its own data directory) and three product
// nodes A, B, C (2 workers each, each with its state file): propagation, etcd revisions as ETags across
// nodes, no lost update under If-Match from 12 writers, plain concurrent writes, a node stopped during writes,
// a compaction while a node is down, all of etcd stopped (0 failed proxy requests, writes 503), auth.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { startNginxExpectFailure, sleep, eventually } from "./harness.mjs";
import { startEtcd, gateway, b64 } from "./etcd.mjs";
import { startNode, status, converged, timeUntil, percentile } from "./cluster-lib.mjs";

let etcd;
let A, B, C;
const nodes = () => [A, B, C];
const extra = [];
const luaApi = `location = /lua-update { content_by_lua_block {
  local status, msg = require("dyups").update(ngx.var.arg_name, ngx.unescape_uri(ngx.var.arg_body))
  ngx.say(status, " ", msg) } }`;

before(async () => {
  etcd = await startEtcd({ members: 1 });
  [A, B, C] = await Promise.all([0, 1, 2].map(() => startNode({ etcd: etcd.endpoints, serverExtra: luaApi })));
});
after(async () => {
  for (const n of [A, B, C, ...extra]) if (n) { await n.stop(); n.remove(); }
  if (etcd) await etcd.stop();
});

const body = (port, extra = "") => `${extra}server 127.0.0.1:${port};`;

describe("options", () => {
  test("a bad cluster option stops nginx with the reason", async () => {
    const cases = [
      [{ cluster: {} }, /option "cluster.etcd" is required/],
      [{ cluster: { etcd: ["nohost"] } }, /option "cluster.etcd" entry 1 \(nohost\) must be "host:port"/],
      [{ cluster: { etcd: ["127.0.0.1:2379"], prefix: "dyups/" } }, /option "cluster.prefix"/],
      [{ cluster: { etcd: ["127.0.0.1:2379"], user: "u" } }, /"cluster.user" and "cluster.password" go together/],
      [{ cluster: { etcd: ["127.0.0.1:2379"], tls: true } }, /unknown key "tls"/],
      [{ cluster: { etcd: ["127.0.0.1:2379"] }, upstream_conf: "/dev/null" }, /"upstream_conf" cannot be used with "cluster"/],
    ];
    for (const [init, re] of cases) assert.match(await startNginxExpectFailure({ workers: 1, backends: 0, init }), re);
  });
});

describe("one etcd, three nodes", () => {
  test("a write on one node is routed by the two others within the watch delay (measured)", async () => {
    const delays = [];
    for (let i = 0; i < 15; i++) {
      const [w, ...others] = [nodes()[i % 3], ...nodes().filter((_, j) => j !== i % 3)];
      const port = w.backendPorts[i % 2];
      const r = await w.post("/upstream/prop", body(port, `# ${i}\n`));
      assert.equal(r.status, 200, r.body);
      // read-your-writes: the writing node routes by it at once, on every worker
      const own = await Promise.all(Array.from({ length: 8 }, () => w.proxy("prop")));
      assert.ok(own.every((x) => x.status === 200 && x.body === String(port)), "the writing node routes by its write after the 200");
      await Promise.all(others.map(async (o) => {
        const etag = `"${r.headers["x-dyups-version"]}"`;
        delays.push(await timeUntil(async () => (await o.get("/upstream/prop")).headers.etag === etag, 3000));
        const p = await o.proxy("prop");
        assert.equal(p.body, String(port));
      }));
    }
    console.log(`# propagation to the other nodes: p50 ${percentile(delays, 50).toFixed(1)} ms, max ${Math.max(...delays).toFixed(1)} ms (${delays.length} samples)`);
    await converged(nodes(), etcd);
  });

  test("ETag is the etcd revision on every node: read on A, If-Match on B; 412 changes nothing; the Lua API writes through etcd", async () => {
    const [p1, p2] = A.backendPorts;
    const w = await A.post("/upstream/etag", body(p1));
    assert.equal(w.status, 200);
    const rev = Number(w.headers["x-dyups-version"]);
    assert.equal((await etcd.get("/dyups/upstreams/etag")).mod, rev, "X-Dyups-Version is the etcd revision");
    await converged(nodes(), etcd);
    for (const n of nodes()) {
      const g = await n.get("/upstream/etag");
      assert.equal(g.headers.etag, `"${rev}"`);
      assert.equal(JSON.parse((await n.get("/upstream/etag?format=json")).body).revision, rev);
    }
    // If-Match with the revision read on A, written on B
    const ok = await B.post("/upstream/etag", body(p2), { headers: { "if-match": `"${rev}"` } });
    assert.equal(ok.status, 200, ok.body);
    const rev2 = Number(ok.headers["x-dyups-version"]);
    assert.ok(rev2 > rev);
    // the same stale revision, now on C: 412, nothing changes
    const stale = await C.post("/upstream/etag", body(p1), { headers: { "if-match": `"${rev}"` } });
    assert.equal(stale.status, 412);
    assert.equal(stale.body, `add server failed: revision mismatch: upstream is at revision ${rev2}`);
    assert.equal((await etcd.get("/dyups/upstreams/etag")).mod, rev2);
    const created = await A.post("/upstream/etag", body(p1), { headers: { "if-none-match": "*" } });
    assert.equal(created.status, 412, "If-None-Match: * refuses an existing upstream");
    const delStale = await A.del("/upstream/etag", { headers: { "if-match": `"${rev}"` } });
    assert.equal(delStale.status, 412);
    const del = await C.del("/upstream/etag", { headers: { "if-match": `"${rev2}"` } });
    assert.equal(del.status, 200);
    assert.equal((await C.proxy("etag")).status, 502, "the writing node routes by its delete at once");
    assert.equal(await etcd.get("/dyups/upstreams/etag"), undefined);
    // bad input is refused locally: nothing goes to etcd
    const rev3 = await etcd.revision();
    const bad = await B.post("/upstream/etag", "server 127.0.0.1:1 bogus=1;");
    assert.equal(bad.status, 400);
    assert.match(bad.body, /^add server failed: invalid parameter "bogus=1"/);
    const huge = await B.post("/upstream/etag", `# ${"x".repeat(2200000)}\n${body(p1)}`);
    assert.equal(huge.status, 413, "a body larger than etcd takes");
    assert.match(huge.body, /^add server failed: etcd refused the write: .*larger than max.*; nothing was changed$/);
    assert.equal(await etcd.revision(), rev3);
    // the Lua API on A
    const lua = await A.get(`/lua-update?name=viaLua&body=${encodeURIComponent(body(p2))}`);
    assert.equal(lua.body, "200 success\n");
    await converged(nodes(), etcd);
    assert.equal((await C.proxy("vialua")).body, String(p2));
  });

  test("3 nodes x 4 writers with If-Match on the same upstream lose no update", async () => {
    const [p] = A.backendPorts;
    assert.equal((await A.post("/upstream/counter", body(p, "# n=0\n"))).status, 200);
    await converged(nodes(), etcd);
    const perWriter = 8;
    let conflicts = 0;
    await Promise.all(nodes().flatMap((n) => Array.from({ length: 4 }, async () => {
      for (let done = 0; done < perWriter;) {
        const g = await n.get("/upstream/counter?format=json");
        const cur = JSON.parse(g.body);
        const k = Number(cur.body.match(/# n=(\d+)/)[1]);
        const r = await n.post("/upstream/counter", body(p, `# n=${k + 1}\n`), { headers: { "if-match": g.headers.etag } });
        if (r.status === 200) done++;
        else { assert.equal(r.status, 412, r.body); conflicts++; await sleep(Math.random() * 5); }
      }
    })));
    const { kvs } = await converged(nodes(), etcd);
    const final = JSON.parse(kvs["/dyups/upstreams/counter"].value).body;
    assert.equal(final, body(p, `# n=${3 * 4 * perWriter}\n`), "every increment is there");
    for (const n of nodes()) assert.equal(JSON.parse((await n.get("/upstream/counter?format=json")).body).body, final);
    console.log(`# If-Match: ${3 * 4 * perWriter} increments, ${conflicts} answered 412 and were retried`);
  });

  test("plain POSTs from every node at once: one etcd revision each, every node ends at etcd's last", async () => {
    const writes = [];
    await Promise.all(nodes().flatMap((n, ni) => Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; i < 8; i++) {
        const name = `plain${(w + i) % 3}`;
        const b = body(1000 + ni * 100 + w * 10 + i);
        const r = await n.post(`/upstream/${name}`, b);
        assert.equal(r.status, 200, r.body);
        writes.push({ rev: Number(r.headers["x-dyups-version"]), name, b });
      }
    })));
    assert.equal(new Set(writes.map((x) => x.rev)).size, writes.length, "every write has its own revision");
    const last = {};
    for (const x of writes.sort((a, b) => a.rev - b.rev)) last[x.name] = x;
    const { kvs } = await converged(nodes(), etcd);
    for (const [name, x] of Object.entries(last)) {
      assert.equal(kvs[`/dyups/upstreams/${name}`].mod, x.rev);
      for (const n of nodes()) assert.equal(JSON.parse((await n.get(`/upstream/${name}?format=json`)).body).body, x.b);
    }
  });

  test("the watching worker killed (SIGKILL), then nginx -s reload: another worker follows etcd at once", async () => {
    const [p1, p2] = A.backendPorts;
    const watcher = (await status(B)).cluster.watcher;
    assert.ok(B.workerPids().includes(watcher));
    process.kill(watcher, "SIGKILL");
    assert.equal((await A.post("/upstream/handover", body(p1))).status, 200);
    await converged(nodes(), etcd);
    assert.equal((await B.proxy("handover")).body, String(p1));
    assert.notEqual((await status(B)).cluster.watcher, watcher);
    const old = B.workerPids();
    B.signal("HUP");
    assert.ok(await eventually(() => { const p = B.workerPids(); return p.length === 2 && p.every((x) => !old.includes(x)); }, 10000),
      "the old workers exit after a reload (the watcher stops its threads)");
    assert.equal((await C.post("/upstream/handover", body(p2))).status, 200);
    const { statuses } = await converged(nodes(), etcd);
    assert.ok(!old.includes(statuses[1].watcher));
    assert.equal((await B.proxy("handover")).body, String(p2));
  });

  test("a node stopped while writes happen and restarted converges (digests equal, /status)", async () => {
    const [p1, p2] = A.backendPorts;
    for (let i = 0; i < 5; i++) assert.equal((await A.post(`/upstream/stop${i}`, body(p1))).status, 200);
    await converged(nodes(), etcd);
    const stateDir = C.stateDir;
    const stopping = C.stop();
    for (let i = 0; i < 30; i++) {
      const w = i % 2 ? A : B;
      assert.equal((await w.post(`/upstream/stop${i % 5}`, body(i % 2 ? p1 : p2, `# ${i}\n`))).status, 200);
    }
    assert.equal((await A.del("/upstream/stop0")).status, 200);
    assert.equal((await B.del("/upstream/stop1")).status, 200);
    await stopping;
    assert.equal((await A.post("/upstream/whiledown", body(p2))).status, 200);
    C = await startNode({ etcd: etcd.endpoints, stateDir, serverExtra: luaApi });
    const { statuses } = await converged(nodes(), etcd);
    assert.equal(new Set(statuses.map((s) => s.digest)).size, 1);
    assert.equal((await C.proxy("whiledown")).body, String(p2));
    assert.equal((await C.get("/upstream/stop0")).status, 404, "deleted while C was down");
  });

  test("a compaction while a node is down: that node converges, including deletions", async () => {
    const [p1] = A.backendPorts;
    for (let i = 0; i < 4; i++) assert.equal((await A.post(`/upstream/cmp${i}`, body(p1))).status, 200);
    await converged(nodes(), etcd);
    const stateDir = B.stateDir;
    await B.stop();
    assert.equal((await A.del("/upstream/cmp0")).status, 200);
    assert.equal((await C.del("/upstream/cmp1")).status, 200);
    assert.equal((await C.post("/upstream/cmp2", body(p1, "# changed\n"))).status, 200);
    assert.equal((await A.post("/upstream/cmpnew", body(p1))).status, 200);
    await etcd.compact();
    B = await startNode({ etcd: etcd.endpoints, stateDir, serverExtra: luaApi });
    // B starts from its state file (cmp0 and cmp1 still there), then converges with etcd
    await converged(nodes(), etcd);
    assert.equal((await B.get("/upstream/cmp0")).status, 404);
    assert.equal((await B.get("/upstream/cmp1")).status, 404);
    assert.match(JSON.parse((await B.get("/upstream/cmp2?format=json")).body).body, /# changed/);
    assert.equal((await B.proxy("cmpnew")).body, String(p1));
  });

  test("a new node reads 1 000 upstreams from etcd in one full read, yielding without a warning", async () => {
    const prefix = "/many";
    for (let k = 0; k < 10; k++) {
      const ops = [];
      for (let j = 0; j < 100; j++) {
        const name = `m${k * 100 + j}`;
        ops.push({ request_put: { key: b64(`${prefix}/upstreams/${name}`), value: b64(JSON.stringify({ name, body: `server 127.0.0.1:${1000 + j};` })) } });
      }
      assert.equal((await gateway(etcd.members[0].client, "/v3/kv/txn", { success: ops })).status, 200);
    }
    const N = await startNode({ etcd: etcd.endpoints, prefix });
    extra.push(N);
    await eventually(async () => (await N.get("/upstream/m999")).status === 200, 20000);
    assert.equal((await N.get("/list")).body.trim().split("\n").length, 1000);
    await eventually(() => /read 1000 upstreams from etcd/.test(N.errorLog()), 5000);
    // the read yields to the event loop every 200 upstreams: never with ngx.sleep(0), which Debian's nginx
    // (no delayed-events patch) answers with a warning each time
    // (the harness's readiness probe through the proxy, before any upstream, logs "no live upstreams": not ours)
    const lines = N.errorLog().split("\n").filter((l) => /\[(warn|error|crit|alert)\]/.test(l) && !/no live upstreams/.test(l));
    assert.deepEqual(lines, []);
    // a first read into an empty store is a load (as the state file at start): one summary line, a history
    // entry per upstream, no audit line; what the watch brings after it is audited as a cluster write
    assert.match(N.errorLog(), /read 1000 upstreams from etcd .* \(a load into an empty store: recorded in the history, no audit line per upstream\)/);
    const h = JSON.parse((await N.get("/history/m7")).body).history;
    assert.equal(h.length, 1);
    assert.equal(h[0].source.kind, "cluster");
    assert.doesNotMatch(N.errorLog(), /dyups audit:/);
    assert.equal((await gateway(etcd.members[0].client, "/v3/kv/put", { key: b64(`${prefix}/upstreams/m5`), value: b64(JSON.stringify({ name: "m5", body: "server 127.0.0.1:1005; # changed" })) })).status, 200);
    await eventually(() => /dyups audit: op=update upstream=m5 .*source=cluster/.test(N.errorLog()), 5000);
    assert.equal(N.errorLog().match(/dyups audit:/g).length, 1);
  });

  test("all of etcd stopped: 0 failed proxy requests, reads served, writes 503; a node started meanwhile uses its state file; then convergence", async () => {
    const [p1, p2] = A.backendPorts;
    assert.equal((await A.post("/upstream/outage", body(p1))).status, 200);
    await converged(nodes(), etcd);
    let stop = false, total = 0, failed = 0;
    const load = Promise.all([A, B, A, B].map(async (n) => {
      while (!stop) {
        const r = await n.proxy("outage", "/", { allowError: true });
        total++;
        if (r.status !== 200 || r.body !== String(p1)) failed++;
      }
    }));
    await etcd.stopAll();
    const w = await B.post("/upstream/outage", body(p2));
    assert.equal(w.status, 503);
    assert.match(w.body, /^add server failed: etcd is unreachable \(.*\); nothing was changed$/);
    const d = await C.del("/upstream/outage");
    assert.equal(d.status, 503);
    assert.match(d.body, /etcd is unreachable/);
    assert.equal((await A.get("/upstream/outage")).status, 200, "reads are served");
    assert.equal((await A.get("/list")).status, 200);
    const s = await eventually(async () => { const c = (await status(A)).cluster; return c.state === "retrying" ? c : false; }, 5000);
    assert.ok(s, "the watcher reports the outage");
    assert.match(s.last_error, /etcd/);
    assert.match((await status(B)).cluster.last_write_error.error, /etcd is unreachable/);
    // a node that starts while etcd is down starts from its state file
    const stateDir = C.stateDir;
    await C.stop();
    C = await startNode({ etcd: etcd.endpoints, stateDir, serverExtra: luaApi });
    assert.equal((await C.proxy("outage")).body, String(p1), "routes by its state file");
    await sleep(300);
    stop = true;
    await load;
    assert.equal(failed, 0, `${failed} of ${total} proxy requests failed during the outage`);
    await etcd.startAll();
    await converged(nodes(), etcd, 20000);
    const w2 = await B.post("/upstream/outage", body(p2));
    assert.equal(w2.status, 200, w2.body);
    await converged(nodes(), etcd);
    assert.equal((await C.proxy("outage")).body, String(p2));
    console.log(`# etcd down: ${total} proxy requests, ${failed} failed`);
  });

  test("etcd auth: user/password get a token; a wrong password answers 503 with the reason", async () => {
    const port = etcd.members[0].client;
    for (const [p, b] of [["/v3/auth/user/add", { name: "root", password: "rootpw" }], ["/v3/auth/role/add", { name: "root" }],
      ["/v3/auth/user/grant", { user: "root", role: "root" }], ["/v3/auth/enable", {}]]) {
      const r = await gateway(port, p, b);
      assert.equal(r.status, 200, `${p}: ${JSON.stringify(r.body)}`);
    }
    const D = await startNode({ etcd: etcd.endpoints, cluster: { user: "root", password: "rootpw" } });
    extra.push(D);
    const E = await startNode({ etcd: etcd.endpoints, cluster: { user: "root", password: "wrong" } });
    extra.push(E);
    const w = await D.post("/upstream/authed", body(D.backendPorts[0]));
    assert.equal(w.status, 200, w.body);
    const s = await eventually(async () => { const c = (await status(D)).cluster; return c.state === "watching" && c.auth ? c : false; }, 5000);
    assert.ok(s);
    assert.equal((await D.proxy("authed")).status, 200);
    const bad = await E.post("/upstream/authed", body(D.backendPorts[1]));
    assert.equal(bad.status, 503);
    assert.match(bad.body, /authentication as "root" failed .*; nothing was changed/);
    const es = await eventually(async () => { const c = (await status(E)).cluster; return /authentication/.test(c.last_error ?? "") ? c : false; }, 5000);
    assert.ok(es, `the watcher of the node with the wrong password reports why: ${JSON.stringify((await status(E)).cluster)}`);
    const { body: tok } = await gateway(port, "/v3/auth/authenticate", { name: "root", password: "rootpw" });
    assert.equal((await gateway(port, "/v3/auth/disable", {}, 5000, { authorization: tok.token })).status, 200);
  });

  test("etcd replaced by an empty one (revisions go back): the nodes take its state as it is, then follow it", async () => {
    const [p1, p2] = A.backendPorts;
    const before = (await status(A)).cluster.revision;
    assert.ok(before > 50);
    await etcd.wipe();
    assert.ok(await etcd.revision() < before);
    // the watchers read the new etcd: nothing there, so every upstream goes away
    await converged(nodes(), etcd, 20000);
    assert.equal((await A.get("/list")).status, 204);
    for (let i = 0; i < 3; i++) assert.equal((await nodes()[i].post(`/upstream/fresh${i}`, body(i % 2 ? p1 : p2))).status, 200);
    await converged(nodes(), etcd);
    assert.equal((await C.proxy("fresh0")).body, String(p2));
    assert.match((await status(B)).cluster.etcd_revision.toString(), /^\d+$/);
    assert.ok((await status(B)).cluster.etcd_revision < before, "the revision seen goes back with etcd");
  });
});
