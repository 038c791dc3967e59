#!/usr/bin/env node
// A/B of the per-request path between two builds of the Lua (e.g. the last commit and the working tree):
// two nginx side by side, the same config (2 workers, 2 `return 200` backends each, keepalive), rounds
// alternating A B B A ..., wrk -t2 -c50; prints req/s and nginx CPU per request (schedstat) medians and B/A.
//   node scripts/bench-ab.mjs DIR_A DIR_B [path ...]      DIR_*: a dist/lua folder; paths: dynamic (default), static
// Asserts nothing about timings.
import path from "node:path";
import { pathToFileURL } from "node:url";
import { running, cleanup, snapshot, median, f1, f2, f3, wrk } from "./bench-lib.mjs";

const [dirA, dirB] = process.argv.slice(2, 4);
const rounds = Number(process.env.AB_ROUNDS ?? 6), seconds = Number(process.env.AB_SECONDS ?? 4);
if (!dirA || !dirB) { console.error("usage: bench-ab.mjs DIR_A DIR_B"); process.exit(2); }

async function main() {
  const snap = snapshot();
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const keep = `proxy_http_version 1.1; proxy_set_header Connection "";`;
  const inst = async (dir) => {
    const [B1, B2, S] = await h.freePorts(3);
    const ng = await h.startNginx({
      workers: 2, backends: 0, logLevel: "warn",
      luaPackagePath: `${dir}/?.lua;${dir}/?/init.lua;;`,
      proxyExtra: keep,
      httpExtra: `upstream static_b { server 127.0.0.1:${B1}; server 127.0.0.1:${B2}; keepalive 64; }
  server { listen 127.0.0.1:${S} reuseport; location / { proxy_pass http://static_b; ${keep} } }
${h.backendServers([B1, B2])}`,
    });
    running.nginx.add(ng);
    const w = await ng.post("/upstream/bench", `server 127.0.0.1:${B1}; server 127.0.0.1:${B2};`);
    if (w.status !== 200) throw new Error(`${w.status} ${w.body}`);
    return { ng, pids: ng.workerPids(), dynamic: `http://127.0.0.1:${ng.proxyPort}/`, static: `http://127.0.0.1:${S}/` };
  };
  const A = await inst(path.resolve(dirA)), B = await inst(path.resolve(dirB));
  for (const what of ["dynamic", "static"]) {
    for (const x of [A, B]) await wrk(x[what], { seconds: 2, host: "bench", pids: x.pids });
    const res = { A: [], B: [] };
    for (let r = 0; r < rounds; r++) {
      for (const k of r % 2 ? ["B", "A"] : ["A", "B"]) {
        const x = k === "A" ? A : B;
        res[k].push(await wrk(x[what], { seconds, host: "bench", pids: x.pids }));
      }
    }
    const m = (k, f) => median(res[k].map((x) => x[f]));
    console.log(`${what}: A ${f1(m("A", "rps"))} req/s ${f2(m("A", "cpuUs"))} us CPU | B ${f1(m("B", "rps"))} req/s ${f2(m("B", "cpuUs"))} us CPU | B/A req/s ${f3(m("B", "rps") / m("A", "rps"))}, CPU A/B ${f3(m("A", "cpuUs") / m("B", "cpuUs"))}`);
  }
}
main().then(cleanup, async (e) => { console.error(e.stack ?? e); await cleanup(); process.exit(1); });
