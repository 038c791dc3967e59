#!/usr/bin/env node
// Benchmark of issue 21 (pickers by name, `balancer ewma`). Prints figures; asserts no timing.
//
// One nginx, 2 workers, the backends `return 200` servers in the same nginx (no Lua in them), keepalive to the
// backends, wrk -t2 -c50, interleaved rounds (A B C D, then D C B A, ...), medians; nginx workers' CPU time
// per request (/proc/PID/schedstat). The same 2 servers behind four upstreams:
//   round robin   nginx's default method: the baseline
//   ewma          `balancer ewma`: the latency-aware picker (scores per worker, outcomes in the log phase)
//   least_conn    for scale: a built-in method that does shared-memory work per request (connection counts)
//   ewma+shm      what sharing ewma's state per request would cost: a registered picker (written by this
//                 script) that runs the built-in ewma and adds the shared-memory operations a shared design needs
//                 per request: the two candidates' scores and active counts read (4 gets), the active count
//                 raised at the pick and lowered at the outcome (2 incr), the score written (1 set). It also
//                 pays the registered kind's check of each answer (pickers.ts registeredPick).
// BENCH_QUICK=1: shorter rounds.
import path from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { pathToFileURL } from "node:url";
import { QUICK, running, cleanup, snapshot, median, f1, f2, f3, pad, lpad, wrk } from "./bench-lib.mjs";

const SHARED_PICKER = `-- bench only: balancer ewma plus the shared-memory traffic of a per-request shared state
local E = require("dyups.balance.ewma").EWMA
local dict = ngx.shared.dyups
local M = { validate = E.validate }
function M.build(peers, config, servers)
  local d = E.build(peers, config, servers)
  d.skeys, d.pkeys = {}, {}
  for gi = 1, peers.total do
    d.skeys[gi] = "bench:s:" .. peers.ids[gi]
    d.pkeys[gi] = "bench:p:" .. peers.ids[gi]
  end
  return d
end
function M.pick(peers, state, tried, key)
  local gi = E.pick(peers, state, tried, key)
  if gi > 0 then
    local d, other = peers.data, gi % peers.total + 1
    dict:get(d.skeys[gi]) dict:get(d.pkeys[gi]) dict:get(d.skeys[other]) dict:get(d.pkeys[other])
    dict:incr(d.pkeys[gi], 1, 0)
  end
  return gi
end
function M.outcome(peers, state, gi, ok, elapsed)
  E.outcome(peers, state, gi, ok, elapsed)
  local d = peers.data
  dict:incr(d.pkeys[gi], -1, 0)
  dict:set(d.skeys[gi], d.score[gi])
end
return M
`;

async function main() {
  const snap = snapshot();
  writeFileSync(path.join(snap, "bench_ewma_shared.lua"), SHARED_PICKER);
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const dyupsConf = readFileSync(path.join(snap, "nginx/dyups.conf"), "utf8");
  console.log(`# bench-pickers: ${cpus().length} cores (${cpus()[0]?.model ?? "?"})${QUICK ? ", BENCH_QUICK=1" : ""}`);
  const [B1, B2] = await h.freePorts(2);
  const keep = `proxy_http_version 1.1; proxy_set_header Connection "";`;
  const logLua = `log_by_lua_block { require("dyups").log() }`;
  // dyups.conf as shipped, but its http-level log_by_lua moves into the proxy location (the backends run no Lua)
  const conf = dyupsConf.replace(/^\s*log_by_lua_block.*$/m, "");
  const lua = path.join(snap, "dist/lua");
  const ng = await h.startNginx({
    workers: 2, backends: 0, logLevel: "warn", includeConf: false, proxyExtra: `${keep} ${logLua}`,
    httpExtra: `${conf}\n${h.backendServers([B1, B2])}`,
    luaPackagePath: `${lua}/?.lua;${lua}/?/init.lua;${snap}/?.lua;;`,
    initBefore: `require("dyups").register_picker("ewma_shm", require("bench_ewma_shared"))`,
  });
  running.nginx.add(ng);
  const summary = [];
  try {
    const servers = `server 127.0.0.1:${B1}; server 127.0.0.1:${B2};`;
    const T = [
      { name: "round robin", host: "rr", body: servers },
      { name: "ewma", host: "ewma", body: `balancer ewma; ${servers}` },
      { name: "least_conn", host: "lc", body: `least_conn; ${servers}` },
      { name: "ewma+shm", host: "ewshm", body: `balancer ewma_shm; ${servers}` },
    ];
    for (const t of T) {
      const w = await ng.post(`/upstream/${t.host}`, t.body);
      if (w.status !== 200) throw new Error(`cannot create ${t.host}: ${w.status} ${w.body}`);
      const seen = new Set();
      for (let i = 0; i < 20; i++) {
        const r = await ng.proxy(t.host);
        if (r.status !== 200) throw new Error(`sanity: ${t.name} answered ${r.status}`);
        seen.add(r.body);
      }
      if (seen.size !== 2 && t.host !== "ewma" && t.host !== "ewshm") throw new Error(`sanity: ${t.name} reached ${[...seen]}`);
    }
    const url = `http://127.0.0.1:${ng.proxyPort}/`;
    const pids = ng.workerPids();
    const n = QUICK ? 3 : 6, seconds = QUICK ? 2 : 3;
    for (const t of T) await wrk(url, { seconds: 1, host: t.host }); // warm-up
    console.log(`\n## request rate by picker, the same 2 servers (2 workers, wrk -t2 -c50, ${n} interleaved rounds x ${seconds} s)`);
    console.log(`  ${pad("round", 7)}${pad("picker", 14)}${lpad("req/s", 11)}${lpad("p50 ms", 9)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}${lpad("non-2xx", 9)}${lpad("errors", 8)}`);
    const res = Object.fromEntries(T.map((t) => [t.name, []]));
    for (let r = 1; r <= n; r++) {
      for (const t of r % 2 ? T : [...T].reverse()) {
        const x = await wrk(url, { seconds, host: t.host, pids });
        res[t.name].push(x);
        console.log(`  ${pad(r, 7)}${pad(t.name, 14)}${lpad(f1(x.rps), 11)}${lpad(f3(x.p50ms), 9)}${lpad(f3(x.p99ms), 9)}${lpad(f2(x.cpuUs), 12)}${lpad(x.non2xx, 9)}${lpad(x.errors, 8)}`);
      }
    }
    const bad = Object.values(res).flat().reduce((a, x) => a + x.non2xx + x.errors, 0);
    if (bad) console.log(`  WARNING: ${bad} non-2xx answers or socket errors: these figures are not valid`);
    const med = (xs, k) => median(xs.map((x) => x[k]));
    const base = res["round robin"];
    console.log(`  ${pad("median of rounds", 20)}${lpad("req/s", 11)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}${lpad("req/s / rr", 12)}${lpad("per-round", 11)}${lpad("cpu rr / cpu", 14)}`);
    for (const t of T) {
      const xs = res[t.name];
      const ratio = med(xs, "rps") / med(base, "rps");
      const perRound = median(xs.map((x, i) => x.rps / base[i].rps));
      const cpu = med(base, "cpuUs") / med(xs, "cpuUs");
      console.log(`  ${pad(t.name, 20)}${lpad(f1(med(xs, "rps")), 11)}${lpad(f3(med(xs, "p99ms")), 9)}${lpad(f2(med(xs, "cpuUs")), 12)}${lpad(f3(ratio), 12)}${lpad(f3(perRound), 11)}${lpad(f3(cpu), 14)}`);
      if (t.name !== "round robin") {
        summary.push(`pickers  ${t.name} / round robin: ${f1(med(xs, "rps"))} vs ${f1(med(base, "rps"))} req/s = ${f3(ratio)} (per-round ${f3(perRound)}), CPU ${f2(med(xs, "cpuUs"))} vs ${f2(med(base, "cpuUs"))} us/req = ${f3(cpu)}${t.name === "ewma" ? "; target >= 0.97" : ""}`);
      }
    }
  } finally {
    await ng.stop();
    running.nginx.delete(ng);
  }
  console.log("\n## summary (bench-pickers)");
  for (const l of summary) console.log(`SUMMARY ${l}`);
}

main().then(cleanup, async (e) => { console.error(`bench-pickers failed: ${e.stack ?? e}`); await cleanup(); process.exit(1); });
