// Pickers by name (issue 21) against a real nginx with real backends: registered pickers selected by
// `balancer NAME` (registered before init(), after it in init_worker, and one never registered), refusals at
// apply time, and `balancer ewma` against round robin in the same run with a slow Lua backend that sleeps: the
// slow server's share, its recovery when it speeds up, and 0 client errors while a server is dead.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import path from "node:path";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { startNginx, startNginxExpectFailure, freePorts, request, sleep, eventually, ROOT, LUA } from "./harness.mjs";

const PICKERS = path.join(ROOT, "examples/pickers");
const luaPackagePath = `${LUA}/?.lua;${LUA}/?/init.lua;${PICKERS}/?.lua;;`;
const REGISTER_FASTEST = `require("dyups").register_picker("fastest", require("fastest"))`;
// registered in init_worker_by_lua, after init(): the last usable server
const REGISTER_LATE = `require("dyups").register_picker("late", { pick = function(peers, state, tried)
    for gi = peers.total, 1, -1 do
      if not peers.down[gi] and not (tried and tried[gi]) and state.available(peers, gi) then return gi end
    end
    return 0
  end })`;

/** A backend in the test nginx that sleeps `/delay?d=SECONDS` before answering its port (ngx.sleep: non-blocking). */
function slowServer(port) {
  return `server { listen 127.0.0.1:${port};
    location = /delay { content_by_lua_block { ngx.shared.slowctl:set("${port}", tonumber(ngx.var.arg_d)) ngx.print("ok") } }
    location / { content_by_lua_block { local d = ngx.shared.slowctl:get("${port}") or 0 if d > 0 then ngx.sleep(d) end ngx.print("${port}") } } }`;
}

/** one GET through the proxy over a keep-alive agent: { status, body } (status 0: a socket error) */
function get(agent, port, host) {
  return new Promise((resolve) => {
    const r = http.request({ host: "127.0.0.1", port, path: "/", headers: { host }, agent }, (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(parts).toString() }));
      res.on("error", () => resolve({ status: 0, body: "" }));
    });
    r.setTimeout(10000, () => r.destroy(new Error("timeout")));
    r.on("error", () => resolve({ status: 0, body: "" }));
    r.end();
  });
}

/** `n` requests (or until `until` ms pass) to upstream `host` from `conc` clients: counts per backend, errors */
async function load(ng, host, { n = Infinity, ms = Infinity, conc = 16 } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: conc });
  const counts = {};
  let sent = 0, errors = 0, firstError;
  const end = Date.now() + ms;
  try {
    await Promise.all(Array.from({ length: conc }, async () => {
      while (sent < n && Date.now() < end) {
        sent++;
        const r = await get(agent, ng.proxyPort, host);
        if (r.status === 200) counts[r.body] = (counts[r.body] ?? 0) + 1;
        else { errors++; firstError ??= `${r.status} ${r.body}`; }
      }
    }));
  } finally { agent.destroy(); }
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return { counts, errors, firstError, total, share: (port) => (counts[port] ?? 0) / Math.max(total, 1) };
}

const pct = (x) => `${(100 * x).toFixed(1)}%`;

let ng, S, D, F1, F2;
before(async () => {
  [S, D] = await freePorts(2);
  ng = await startNginx({
    workers: 2, backends: 2, logLevel: "info", luaPackagePath,
    initBefore: REGISTER_FASTEST,
    initWorkerExtra: REGISTER_LATE,
    httpExtra: `lua_shared_dict slowctl 1m;\n${slowServer(S)}`,
    serverExtra: `location = /register { content_by_lua_block { require("dyups").register_picker("x", require("fastest")) } }`,
  });
  [F1, F2] = ng.backendPorts;
});
after(async () => { await ng?.stop(); });

async function delay(d) {
  const r = await request(S, "GET", `/delay?d=${d}`);
  assert.equal(r.status, 200);
}

describe("pickers registered by name", () => {
  test("bad names and bad arguments are refused at apply time with 400 and the reason; nothing is created", async () => {
    const cases = [
      ["balancer nope;", 'add server failed: unknown balancer "nope": not registered in this nginx (registered: ewma, fastest, late)'],
      ["balancer fastest explore=2;", 'add server failed: balancer "fastest": invalid explore "2" (0..1)'],
      ["balancer fastest speed=1;", 'add server failed: balancer "fastest": unknown parameter "speed"'],
      ["balancer ewma half_life=soon;", 'add server failed: balancer "ewma": invalid half_life "soon"'],
      ["balancer late x=1;", 'add server failed: balancer "late": unknown parameter "x" (this balancer takes none)'],
      ["balancer least_conn;", 'add server failed: "least_conn" is an nginx method: use its own directive in "balancer" directive'],
      ["balancer ewma; ip_hash;", 'add server failed: load balancing method redefined: "ip_hash" after "balancer"'],
    ];
    for (const [directive, reason] of cases) {
      const r = await ng.post("/upstream/bad", `${directive} server 127.0.0.1:${F1};`);
      assert.equal(r.status, 400, directive);
      assert.equal(r.body, reason);
    }
    assert.equal((await ng.get("/upstream/bad")).status, 404);
  });

  test("a picker registered in init_by_lua or init_worker_by_lua is selected by name; the status lists them", async () => {
    assert.equal((await ng.post("/upstream/fast", `balancer fastest explore=0; server 127.0.0.1:${S}; server 127.0.0.1:${F1};`)).status, 200);
    assert.equal((await ng.post("/upstream/last", `balancer late; server 127.0.0.1:${F1}; server 127.0.0.1:${F2};`)).status, 200);
    await delay(0.05);
    const f = await load(ng, "fast", { n: 60, conc: 1 });
    // fastest: the slow server only until its first answer, in each worker (2 workers)
    assert.ok((f.counts[S] ?? 0) <= 2 && f.counts[F1] >= 58, JSON.stringify(f.counts));
    const l = await load(ng, "last", { n: 30, conc: 2 });
    assert.deepEqual(l.counts, { [F2]: 30 });
    const st = JSON.parse((await ng.get("/status")).body);
    assert.deepEqual(st.this_worker.balancers, ["ewma", "fastest", "late"]);
    const j = JSON.parse((await ng.get("/upstream/last?format=json")).body);
    assert.equal(j.method, "balancer");
    assert.equal(j.balancer, "late");
    await delay(0);
  });

  test("register_picker outside init_by_lua / init_worker_by_lua raises", async () => {
    const r = await ng.get("/register");
    assert.equal(r.status, 500);
    assert.match(ng.errorLog(), /register_picker: call it from init_by_lua or init_worker_by_lua, not content/);
  });

  test("down and backup hold for pickers too", async () => {
    assert.equal((await ng.post("/upstream/dbk", `balancer late; server 127.0.0.1:${F1}; server 127.0.0.1:${F2} down; server 127.0.0.1:${S} backup;`)).status, 200);
    assert.deepEqual((await load(ng, "dbk", { n: 20, conc: 2 })).counts, { [F1]: 20 });
    assert.equal((await ng.post("/upstream/ebk", `balancer ewma; server 127.0.0.1:${D}; server 127.0.0.1:${F2} backup;`)).status, 200);
    const r = await load(ng, "ebk", { n: 40, conc: 4 });
    assert.equal(r.errors, 0, r.firstError);
    assert.deepEqual(r.counts, { [F2]: 40 });
  });
});

describe("balancer ewma", () => {
  test("routes measurably less traffic to a slow server than round robin (same servers, same run)", async () => {
    await delay(0.1);
    const servers = `server 127.0.0.1:${F1}; server 127.0.0.1:${F2}; server 127.0.0.1:${S};`;
    assert.equal((await ng.post("/upstream/ew", `balancer ewma half_life=500ms; ${servers}`)).status, 200);
    assert.equal((await ng.post("/upstream/rr", servers)).status, 200);
    const ew = { counts: {}, total: 0 }, rr = { counts: {}, total: 0 };
    const add = (acc, x) => { for (const [k, v] of Object.entries(x.counts)) acc.counts[k] = (acc.counts[k] ?? 0) + v; acc.total += x.total; assert.equal(x.errors, 0, x.firstError); };
    for (let round = 0; round < 3; round++) { // interleaved: each has the same conditions
      add(rr, await load(ng, "rr", { n: 150, conc: 16 }));
      add(ew, await load(ng, "ew", { n: 300, conc: 16 }));
    }
    const ewShare = (ew.counts[S] ?? 0) / ew.total, rrShare = (rr.counts[S] ?? 0) / rr.total;
    console.log(`# slow server (100 ms) share: ewma ${pct(ewShare)} of ${ew.total}, round robin ${pct(rrShare)} of ${rr.total}`);
    assert.ok(rrShare > 0.28 && rrShare < 0.39, `round robin: ${pct(rrShare)}`);
    assert.ok(ewShare < 0.08 && ewShare < rrShare / 4, `ewma: ${pct(ewShare)} vs round robin ${pct(rrShare)}`);
  });

  test("the slow server's share recovers once it is fast again", async () => {
    await delay(0);
    const windows = [];
    for (let i = 0; i < 14; i++) {
      const w = await load(ng, "ew", { ms: 500, conc: 8 });
      assert.equal(w.errors, 0, w.firstError);
      windows.push(w.share(String(S)));
      if (i >= 2 && windows.slice(-2).every((x) => x > 0.2)) break;
    }
    console.log(`# after it sped up, its share per 0.5 s window: ${windows.map(pct).join(" ")}`);
    assert.ok(windows.slice(-2).every((x) => x > 0.2), windows.map(pct).join(" "));
  });

  test("0 client errors while one server is dead, with passive health and with only the ewma penalty", async () => {
    const before = ng.errorLog().length;
    const refused = () => ng.errorLog().slice(before).split("\n").filter((l) => l.includes(`127.0.0.1:${D}`) && l.includes("connect() failed")).length;
    assert.equal((await ng.post("/upstream/dead", `balancer ewma half_life=500ms; server 127.0.0.1:${F1}; server 127.0.0.1:${F2}; server 127.0.0.1:${D};`)).status, 200);
    const a = await load(ng, "dead", { n: 400, conc: 8 });
    assert.equal(a.errors, 0, a.firstError);
    assert.equal(a.total, 400);
    const triesA = refused();
    // max_fails=0: passive health never takes it out; the penalty (1 s, decaying by half-lives) keeps it away
    assert.equal((await ng.post("/upstream/dead", `balancer ewma half_life=500ms; server 127.0.0.1:${F1}; server 127.0.0.1:${F2}; server 127.0.0.1:${D} max_fails=0;`)).status, 200);
    const t0 = Date.now();
    const b = await load(ng, "dead", { ms: 3000, conc: 8 });
    const secs = (Date.now() - t0) / 1000;
    assert.equal(b.errors, 0, b.firstError);
    const triesB = refused() - triesA;
    console.log(`# dead server tried ${triesA} times in 400 requests (max_fails=1), ${triesB} times in ${b.total} requests over ${secs.toFixed(1)} s (max_fails=0)`);
    // concurrent first requests of a worker may all go to the untried server before its refusal comes back
    assert.ok(triesA <= 4, `tried ${triesA} times`);
    // (round robin would send it a third of them) each worker's first requests of the new version, then one
    // more each time the penalty (1 s) decayed to the others' cost: ~8 half-lives (4 s)
    assert.ok(triesB <= 4 + 2 * (1 + secs / 3), `tried ${triesB} times in ${secs} s`);
  });
});

describe("balancer ewma: what workers share", () => {
  test("after a reload, new workers start from the scores the old ones published; an upstream nobody measured starts cold", async () => {
    await delay(0.1);
    const servers = `server 127.0.0.1:${F1}; server 127.0.0.1:${F2}; server 127.0.0.1:${S};`;
    assert.equal((await ng.post("/upstream/warm", `balancer ewma half_life=5s; ${servers}`)).status, 200);
    assert.equal((await ng.post("/upstream/cold", `balancer ewma half_life=5s; ${servers}`)).status, 200);
    const w0 = await load(ng, "warm", { n: 200, conc: 16 }); // both workers learn that S is slow
    assert.equal(w0.errors, 0, w0.firstError);
    await sleep(1300); // each worker's timer publishes its scores (at most once a second)
    const old = ng.workerPids();
    ng.signal("HUP");
    assert.ok(await eventually(() => { const now = ng.workerPids(); return now.length === 2 && now.every((p) => !old.includes(p)); }, 10000, 50), "no new workers");
    const warm = await load(ng, "warm", { n: 96, conc: 16 });
    const cold = await load(ng, "cold", { n: 96, conc: 16 });
    assert.equal(warm.errors + cold.errors, 0, warm.firstError ?? cold.firstError);
    console.log(`# first 96 requests after a reload, to the slow server: ${warm.counts[S] ?? 0} (upstream measured before), ${cold.counts[S] ?? 0} (never measured)`);
    assert.ok((warm.counts[S] ?? 0) <= 2, JSON.stringify(warm.counts));
    assert.ok((cold.counts[S] ?? 0) > (warm.counts[S] ?? 0), JSON.stringify(cold.counts));
    await delay(0);
  });
});

describe("stored upstreams whose balancer is not registered at start", () => {
  test("upstream_conf: registered before init() is checked at start, after init() works, never registered is kept and routed by round robin", async () => {
    const conf = `
upstream conf_fastest { balancer fastest explore=0; server 127.0.0.1:${S}; server 127.0.0.1:${F1}; }
upstream conf_late { balancer late; server 127.0.0.1:${F1}; server 127.0.0.1:${F2}; }
upstream conf_missing { balancer missing_one; server 127.0.0.1:${F1}; server 127.0.0.1:${F2}; }
`;
    await delay(0.05); // the first pick of fastest (all untried) is the slow server: once per worker
    const x = await startNginx({
      workers: 2, backends: 0, luaPackagePath, initBefore: REGISTER_FASTEST, initWorkerExtra: REGISTER_LATE,
      upstreamConf: conf, logLevel: "info",
    });
    try {
      const f = await load(x, "conf_fastest", { n: 30, conc: 1 });
      assert.equal(f.errors, 0, f.firstError);
      assert.ok((f.counts[S] ?? 0) <= 2 && (f.counts[F1] ?? 0) >= 28, JSON.stringify(f.counts));
      assert.deepEqual((await load(x, "conf_late", { n: 20, conc: 2 })).counts, { [F2]: 20 });
      const m = await load(x, "conf_missing", { n: 40, conc: 2 });
      assert.equal(m.errors, 0, m.firstError);
      assert.ok(m.counts[F1] >= 15 && m.counts[F2] >= 15, JSON.stringify(m.counts));
      const log = x.errorLog();
      assert.match(log, /\[warn\].*dyups: upstream conf_missing: unknown balancer "missing_one": not registered in this nginx \(registered: ewma, fastest\) yet: kept as written/);
      assert.match(log, /\[error\].*dyups: upstream conf_missing revision \d+: unknown balancer "missing_one": not registered in this nginx \(registered: ewma, fastest, late\); routing it by round robin in this worker/);
      assert.doesNotMatch(log, /upstream conf_late revision/);
      // it is kept as written: /upstream shows it, and a write of the same name is refused like any other
      assert.match((await x.get("/upstream/conf_missing?format=json")).body, /"balancer":"missing_one"/);
    } finally { await x.stop(); }
    // a picker registered before init() validates upstream_conf's arguments: a bad one stops nginx
    const out = await startNginxExpectFailure({
      workers: 1, backends: 0, luaPackagePath, initBefore: REGISTER_FASTEST,
      upstreamConf: `upstream u { balancer fastest explore=7; server 127.0.0.1:${F1}; }\n`,
    });
    assert.match(out, /upstream "u": balancer "fastest": invalid explore "7" \(0\.\.1\)/);
  });

  test("state file: a restart without the picker keeps the upstream and routes it by round robin; with it, the picker again", async () => {
    const prefix = mkdtempSync(path.join(tmpdir(), "dyups-it-"));
    const opts = (register) => ({ workers: 1, backends: 0, luaPackagePath, prefix, initBefore: register ? REGISTER_FASTEST : "",
      init: { state_file: path.join(prefix, "state/state.json") } });
    const a = await startNginx(opts(true));
    try {
      assert.equal((await a.post("/upstream/kept", `balancer fastest explore=0; server 127.0.0.1:${S}; server 127.0.0.1:${F1};`)).status, 200);
      assert.ok(await eventually(() => existsSync(path.join(prefix, "state/state.json")), 3000), "no state file");
      await sleep(300);
    } finally { await a.stop(); }
    const b = await startNginx(opts(false));
    try {
      assert.match((await b.get("/upstream/kept?format=json")).body, /"balancer":"fastest"/);
      const r = await load(b, "kept", { n: 20, conc: 1 });
      assert.equal(r.errors, 0, r.firstError);
      assert.deepEqual(r.counts, { [S]: 10, [F1]: 10 }); // round robin, one worker
      assert.match(b.errorLog(), /upstream kept: unknown balancer "fastest": not registered in this nginx \(registered: ewma\) yet: kept as written/);
      assert.match(b.errorLog(), /upstream kept revision \d+: unknown balancer "fastest".*routing it by round robin/);
    } finally { await b.stop(); }
    const c = await startNginx(opts(true));
    try {
      const r = await load(c, "kept", { n: 20, conc: 1 });
      assert.ok((r.counts[F1] ?? 0) >= 19, JSON.stringify(r.counts));
    } finally {
      await c.stop();
      await delay(0);
      rmSync(prefix, { recursive: true, force: true });
    }
  });
});
