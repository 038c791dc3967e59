#!/usr/bin/env node
// Benchmark of issue 15 (active health checks). Prints figures; asserts no timing.
//
//   a. The dynamic-path request rate with checks on vs off, in one nginx (2 workers, wrk -t2 -c50,
//      interleaved rounds, medians): upstream `chk` (2 servers, `check interval=1000 type=http`) against
//      upstream `plain` (the same 2 servers, no check). Ratio of req/s and of nginx CPU per request.
//   b. The prober with 10 000 checked peers at interval=1000: 100 upstreams x 100 servers (100 listener
//      ports in the same nginx), each upstream with its own check configuration, so every (address,
//      configuration) pair is a separate peer: 10 000 probes per second are due. Reported from the prober's
//      own figures (hc:p): probes/s sustained, start lag (actual start - due time) p50/p99/max, and how many
//      probes started later than one interval ("late"). BENCH_HC_TYPE=http|tcp (default tcp) picks the type.
//
// The listeners of (b) run in a second nginx, so the prober's CPU per probe holds only its own side.
// BENCH_QUICK=1: 2 000 peers, shorter rounds. BENCH_ONLY=a|b: one part alone.
import path from "node:path";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { cpus } from "node:os";
import { QUICK, running, cleanup, snapshot, median, f1, f2, f3, pad, lpad, wrk, sleep, cpuNs } from "./bench-lib.mjs";

// tcp (default) or http (a new connection per probe). (With check_keepalive_requests the prober keeps one idle
// connection per peer: 10 000 of them need worker_connections above the harness's 1024.)
const MODE = process.env.BENCH_HC_TYPE ?? "tcp";
const TYPE = MODE === "tcp" ? "tcp" : "http";

async function main() {
  const snap = snapshot();
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const summary = [];
  console.log(`# bench-health: ${cpus().length} cores (${cpus()[0]?.model ?? "?"})${QUICK ? ", BENCH_QUICK=1" : ""}`);
  const nPorts = QUICK ? 40 : 100;
  const nUps = QUICK ? 50 : 100;
  const ports = await h.freePorts(nPorts);
  const [B1, B2] = ports;
  const [hcpPort] = await h.freePorts(1);
  const keep = `proxy_http_version 1.1; proxy_set_header Connection "";`;
  // the listeners run in their own nginx, so the prober's worker CPU holds only the probing side
  const lis = await h.startNginx({
    workers: 2, backends: 0, logLevel: "warn",
    httpExtra: ports.map((p) => `  server { listen 127.0.0.1:${p} backlog=4096; access_log off; location / { return 200 "${p}"; } }`).join("\n"),
  });
  running.nginx.add(lis);
  const ng = await h.startNginx({
    workers: 2, backends: 0, logLevel: "warn", proxyExtra: keep,
    httpExtra: `lua_socket_log_errors off;
  server { listen 127.0.0.1:${hcpPort}; location /hcp { content_by_lua_block { ngx.print(ngx.shared.dyups:get("hc:p") or "{}") } } }`,
    init: { check_concurrency: 200 },
  });
  running.nginx.add(ng);
  const only = process.env.BENCH_ONLY; // "a" or "b": one part alone
  try {
    // ---------------------------------------------------------------- a. checks on vs off
    if (only !== "b") {
    const body = `server 127.0.0.1:${B1}; server 127.0.0.1:${B2};`;
    for (const [name, b] of [["chk", `${body} check interval=1000 rise=2 fall=3 timeout=1000 type=http;`], ["plain", body]]) {
      const r = await ng.post(`/upstream/${name}`, b);
      if (r.status !== 200) throw new Error(`cannot create ${name}: ${r.status} ${r.body}`);
    }
    await sleep(2500); // chk's peers are up after rise=2 probes
    for (const name of ["chk", "plain"]) {
      const r = await ng.proxy(name);
      if (r.status !== 200) throw new Error(`sanity: ${name} answered ${r.status}`);
    }
    const pids = ng.workerPids();
    const url = `http://127.0.0.1:${ng.proxyPort}/`;
    const n = QUICK ? 3 : 6, seconds = QUICK ? 2 : 4;
    for (const host of ["chk", "plain"]) await wrk(url, { seconds: 1, host }); // warm-up
    console.log(`\n## a. checks on vs off (2 workers, wrk -t2 -c50, ${n} interleaved rounds x ${seconds} s)`);
    console.log(`  ${pad("round", 7)}${pad("upstream", 10)}${lpad("req/s", 11)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}${lpad("non-2xx", 9)}`);
    const res = { chk: [], plain: [] };
    for (let r = 1; r <= n; r++) {
      for (const host of r % 2 ? ["chk", "plain"] : ["plain", "chk"]) {
        const x = await wrk(url, { seconds, host, pids });
        res[host].push(x);
        console.log(`  ${pad(r, 7)}${pad(host, 10)}${lpad(f1(x.rps), 11)}${lpad(f3(x.p99ms), 9)}${lpad(f2(x.cpuUs), 12)}${lpad(x.non2xx + x.errors, 9)}`);
      }
    }
    const med = (xs, k) => median(xs.map((x) => x[k]));
    const ratio = med(res.chk, "rps") / med(res.plain, "rps");
    const perRound = median(res.chk.map((x, i) => x.rps / res.plain[i].rps));
    const cpu = med(res.plain, "cpuUs") / med(res.chk, "cpuUs");
    console.log(`  checks on / off: req/s ${f3(ratio)} (per-round ${f3(perRound)}), CPU ${f3(cpu)}`);
    summary.push(`health.a  checks on ${f1(med(res.chk, "rps"))} req/s ${f2(med(res.chk, "cpuUs"))} us CPU | off ${f1(med(res.plain, "rps"))} req/s ${f2(med(res.plain, "cpuUs"))} us CPU | ratio ${f3(ratio)} (per-round ${f3(perRound)}, CPU ${f3(cpu)}); target >= 0.99`);
    await ng.del("/upstream/chk");
    await ng.del("/upstream/plain");
    }
    if (only === "a") return;

    // ---------------------------------------------------------------- b. the prober with many peers
    const peers = nPorts * nUps;
    console.log(`\n## b. prober: ${peers} peers (${nUps} upstreams x ${nPorts} servers, type=${MODE}, interval=1000)`);
    const servers = ports.map((p) => `server 127.0.0.1:${p};`).join(" ");
    const t0 = performance.now();
    for (let i = 0; i < nUps; i++) {
      // a distinct configuration per upstream (the timeout): 100 separate states per address
      const send = MODE === "http" ? ` check_http_send "GET /hc HTTP/1.0\\r\\n\\r\\n";` : "";
      const r = await ng.post(`/upstream/many${i}`, `${servers} check interval=1000 rise=2 fall=3 timeout=${1000 + i} type=${TYPE};${send}`);
      if (r.status !== 200) throw new Error(`creating many${i}: ${r.status} ${r.body}`);
    }
    console.log(`  created in ${f1((performance.now() - t0) / 1000)} s`);
    const stats = async () => JSON.parse((await h.request(hcpPort, "GET", "/hcp")).body);
    await sleep(QUICK ? 3000 : 5000); // the new peers' first probes ran at once: let the schedule settle
    const s0 = await stats();
    const allPids = [...ng.workerPids(), ...lis.workerPids()];
    const c0 = { prober: cpuNs([s0.pid]), all: cpuNs(allPids) };
    const samples = [];
    const secs = QUICK ? 8 : 20;
    console.log(`  ${pad("s", 4)}${lpad("targets", 9)}${lpad("probes/s", 10)}${lpad("lag p50", 9)}${lpad("lag p99", 9)}${lpad("lag max", 9)}${lpad("in flight", 11)}${lpad("queued", 8)}`);
    for (let i = 1; i <= secs; i++) {
      await sleep(1000);
      const s = await stats();
      samples.push(s);
      console.log(`  ${pad(i, 4)}${lpad(s.targets, 9)}${lpad(f1(s.probes_per_s), 10)}${lpad(f1(s.lag_ms.p50), 9)}${lpad(f1(s.lag_ms.p99), 9)}${lpad(f1(s.lag_ms.max), 9)}${lpad(s.in_flight, 11)}${lpad(s.queued, 8)}`);
    }
    const s1 = samples[samples.length - 1];
    const cpuProber = (cpuNs([s0.pid]) - c0.prober) / 1000, cpuAll = (cpuNs(allPids) - c0.all) / 1000;
    const rate = (s1.probes - s0.probes) / (s1.at - s0.at);
    const late = s1.late - s0.late;
    const p99 = Math.max(...samples.map((s) => s.lag_ms.p99));
    const p50 = median(samples.map((s) => s.lag_ms.p50));
    const probes = s1.probes - s0.probes;
    const perProbe = cpuProber / (s1.probes - s0.probes), perProbeAll = cpuAll / (s1.probes - s0.probes);
    console.log(`  CPU per probe: ${f1(perProbe)} us in the prober worker (${f1(perProbe * rate / 10000)} % of a core at this rate), ${f1(perProbeAll)} us in all nginx workers (the prober's nginx + the listeners' nginx); load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
    console.log(`  ${f1(rate)} probes/s sustained for ${peers} peers due at ${peers}/s; start lag p50 ${f1(p50)} ms, worst per-second p99 ${f1(p99)} ms; ${late} of ${probes} probes started later than one interval`);
    summary.push(`health.b  ${peers} peers at interval=1000 (${MODE}): ${f1(rate)} probes/s (due ${peers}/s, ratio ${f3(rate / peers)}), start lag p50 ${f1(p50)} ms, p99 ${f1(p99)} ms (target < 1000), late ${late} of ${probes}; prober in flight ${s1.in_flight}, concurrency ${s1.concurrency}; CPU ${f1(perProbe)} us per probe in the prober (${f1(perProbeAll)} us with the listeners' side)`);
  } finally {
    for (const x of [ng, lis]) { await x.stop(); running.nginx.delete(x); }
  }
  console.log("\n## summary (bench-health)");
  for (const l of summary) console.log(`SUMMARY ${l}`);
}

main().then(cleanup, async (e) => { console.error(`bench-health failed: ${e.stack ?? e}`); await cleanup(); process.exit(1); });
