#!/usr/bin/env node
// Benchmark of issue 4 (every worker sees every change). Prints figures; asserts no timing.
//
//   a. time from a write's 200 to every worker routing by it (4 workers, ~200 writes), and stale answers
//   b. sustained updates/s at concurrency 1 and 8 over 100 names; shm free before/after; log entries kept
//   c. request throughput with the per-request version gate (balance) vs without (balanceUngated),
//      one nginx (2 workers), the same dynamic upstream, wrk alternating between the two proxy ports
//
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import http from "node:http";
import { pathToFileURL } from "node:url";
import { QUICK, running, cleanup, snapshot, pct, median, f1, f2, f3, pad, lpad, req, wrk, status, converge } from "./bench-lib.mjs";

// ---------------------------------------------------------------- a. write -> every worker routes by it
async function benchPropagation(h, ng, writes) {
  const [A, B] = ng.backendPorts;
  // warm up: every worker has served the upstream once
  await ng.post("/upstream/flip", `server 127.0.0.1:${A};`);
  for (let i = 0; i < 64; i++) await ng.proxy("flip");
  const workers = ng.workers;
  const elapsed = [], firstAnswer = [], requestsPerWrite = [];
  let stale = 0, total = 0, errors = 0, incomplete = 0;
  const INFLIGHT = 8, MAX_REQ = 400;
  for (let i = 0; i < writes; i++) {
    const port = i % 2 ? A : B;
    const w = await ng.post("/upstream/flip", `server 127.0.0.1:${port};`);
    const t0 = performance.now();
    if (w.status !== 200) throw new Error(`write ${i}: ${w.status} ${w.body}`);
    const seen = new Set();
    let done = false, sent = 0, completed = 0, tDone = NaN, tFirst = NaN;
    const pending = [];
    await new Promise((resolveAll) => {
      const launch = () => {
        if (done || sent >= MAX_REQ) return;
        sent++;
        const p = h.request(ng.proxyPort, "GET", "/", { headers: { host: "flip" }, allowError: true, timeout: 5000 }).then((r) => {
          total++;
          if (r.status === 0) errors++;
          else if (r.status !== 200 || r.body !== String(port)) stale++;
          else {
            if (Number.isNaN(tFirst)) tFirst = performance.now() - t0;
            seen.add(r.headers["x-worker"]);
            if (!done && seen.size === workers) { done = true; tDone = performance.now() - t0; resolveAll(); }
          }
          completed++;
          if (!done) { if (sent < MAX_REQ) launch(); else if (completed === sent) resolveAll(); }
        });
        pending.push(p);
      };
      for (let k = 0; k < INFLIGHT; k++) launch();
    });
    await Promise.all(pending); // late answers count for staleness too
    if (Number.isNaN(tDone)) incomplete++;
    else elapsed.push(tDone);
    firstAnswer.push(tFirst);
    requestsPerWrite.push(sent);
  }
  return { writes, elapsed, firstAnswer, requestsPerWrite, stale, total, errors, incomplete };
}

// ---------------------------------------------------------------- b. sustained updates
async function logEntries(ng, benchPath) { return Number((await ng.get(benchPath)).body.trim()); }

async function benchUpdates(ng, { concurrency, seconds, maxUpdates, names, backends }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const lat = [];
  let n = 0, failed = 0, firstFailure;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  try {
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (performance.now() < end && n < maxUpdates) {
        const i = n++;
        const name = `u${i % names}`;
        const body = `server 127.0.0.1:${backends[i % 2]} weight=${1 + (i % 7)}; server 127.0.0.1:${backends[(i + 1) % 2]};`;
        const s = performance.now();
        const r = await req(agent, ng.apiPort, "POST", `/upstream/${name}`, body);
        lat.push(performance.now() - s);
        if (r.status !== 200) { failed++; firstFailure ??= `${r.status} ${r.body}`; }
      }
    }));
  } finally { agent.destroy(); }
  const secs = (performance.now() - t0) / 1000;
  return { concurrency, updates: n, secs, rate: n / secs, p50: pct(lat, 50), p99: pct(lat, 99), failed, firstFailure };
}

// ---------------------------------------------------------------- main
async function main() {
  const snap = snapshot();
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const dyupsConf = readFileSync(path.join(snap, "nginx/dyups.conf"), "utf8");
  const summary = [];
  console.log(`# bench-sync: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${execFileSync(h.NGINX, ["-v"], { stdio: ["ignore", "pipe", "pipe"] }).toString() || "nginx"}${QUICK ? ", BENCH_QUICK=1" : ""}`);
  const benchLoc = `location = /bench/log_entries { content_by_lua_block {
      local n = 0
      for _, k in ipairs(ngx.shared.dyups:get_keys(0)) do if k:sub(1, 2) == "c:" then n = n + 1 end end
      ngx.say(n) } }`;

  // ---------------- a + b: 4 workers
  {
    const ng = await h.startNginx({ workers: 4, backends: 2, logLevel: "warn", serverExtra: benchLoc });
    running.nginx.add(ng);
    try {
      const writes = QUICK ? 50 : 200;
      console.log(`\n## a. write's 200 -> every worker routes by it (4 workers, ${writes} writes, 8 requests in flight over fresh connections)`);
      const a = await benchPropagation(h, ng, writes);
      console.log(`  all 4 workers answered with the new backend: p50 ${f2(pct(a.elapsed, 50))} ms, p99 ${f2(pct(a.elapsed, 99))} ms, max ${f2(pct(a.elapsed, 100))} ms`);
      console.log(`  first answer with the new backend:           p50 ${f2(pct(a.firstAnswer, 50))} ms, p99 ${f2(pct(a.firstAnswer, 99))} ms`);
      console.log(`  requests per write until all 4 seen: p50 ${pct(a.requestsPerWrite, 50)}, p99 ${pct(a.requestsPerWrite, 99)}`);
      console.log(`  stale answers (old backend after the write's 200): ${a.stale} of ${a.total}; connection errors ${a.errors}; writes where not every worker was reached: ${a.incomplete}`);
      summary.push(`sync.a  write->all 4 workers  p50 ${f2(pct(a.elapsed, 50))} ms  p99 ${f2(pct(a.elapsed, 99))} ms  stale ${a.stale}/${a.total}`);

      const seconds = QUICK ? 3 : 10, maxUpdates = QUICK ? 1000 : 5000;
      console.log(`\n## b. sustained updates (4 workers, 100 names, keep-alive client, ${seconds} s or ${maxUpdates} updates each)`);
      const free0 = (await status(ng)).shm;
      const log0 = await logEntries(ng, "/bench/log_entries");
      console.log(`  shm before: capacity ${free0.capacity} B, free ${free0.free} B; log entries ${log0}`);
      console.log(`  ${pad("concurrency", 12)}${lpad("updates", 8)}${lpad("secs", 7)}${lpad("upd/s", 9)}${lpad("p50 ms", 9)}${lpad("p99 ms", 9)}${lpad("failed", 8)}${lpad("converge ms", 13)}${lpad("shm free B", 12)}${lpad("log", 6)}${lpad("lua_kb/worker", 24)}`);
      for (const concurrency of [1, 8]) {
        const r = await benchUpdates(ng, { concurrency, seconds, maxUpdates, names: 100, backends: ng.backendPorts });
        const c = await converge(ng, 4, 15000, 5);
        const shmNow = c.s.shm.free;
        const log = await logEntries(ng, "/bench/log_entries");
        const kb = c.s.workers.map((w) => w.lua_kb).join("/");
        console.log(`  ${pad(concurrency, 12)}${lpad(r.updates, 8)}${lpad(f1(r.secs), 7)}${lpad(f1(r.rate), 9)}${lpad(f2(r.p50), 9)}${lpad(f2(r.p99), 9)}${lpad(r.failed, 8)}${lpad(f1(c.ms), 13)}${lpad(shmNow, 12)}${lpad(log, 6)}${lpad(kb, 24)}`);
        if (r.firstFailure) console.log(`    first failure: ${r.firstFailure}`);
        summary.push(`sync.b  updates/s at concurrency ${concurrency}: ${f1(r.rate)} (p99 ${f2(r.p99)} ms, ${r.failed} failed); shm free ${shmNow} B; log entries ${log}`);
      }
      const s1 = await status(ng);
      console.log(`  shm after: free ${s1.shm.free} B (before ${free0.free} B, delta ${s1.shm.free - free0.free} B); version ${s1.version}; log entries ${await logEntries(ng, "/bench/log_entries")} (kept: 1024)`);
    } finally {
      await ng.stop();
      running.nginx.delete(ng);
    }
  }

  // ---------------- c: the version gate's cost, one nginx, 2 workers
  {
    const [ungatedPort] = await h.freePorts(1);
    const keep = `proxy_http_version 1.1; proxy_set_header Connection ""; log_by_lua_block { require("dyups").log() }`;
    // dyups.conf as shipped, but its http-level log_by_lua moves into the two proxy locations: the backends
    // (in this nginx) then run no Lua, and both measured paths run exactly the product's per-request code.
    const conf = dyupsConf.replace(/^\s*log_by_lua_block.*$/m, "");
    const ng = await h.startNginx({
      workers: 2, backends: 2, logLevel: "warn", includeConf: false, proxyExtra: keep,
      httpExtra: `${conf}
  upstream dyups_ungated {
    server 127.0.0.1:1 down;
    balancer_by_lua_block { require("dyups.bench.ungated").balance() }
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${ungatedPort} reuseport;
    add_header X-Worker $pid always;
    location / { set $dyups_upstream $host; proxy_pass http://dyups_ungated; ${keep} }
  }`,
    });
    running.nginx.add(ng);
    try {
      const [B1, B2] = ng.backendPorts;
      const w = await ng.post("/upstream/bench", `server 127.0.0.1:${B1}; server 127.0.0.1:${B2};`);
      if (w.status !== 200) throw new Error(`cannot create the upstream: ${w.status} ${w.body}`);
      for (const port of [ng.proxyPort, ungatedPort]) {
        const bodies = new Set();
        for (let i = 0; i < 8; i++) {
          const r = await h.request(port, "GET", "/", { headers: { host: "bench" } });
          if (r.status !== 200) throw new Error(`sanity: port ${port} answered ${r.status}`);
          bodies.add(r.body);
        }
        if (bodies.size !== 2) throw new Error(`sanity: port ${port} reached ${[...bodies]}`);
      }
      const rounds = QUICK ? 3 : 6, seconds = QUICK ? 2 : 5;
      console.log(`\n## c. version gate cost (2 workers, wrk -t2 -c50, ${rounds} rounds x ${seconds} s, alternating A B / B A, keepalive to backends in the same nginx)`);
      const pids = ng.workerPids();
      await wrk(`http://127.0.0.1:${ng.proxyPort}/`, { seconds: 2, host: "bench" }); // warm-up
      await wrk(`http://127.0.0.1:${ungatedPort}/`, { seconds: 2, host: "bench" });
      const res = { gated: [], ungated: [] };
      console.log(`  ${pad("round", 7)}${pad("path", 10)}${lpad("req/s", 11)}${lpad("p50 ms", 9)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}${lpad("non-2xx", 9)}${lpad("errors", 8)}`);
      for (let r = 1; r <= rounds; r++) {
        const order = r % 2 ? ["gated", "ungated"] : ["ungated", "gated"];
        for (const which of order) {
          const port = which === "gated" ? ng.proxyPort : ungatedPort;
          const x = await wrk(`http://127.0.0.1:${port}/`, { seconds, host: "bench", pids });
          res[which].push(x);
          console.log(`  ${pad(r, 7)}${pad(which, 10)}${lpad(f1(x.rps), 11)}${lpad(f3(x.p50ms), 9)}${lpad(f3(x.p99ms), 9)}${lpad(f2(x.cpuUs), 12)}${lpad(x.non2xx, 9)}${lpad(x.errors, 8)}`);
        }
      }
      const g = median(res.gated.map((x) => x.rps)), u = median(res.ungated.map((x) => x.rps));
      const gp = median(res.gated.map((x) => x.p99ms)), up = median(res.ungated.map((x) => x.p99ms));
      // each round's two runs are adjacent in time: their ratio is less exposed to other load on the machine
      const pair = median(res.gated.map((x, i) => x.rps / res.ungated[i].rps));
      const gc = median(res.gated.map((x) => x.cpuUs)), uc = median(res.ungated.map((x) => x.cpuUs));
      console.log(`  median gated:   ${f1(g)} req/s, p99 ${f3(gp)} ms, nginx CPU ${f2(gc)} us/request`);
      console.log(`  median ungated: ${f1(u)} req/s, p99 ${f3(up)} ms, nginx CPU ${f2(uc)} us/request`);
      console.log(`  ratio gated/ungated: ${f3(g / u)} (req/s, of the medians), ${f3(pair)} (req/s, median of the per-round ratios), ${f3(uc / gc)} (CPU: ungated us / gated us)`);
      summary.push(`sync.c  gated ${f1(g)} req/s p99 ${f3(gp)} ms ${f2(gc)} us CPU | ungated ${f1(u)} req/s p99 ${f3(up)} ms ${f2(uc)} us CPU | ratio ${f3(g / u)} (per-round ${f3(pair)}, CPU ${f3(uc / gc)})`);
      const bad = [...res.gated, ...res.ungated].reduce((a, x) => a + x.non2xx + x.errors, 0);
      if (bad) console.log(`  WARNING: ${bad} non-2xx answers or socket errors: the figures above are not valid`);
    } finally {
      await ng.stop();
      running.nginx.delete(ng);
    }
  }
  console.log("\n## summary (bench-sync)");
  for (const l of summary) console.log(`SUMMARY ${l}`);
}

main().then(cleanup, async (e) => { console.error(`bench-sync failed: ${e.stack ?? e}`); await cleanup(); process.exit(1); });
