#!/usr/bin/env node
// Benchmark of issue 17's one per-request change: connections are counted (k:<peer> in the shared dict, an incr
// at the pick and one in the log phase, a delete at 0) for every upstream, not only least_conn / random two /
// max_conns ones, so that a drained server's active requests are known. Prints figures; asserts no timing.
// Not part of `make bench` (run it alone: node scripts/bench-conns.mjs).
//   a. the shm operations alone, in a content handler: open + close of a count (2 incr + delete) vs one get
//   b. two nginx side by side, the same config; A's registry/build.lua is patched back to count only for
//      least_conn / random two (the behaviour before), B is the build as is. A round-robin upstream of 2
//      `return 200` backends, keepalive, wrk -t2 -c50, interleaved rounds; medians of req/s and CPU per request.
// BENCH_QUICK=1: fewer, shorter rounds.
import path from "node:path";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { QUICK, running, cleanup, snapshot, median, f1, f2, f3, wrk } from "./bench-lib.mjs";

async function main() {
  const snap = snapshot();
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const before = path.join(snap, "lua-before");
  cpSync(path.join(snap, "dist/lua"), before, { recursive: true });
  const bf = path.join(before, "dyups/registry/build.lua");
  const src = readFileSync(bf, "utf8");
  const patched = src.replace("local peers = attachPeerKeys(set, true)",
    'local peers = attachPeerKeys(set, spec.method == "least_conn" or spec.method == "random" and spec.randomTwo == true)');
  if (patched === src) throw new Error("bench-conns: registry/build.lua no longer has the line to patch: update this script");
  writeFileSync(bf, patched);

  const micro = `location = /micro { content_by_lua_block {
    local d = ngx.shared.dyups
    local k, N = "k:127.0.0.1:9", 1000000
    ngx.update_time(); local t0 = ngx.now()
    for _ = 1, N do d:incr(k, 1, 0); local n = d:incr(k, -1, 0); if n <= 0 then d:delete(k) end end
    ngx.update_time(); local t1 = ngx.now()
    for _ = 1, N do d:get("v") end
    ngx.update_time(); local t2 = ngx.now()
    ngx.print((t1 - t0) / N * 1e9, " ", (t2 - t1) / N * 1e9)
  } }`;
  const conf = readFileSync(path.join(snap, "nginx/dyups.conf"), "utf8").replace(/^\s*log_by_lua_block.*$/m, "");
  const keep = `proxy_http_version 1.1; proxy_set_header Connection "";`;
  const logLua = `log_by_lua_block { require("dyups").log() }`;
  const inst = async (lua) => {
    const [B1, B2] = await h.freePorts(2);
    const x = await h.startNginx({ workers: 2, backends: 0, logLevel: "warn", includeConf: false, proxyExtra: `${keep} ${logLua}`,
      httpExtra: `${conf}\n${h.backendServers([B1, B2])}`, luaPackagePath: `${lua}/?.lua;${lua}/?/init.lua;;`, serverExtra: micro });
    running.nginx.add(x);
    const w = await x.post("/upstream/bench", `server 127.0.0.1:${B1}; server 127.0.0.1:${B2};`);
    if (w.status !== 200) throw new Error(`cannot create the upstream: ${w.body}`);
    return { x, url: `http://127.0.0.1:${x.proxyPort}/`, pids: x.workerPids() };
  };
  const A = await inst(before);
  const B = await inst(path.join(snap, "dist/lua"));

  console.log("## a. shm operations per request (1 000 000 iterations in a content handler, 5 runs)");
  const open = [], get = [];
  for (let i = 0; i < 5; i++) {
    const [o, g] = (await h.request(B.x.apiPort, "GET", "/micro", { timeout: 60000 })).body.split(" ").map(Number);
    open.push(o); get.push(g);
  }
  console.log(`  open + close of a count (2 incr + delete at 0): median ${f1(median(open))} ns; one shm get: ${f1(median(get))} ns`);

  const n = QUICK ? 4 : 10, seconds = QUICK ? 2 : 4;
  console.log(`\n## b. counting for round robin: A before (not counted), B now (counted); wrk -t2 -c50, ${n} interleaved rounds x ${seconds} s`);
  for (const t of [A, B]) await wrk(t.url, { seconds: 2, host: "bench" });
  const res = { A: [], B: [] };
  for (let r = 1; r <= n; r++) {
    for (const [name, t] of r % 2 ? [["A", A], ["B", B]] : [["B", B], ["A", A]]) {
      const x = await wrk(t.url, { seconds, host: "bench", pids: t.pids });
      res[name].push(x);
      console.log(`  round ${r} ${name} ${f1(x.rps)} req/s ${f2(x.cpuUs)} us CPU/req non-2xx ${x.non2xx} errors ${x.errors}`);
    }
  }
  const med = (arr, k) => median(arr.map((x) => x[k]));
  const perRound = median(res.A.map((a, i) => res.B[i].rps / a.rps));
  console.log(`  A ${f1(med(res.A, "rps"))} req/s ${f2(med(res.A, "cpuUs"))} us CPU/req | B ${f1(med(res.B, "rps"))} req/s ${f2(med(res.B, "cpuUs"))} us CPU/req`);
  console.log(`SUMMARY conns  open+close ${f1(median(open))} ns (one get ${f1(median(get))} ns) | round robin counted/not: req/s ${f3(med(res.B, "rps") / med(res.A, "rps"))} (per-round ${f3(perRound)}), CPU per request ${f3(med(res.B, "cpuUs") / med(res.A, "cpuUs"))}`);
}

main().catch((e) => { console.error(e); process.exitCode = 1; }).finally(cleanup);
