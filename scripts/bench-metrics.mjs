#!/usr/bin/env node
// Benchmark of issue 18 (metrics). Prints figures; asserts no timing.
//
//   a. The dynamic path's request rate with metrics on vs off, in one nginx (2 workers): the normal path, and
//      the same path through dyups.bench.no_metrics (counting switched off for the request) on another port,
//      to the same upstream `bench` of 2 servers in the same nginx, keepalive to the backends; wrk -t2 -c50,
//      interleaved rounds (on off, then off on, ...), medians of req/s and of the workers' CPU per request.
//      Target: on / off >= 0.98. (Two nginx side by side, one with init({ metrics = false }), differed by
//      more than the effect between their own rounds on this shared machine.)
//   b. GET /metrics with 10 000 upstreams x 2 peers (BENCH_QUICK: 1 000): idle (no traffic yet), then after
//      traffic spread over every upstream (every peer has counters): scrape time (median and max of 5), size,
//      samples, the longest run without yielding the scrape reports itself (dyups_metrics_scrape_max_slice_
//      seconds), and the stall a worker shows meanwhile: the worst latency of small requests to the same nginx
//      during scrapes, against the same without scrapes. Also GET /stats (the dashboard's poll) there.
//
// BENCH_QUICK=1: a short version. BENCH_ONLY=a|b: one part alone.
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import http from "node:http";
import { pathToFileURL } from "node:url";
import { QUICK, running, cleanup, snapshot, pct, median, f1, f2, f3, pad, lpad, req, wrk, sleep, cpuNs, spreadScript } from "./bench-lib.mjs";

const keep = `proxy_http_version 1.1; proxy_set_header Connection "";`;

/** an nginx with 2 workers and its own 2 backends */
async function instance(h, init) {
  const [B1, B2] = await h.freePorts(2);
  const ng = await h.startNginx({ workers: 2, backends: 0, logLevel: "warn", proxyExtra: keep, init,
    httpExtra: h.backendServers([B1, B2]) });
  running.nginx.add(ng);
  return { ng, B1, B2, pids: ng.workerPids(), url: `http://127.0.0.1:${ng.proxyPort}/` };
}

/** creates `count` upstreams u0..u{count-1} (2 servers each) with 8 writers over keep-alive connections */
async function createMany(ng, count, body) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  let next = 0, failed = 0;
  const t0 = performance.now();
  try {
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < count) {
        const i = next++;
        const r = await req(agent, ng.apiPort, "POST", `/upstream/u${i}`, body);
        if (r.status !== 200) failed++;
      }
    }));
  } finally { agent.destroy(); }
  if (failed) throw new Error(`${failed} of ${count} creations failed`);
  return (performance.now() - t0) / 1000;
}

/** GET path n times, one after the other: { ms: [..], bytes, body } */
async function timeGets(ng, p, n) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const ms = [];
  let body = "";
  try {
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const r = await req(agent, ng.apiPort, "GET", p);
      ms.push(performance.now() - t);
      if (r.status !== 200) throw new Error(`GET ${p}: ${r.status}`);
      body = r.body;
    }
  } finally { agent.destroy(); }
  return { ms, bytes: Buffer.byteLength(body), body };
}

/** worst and p99 latency (ms) of sequential small requests (4 clients, keep-alive) to the proxy while `during` runs */
async function probeLatency(ng, host, during) {
  const agents = Array.from({ length: 4 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  const lat = [];
  let on = true;
  const probes = agents.map(async (agent) => {
    while (on) {
      const t = performance.now();
      await req(agent, ng.proxyPort, "GET", "/", undefined, { host });
      lat.push(performance.now() - t);
    }
  });
  try { await during(); } finally { on = false; await Promise.all(probes); for (const a of agents) a.destroy(); }
  return { max: Math.max(...lat), p99: pct(lat, 99), n: lat.length };
}

const requestsOf = (text) => Number((text.match(/^dyups_upstream_requests_total\{upstream="bench"\} (\d+)$/m) || [])[1] ?? 0);
const metric = (text, name) => Number((text.match(new RegExp(`^${name} (\\S+)$`, "m")) || [])[1]);

async function main() {
  const snap = snapshot();
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const summary = [];
  const only = process.env.BENCH_ONLY;
  console.log(`# bench-metrics: ${cpus().length} cores (${cpus()[0]?.model ?? "?"})${QUICK ? ", BENCH_QUICK=1" : ""}`);

  if (only !== "b") {
    // one nginx: the normal dynamic path (metrics counted) and the same path through dyups.bench.no_metrics
    // (counting switched off for the request), on two ports, to the same upstream and backends
    const [B1, B2, offPort] = await h.freePorts(3);
    const dyupsConf = readFileSync(path.join(snap, "nginx/dyups.conf"), "utf8").replace(/^\s*log_by_lua_block.*$/m, "");
    const httpExtra = `${dyupsConf}
  upstream dyups_nometrics {
    server 127.0.0.1:1 down;
    balancer_by_lua_block { require("dyups.bench.no_metrics").balance() }
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${offPort} reuseport;
    add_header X-Worker $pid always; # as the harness's proxy server: the two paths differ only by the counting
    location / {
      set $dyups_upstream $host;
      proxy_pass http://dyups_nometrics;
      ${keep}
      log_by_lua_block { require("dyups.bench.no_metrics").log() }
    }
  }
${h.backendServers([B1, B2])}`;
    // the counting hooks alone, in a loop in one worker (what a request adds, JIT-compiled)
    const hooks = `location = /bench-hooks { content_by_lua_block {
      local c, reg = require("dyups.metrics.counters"), require("dyups.registry.sync")
      local ver = reg.lookup("bench")
      local N, now = 2000000, ngx.now
      for i = 1, 20000 do c.countTry(ver, i % 2 + 1, false); c.observe(ver, i % 2 + 1, now(), true) end
      ngx.update_time()
      local t0 = now()
      for i = 1, N do local gi = i % 2 + 1; c.countTry(ver, gi, false); c.observe(ver, gi, t0, true) end
      ngx.update_time()
      ngx.print((now() - t0) / N * 1e9)
    } }`;
    const ng = await h.startNginx({ workers: 2, backends: 0, logLevel: "warn", includeConf: false, httpExtra, serverExtra: hooks,
      proxyExtra: `${keep} log_by_lua_block { require("dyups").log() }` });
    running.nginx.add(ng);
    try {
      const r = await ng.post("/upstream/bench", `server 127.0.0.1:${B1}; server 127.0.0.1:${B2};`);
      if (r.status !== 200) throw new Error(`cannot create the upstream: ${r.status} ${r.body}`);
      const T = { on: `http://127.0.0.1:${ng.proxyPort}/`, off: `http://127.0.0.1:${offPort}/` };
      for (const url of Object.values(T)) {
        const seen = new Set();
        for (let i = 0; i < 8; i++) {
          const p = await h.request(Number(new URL(url).port), "GET", "/", { headers: { host: "bench" } });
          if (p.status !== 200) throw new Error(`sanity: ${url} answered ${p.status}`);
          seen.add(p.body);
        }
        if (seen.size !== 2) throw new Error(`sanity: ${url} reached ${[...seen]}`);
      }
      const pids = ng.workerPids();
      const n = QUICK ? 3 : 8, seconds = QUICK ? 2 : 4;
      for (const url of Object.values(T)) await wrk(url, { seconds: QUICK ? 1 : 2, host: "bench" }); // warm-up
      await sleep(1500);
      const countedBefore = requestsOf((await ng.get("/metrics")).body);
      console.log(`\n## a. metrics on vs off (one nginx, 2 workers, the same upstream; wrk -t2 -c50, ${n} interleaved rounds x ${seconds} s)`);
      console.log(`  ${pad("round", 7)}${pad("metrics", 9)}${lpad("req/s", 11)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}${lpad("non-2xx", 9)}`);
      const res = { on: [], off: [] };
      for (let r = 1; r <= n; r++) {
        for (const k of r % 2 ? ["on", "off"] : ["off", "on"]) {
          const w = await wrk(T[k], { seconds, host: "bench", pids });
          res[k].push(w);
          console.log(`  ${pad(r, 7)}${pad(k, 9)}${lpad(f1(w.rps), 11)}${lpad(f3(w.p99ms), 9)}${lpad(f2(w.cpuUs), 12)}${lpad(w.non2xx + w.errors, 9)}`);
        }
      }
      const med = (xs, k) => median(xs.map((x) => x[k]));
      const ratio = med(res.on, "rps") / med(res.off, "rps");
      const perRound = median(res.on.map((x, i) => x.rps / res.off[i].rps));
      const cpu = med(res.off, "cpuUs") / med(res.on, "cpuUs");
      const bad = [...res.on, ...res.off].reduce((a, x) => a + x.non2xx + x.errors, 0);
      if (bad) console.log(`  WARNING: ${bad} non-2xx answers or socket errors: these figures are not valid`);
      // the counts must be right too: the metrics hold every request of the "on" rounds, none of the "off" ones
      await sleep(1500);
      const counted = requestsOf((await ng.get("/metrics")).body) - countedBefore;
      const sent = res.on.reduce((a, x) => a + x.requests, 0);
      console.log(`  requests the metrics counted during the rounds: ${counted}; wrk completed ${sent} on the counted path (it counts only those that finished in time)`);
      console.log(`  median: on ${f1(med(res.on, "rps"))} req/s ${f2(med(res.on, "cpuUs"))} us CPU | off ${f1(med(res.off, "rps"))} req/s ${f2(med(res.off, "cpuUs"))} us CPU`);
      const hookNs = Number((await ng.get("/bench-hooks")).body);
      console.log(`  the counting hooks alone (countTry + observe, 2 000 000 times in one worker): ${f1(hookNs)} ns per request`);
      summary.push(`metrics.a  on ${f1(med(res.on, "rps"))} req/s ${f2(med(res.on, "cpuUs"))} us CPU | off ${f1(med(res.off, "rps"))} req/s ${f2(med(res.off, "cpuUs"))} us CPU | ratio ${f3(ratio)} (per-round ${f3(perRound)}, CPU off/on ${f3(cpu)}); target >= 0.98; hooks alone ${f1(hookNs)} ns/request`);
    } finally {
      await ng.stop();
      running.nginx.delete(ng);
    }
  }

  if (only !== "a") {
    const many = QUICK ? 1000 : 10000;
    console.log(`\n## b. GET /metrics with ${many} upstreams x 2 peers (2 workers)`);
    const x = await instance(h, {});
    try {
      const secs = await createMany(x.ng, many, `server 127.0.0.1:${x.B1}; server 127.0.0.1:${x.B2};`);
      console.log(`  created ${many} upstreams in ${f1(secs)} s`);
      await x.ng.post("/upstream/probe", `server 127.0.0.1:${x.B1};`);
      const report = async (what) => {
        await timeGets(x.ng, "/metrics", 1); // the scraping worker's catalog is warm (records decoded once)
        const c0 = cpuNs(x.pids);
        const t = await timeGets(x.ng, "/metrics", 5);
        const cpu = (cpuNs(x.pids) - c0) / 1e6 / 5;
        const text = t.body;
        const samples = text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
        const slice = metric(text, "dyups_metrics_scrape_max_slice_seconds") * 1000;
        console.log(`  ${pad(what, 34)} ${lpad(f1(median(t.ms)), 7)} ms median, ${lpad(f1(Math.max(...t.ms)), 7)} ms max, ${lpad(f1(cpu), 6)} ms CPU, ${lpad(f1(t.bytes / 1e6), 5)} MB, ${samples} samples, longest slice ${f1(slice)} ms`);
        return { med: median(t.ms), max: Math.max(...t.ms), cpu, mb: t.bytes / 1e6, samples, slice };
      };
      const idle = await report("idle (no traffic yet):");
      // traffic to every upstream: each request names a random one
      const script = spreadScript(snap, "u");
      const w = await wrk(x.url, { seconds: QUICK ? 3 : 8, script, env: { BENCH_NAMES: String(many) } });
      console.log(`  spread traffic: ${w.requests} requests over ${many} upstreams (${f1(w.rps)} req/s)`);
      await sleep(2500);
      const busy = await report("after traffic to every upstream:");
      const first = (await timeGets(x.ng, "/metrics", 1)).body;
      const counted = [...first.matchAll(/^dyups_upstream_requests_total\{upstream="u\d+"\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
      console.log(`  requests counted over the ${many} upstreams: ${counted} (wrk completed ${w.requests})`);
      // the stall: small requests to the same nginx while scrapes run, against the same without
      const quiet = await probeLatency(x.ng, "probe", () => sleep(QUICK ? 2000 : 4000));
      const scraping = await probeLatency(x.ng, "probe", () => timeGets(x.ng, "/metrics", QUICK ? 3 : 6));
      console.log(`  small requests meanwhile: without scrapes max ${f1(quiet.max)} ms (p99 ${f2(quiet.p99)}, ${quiet.n}), during scrapes max ${f1(scraping.max)} ms (p99 ${f2(scraping.p99)}, ${scraping.n})`);
      const stats = await timeGets(x.ng, "/stats?limit=100", 5);
      const search = await timeGets(x.ng, "/stats?match=u9999&limit=100", 5);
      console.log(`  GET /stats (the dashboard's poll): first 100 of ${many} ${f1(median(stats.ms))} ms, search ${f1(median(search.ms))} ms`);
      const st = JSON.parse((await x.ng.get("/status")).body);
      console.log(`  metrics dict: ${f1((32 * 1024 * 1024 - metric(first, 'dyups_shm_free_bytes\\{dict="dyups_metrics"\\}')) / 1e6)} MB used of 33.6; lua_kb per worker ${st.workers.map((x) => x.lua_kb).join("/")}`);
      summary.push(`metrics.b  GET /metrics, ${many} upstreams x 2 peers: idle ${f1(idle.med)} ms (${f1(idle.cpu)} ms CPU, ${f1(idle.mb)} MB), after traffic ${f1(busy.med)} ms median ${f1(busy.max)} ms max (${f1(busy.cpu)} ms CPU, ${f1(busy.mb)} MB, ${busy.samples} samples); longest slice without yielding ${f1(busy.slice)} ms; small requests meanwhile max ${f1(scraping.max)} ms (without scrapes ${f1(quiet.max)} ms); /stats ${f1(median(stats.ms))} ms`);
    } finally {
      await x.ng.stop();
      running.nginx.delete(x.ng);
    }
  }
  console.log("\n## summary (bench-metrics)");
  for (const l of summary) console.log(`SUMMARY ${l}`);
}

main().then(cleanup, async (e) => { console.error(`bench-metrics failed: ${e.stack ?? e}`); await cleanup(); process.exit(1); });
