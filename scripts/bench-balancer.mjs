#!/usr/bin/env node
// Benchmark of issue 5 (the balancer's cost). Prints figures; asserts no timing.
//
// One nginx, 2 workers; the backends are `return 200` servers in the same nginx; wrk -t2 -c50; every
// figure is the median of interleaved rounds (A B C D, then D C B A, ...), all with keepalive to the backends:
//   a. a dynamic upstream (2 servers) vs a static nginx upstream of the same 2 servers: req/s, p99, ratio
//   b. the same after 10 000 more upstreams were created (POSTs, concurrency 8): ratio to the 1-upstream run
// Two reference paths in (a): "lua floor", a balancer_by_lua that only calls set_current_peer (the cost of
// entering Lua in the balancer phase, which any Lua balancer pays), and "static + dyups log()", the static
// upstream with the product's log handler (what dyups.conf's http-level log_by_lua_block adds to every
// location of an nginx that includes it).
// Besides req/s and p99 (wrk), each run records the nginx workers' CPU time per request
// (/proc/PID/schedstat): on a shared 2-core machine it is far less disturbed by other load than req/s.
//
// BENCH_QUICK=1: a short version (1 000 upstreams instead of 10 000, shorter rounds).
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import http from "node:http";
import { pathToFileURL } from "node:url";
import { QUICK, running, cleanup, snapshot, pct, median, f1, f2, f3, pad, lpad, req, wrk, status, converge, luaFloorUpstream, spreadScript } from "./bench-lib.mjs";

/** creates `count` upstreams u0..u{count-1} with `concurrency` writers over keep-alive connections */
async function createMany(ng, count, concurrency, body) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const lat = [];
  let next = 0, failed = 0, firstFailure;
  const t0 = performance.now();
  try {
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        const s = performance.now();
        const r = await req(agent, ng.apiPort, "POST", `/upstream/many${i}`, body);
        lat.push(performance.now() - s);
        if (r.status !== 200) { failed++; firstFailure ??= `${r.status} ${r.body}`; }
      }
    }));
  } finally { agent.destroy(); }
  const secs = (performance.now() - t0) / 1000;
  return { count, secs, rate: count / secs, p50: pct(lat, 50), p99: pct(lat, 99), failed, firstFailure };
}

async function timeGet(ng, p, n = 5) {
  const t = [];
  for (let i = 0; i < n; i++) { const s = performance.now(); await ng.get(p); t.push(performance.now() - s); }
  return median(t);
}

/** interleaved rounds over the targets; returns { name: [results] } */
async function rounds(targets, n, seconds, pids) {
  const res = Object.fromEntries(targets.map((t) => [t.name, []]));
  console.log(`  ${pad("round", 7)}${pad("path", 22)}${lpad("req/s", 11)}${lpad("p50 ms", 9)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}${lpad("non-2xx", 9)}${lpad("errors", 8)}`);
  for (let r = 1; r <= n; r++) {
    const order = r % 2 ? targets : [...targets].reverse();
    for (const t of order) {
      const x = await wrk(t.url, { seconds, host: t.script ? undefined : (t.host ?? "bench"), script: t.script, env: t.env, pids: t.pids ?? pids });
      res[t.name].push(x);
      console.log(`  ${pad(r, 7)}${pad(t.name, 22)}${lpad(f1(x.rps), 11)}${lpad(f3(x.p50ms), 9)}${lpad(f3(x.p99ms), 9)}${lpad(f2(x.cpuUs), 12)}${lpad(x.non2xx, 9)}${lpad(x.errors, 8)}`);
    }
  }
  const bad = Object.values(res).flat().reduce((a, x) => a + x.non2xx + x.errors, 0);
  if (bad) console.log(`  WARNING: ${bad} non-2xx answers or socket errors: these figures are not valid`);
  return res;
}
const med = (xs, k) => median(xs.map((x) => x[k]));
/** median over rounds of a/b, each round's runs being adjacent in time */
const pairRatio = (a, b) => median(a.map((x, i) => x.rps / b[i].rps));

/** one line per target: medians of req/s, p99, CPU; ratios to `base` */
function report(res, base) {
  const b = res[base];
  console.log(`  ${pad("median of rounds", 24)}${lpad("req/s", 11)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}${lpad(`req/s / ${base}`, 10 + base.length)}${lpad("per-round", 11)}${lpad(`cpu ${base} / cpu`, 14 + base.length)}`);
  for (const [name, xs] of Object.entries(res)) {
    console.log(`  ${pad(name, 24)}${lpad(f1(med(xs, "rps")), 11)}${lpad(f3(med(xs, "p99ms")), 9)}${lpad(f2(med(xs, "cpuUs")), 12)}` +
      `${lpad(f3(med(xs, "rps") / med(b, "rps")), 10 + base.length)}${lpad(f3(pairRatio(xs, b)), 11)}${lpad(f3(med(b, "cpuUs") / med(xs, "cpuUs")), 14 + base.length)}`);
  }
}

async function main() {
  const snap = snapshot();
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const dyupsConf = readFileSync(path.join(snap, "nginx/dyups.conf"), "utf8");
  const summary = [];
  console.log(`# bench-balancer: ${cpus().length} cores (${cpus()[0]?.model ?? "?"})${QUICK ? ", BENCH_QUICK=1" : ""}`);
  const [staticPort, staticLogPort, floorPort, B1, B2] = await h.freePorts(5);
  const keep = `proxy_http_version 1.1; proxy_set_header Connection "";`;
  const logLua = `log_by_lua_block { require("dyups").log() }`;
  // dyups.conf as shipped, but its http-level log_by_lua moves into the dynamic proxy location: the backends
  // and the static path then run no Lua (a plain nginx), the dynamic path runs all of the product's code.
  const conf = dyupsConf.replace(/^\s*log_by_lua_block.*$/m, "");
  // The static upstream must name the backends: their ports are reserved above and the backend servers are
  // declared here (startNginx with backends: 0), the same `return 200 "<port>"` servers the harness writes.
  // "lua floor": the least any balancer_by_lua can do (round robin over the 2 backends, no ctx, no log
  // phase): the cost of entering Lua in the balancer phase, which no dynamic upstream module avoids.
  const httpExtra = `${conf}
  upstream static_b { server 127.0.0.1:${B1}; server 127.0.0.1:${B2}; keepalive 64; }
  ${luaFloorUpstream(B1, B2)}
  server { listen 127.0.0.1:${staticPort} reuseport; add_header X-Worker $pid always; location / { proxy_pass http://static_b; ${keep} } }
  server { listen 127.0.0.1:${staticLogPort} reuseport; add_header X-Worker $pid always; location / { proxy_pass http://static_b; ${keep} ${logLua} } }
  server { listen 127.0.0.1:${floorPort} reuseport; add_header X-Worker $pid always; location / { proxy_pass http://lua_floor; ${keep} } }
${h.backendServers([B1, B2])}`;
  const only = process.env.BENCH_ONLY; // "a" or "b": one part alone
  const ng = await h.startNginx({ workers: 2, backends: 0, logLevel: "warn", includeConf: false, proxyExtra: `${keep} ${logLua}`, httpExtra });
  running.nginx.add(ng);
  if (only !== "b") try {
    const w = await ng.post("/upstream/bench", `server 127.0.0.1:${B1}; server 127.0.0.1:${B2};`);
    if (w.status !== 200) throw new Error(`cannot create the upstream: ${w.status} ${w.body}`);
    const T = {
      dynamic: { name: "dynamic", url: `http://127.0.0.1:${ng.proxyPort}/` },
      static: { name: "static", url: `http://127.0.0.1:${staticPort}/` },
      floor: { name: "lua floor", url: `http://127.0.0.1:${floorPort}/` },
      staticLog: { name: "static + dyups log()", url: `http://127.0.0.1:${staticLogPort}/` },
    };
    for (const t of Object.values(T)) { // sanity: each path reaches both backends with 200
      const bodies = new Set();
      for (let i = 0; i < 8; i++) {
        const r = await h.request(Number(new URL(t.url).port), "GET", "/", { headers: { host: "bench" } });
        if (r.status !== 200) throw new Error(`sanity: ${t.name} answered ${r.status}`);
        bodies.add(r.body);
      }
      if (bodies.size !== 2) throw new Error(`sanity: ${t.name} reached ${[...bodies]}`);
    }
    const pids = ng.workerPids();
    const n = QUICK ? 3 : 6, seconds = QUICK ? 2 : 4;
    for (const t of Object.values(T)) await wrk(t.url, { seconds: QUICK ? 1 : 2, host: "bench" }); // warm-up

    console.log(`\n## a. dynamic vs static upstream, 1 dynamic upstream (2 workers, wrk -t2 -c50, ${n} interleaved rounds x ${seconds} s)`);
    const status1 = await timeGet(ng, "/status");
    const r1 = await rounds([T.dynamic, T.static, T.floor, T.staticLog], n, seconds, pids);
    report(r1, "static");
    const d1 = r1.dynamic, s1 = r1.static;
    const ratioA = med(d1, "rps") / med(s1, "rps"), cpuA = med(s1, "cpuUs") / med(d1, "cpuUs");
    summary.push(`balancer.a  dynamic ${f1(med(d1, "rps"))} req/s p99 ${f3(med(d1, "p99ms"))} ms ${f2(med(d1, "cpuUs"))} us CPU | static ${f1(med(s1, "rps"))} req/s p99 ${f3(med(s1, "p99ms"))} ms ${f2(med(s1, "cpuUs"))} us CPU | ratio ${f3(ratioA)} (per-round ${f3(pairRatio(d1, s1))}, CPU ${f3(cpuA)}); target >= 0.97`);
    summary.push(`balancer.a  lua floor/static ${f3(med(r1["lua floor"], "rps") / med(s1, "rps"))} (CPU ${f3(med(s1, "cpuUs") / med(r1["lua floor"], "cpuUs"))}); dynamic/lua floor ${f3(med(d1, "rps") / med(r1["lua floor"], "rps"))} (CPU ${f3(med(r1["lua floor"], "cpuUs") / med(d1, "cpuUs"))})`);

  } finally {
    await ng.stop();
    running.nginx.delete(ng);
  }
  if (only === "b") { await ng.stop(); running.nginx.delete(ng); }

  // b. Two nginx instances side by side, the same config: A with 1 upstream, B with `many` upstreams, both
  // named many0.. and each with its own 2 backends (so each instance's CPU figure holds its own backend work).
  // Rounds alternate between A and B. "defined": every request goes to many0 (the others exist); "spread":
  // each request names a random upstream of the instance (wrk script; A's only one is many0), so B builds
  // and routes through all of its peer sets.
  const many = QUICK ? 1000 : 10000;
  const n = QUICK ? 3 : 6, seconds = QUICK ? 2 : 4;
  console.log(`\n## b. ${many} upstreams vs 1 (two nginx side by side, 2 workers each, wrk -t2 -c50, ${n} interleaved rounds x ${seconds} s)`);
  const script = spreadScript(snap, "many");
  const inst = async (count) => {
    const [B1, B2] = await h.freePorts(2);
    const httpExtra = `${conf}\n${h.backendServers([B1, B2])}`;
    const x = await h.startNginx({ workers: 2, backends: 0, logLevel: "warn", includeConf: false, proxyExtra: `${keep} ${logLua}`, httpExtra });
    running.nginx.add(x);
    const c = await createMany(x, count, 8, `server 127.0.0.1:${B1}; server 127.0.0.1:${B2};`);
    if (c.failed) throw new Error(`creating ${count} upstreams: ${c.failed} failed (${c.firstFailure})`);
    return { ng: x, c, pids: x.workerPids(), url: `http://127.0.0.1:${x.proxyPort}/` };
  };
  if (only === "a") return printSummary(summary);
  const A = await inst(1);
  const B = await inst(many);
  try {
    const c = B.c;
    console.log(`  created ${c.count} in ${f1(c.secs)} s: ${f1(c.rate)} upstreams/s, POST p50 ${f2(c.p50)} ms, p99 ${f2(c.p99)} ms, failed ${c.failed}`);
    const cv = await converge(B.ng, 2, 60000, 20);
    console.log(`  every worker applied the last version ${f1(cv.ms)} ms after the last POST; upstreams ${cv.s.upstreams}; shm free ${cv.s.shm.free} of ${cv.s.shm.capacity} B; lua_kb per worker ${cv.s.workers.map((x) => x.lua_kb).join("/")}`);
    const sa = await status(A.ng);
    console.log(`  lua_kb per worker with 1 upstream: ${sa.workers.map((x) => x.lua_kb).join("/")}`);
    const statusOne = await timeGet(A.ng, "/status");
    const statusMany = await timeGet(B.ng, "/status");
    console.log(`  GET /status: ${f1(statusOne)} ms with 1 upstream, ${f1(statusMany)} ms with ${many}`);
    const T = {
      a1: { name: "1, defined", url: A.url, host: "many0", pids: A.pids },
      b1: { name: `${many}, defined`, url: B.url, host: "many0", pids: B.pids },
      a2: { name: "1, spread", url: A.url, script, env: { BENCH_NAMES: "1" }, pids: A.pids },
      b2: { name: `${many}, spread`, url: B.url, script, env: { BENCH_NAMES: String(many) }, pids: B.pids },
    };
    for (const t of Object.values(T)) await wrk(t.url, { seconds: QUICK ? 2 : 4, host: t.script ? undefined : t.host, script: t.script, env: t.env }); // warm-up: B builds its peer sets
    const r = await rounds(Object.values(T), n, seconds, []);
    const row = (x, y, what) => {
      const rr = med(r[x.name], "rps") / med(r[y.name], "rps"), pr = pairRatio(r[x.name], r[y.name]), cr = med(r[y.name], "cpuUs") / med(r[x.name], "cpuUs");
      console.log(`  ${pad(what, 30)} ${f1(med(r[x.name], "rps"))} / ${f1(med(r[y.name], "rps"))} req/s = ${f3(rr)} (per-round ${f3(pr)}), p99 ${f3(med(r[x.name], "p99ms"))} / ${f3(med(r[y.name], "p99ms"))} ms, CPU ${f2(med(r[x.name], "cpuUs"))} / ${f2(med(r[y.name], "cpuUs"))} us = ${f3(cr)}`);
      return [rr, pr, cr];
    };
    const [dr, dp, dc] = row(T.b1, T.a1, `${many} defined / 1:`);
    const [sr, sp, sc] = row(T.b2, T.a2, `${many} spread / 1:`);
    const after = await status(B.ng);
    console.log(`  lua_kb per worker of B after the spread rounds: ${after.workers.map((x) => x.lua_kb).join("/")} (built peer sets in the answering worker: ${after.this_worker.built})`);
    summary.push(`balancer.b  ${many} upstreams defined vs 1: ${f1(med(r[T.b1.name], "rps"))} vs ${f1(med(r[T.a1.name], "rps"))} req/s, ratio ${f3(dr)} (per-round ${f3(dp)}, CPU ${f3(dc)}); target >= 0.97`);
    summary.push(`balancer.b  ${many} upstreams, each request to a random one, vs 1: ratio ${f3(sr)} (per-round ${f3(sp)}, CPU ${f3(sc)}); target >= 0.95 (issue 19)`);
    summary.push(`balancer.b  creating ${many} upstreams: ${f1(c.rate)}/s (concurrency 8), all workers applied ${f1(cv.ms)} ms after; GET /status ${f1(statusOne)} ms -> ${f1(statusMany)} ms`);
  } finally {
    for (const x of [A, B]) { await x.ng.stop(); running.nginx.delete(x.ng); }
  }
  printSummary(summary);
}

function printSummary(summary) {
  console.log("\n## summary (bench-balancer)");
  for (const l of summary) console.log(`SUMMARY ${l}`);
}

main().then(cleanup, async (e) => { console.error(`bench-balancer failed: ${e.stack ?? e}`); await cleanup(); process.exit(1); });
