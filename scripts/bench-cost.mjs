#!/usr/bin/env node
// Benchmark of issue 19: the per-request cost, against plain nginx. Prints figures with their targets;
// asserts no timing.
//
// Three nginx side by side, one worker each (as the issue measures), each with its own 2 backends in the same
// process, the same proxy settings (HTTP/1.1 keepalive to the backends, `keepalive 64`), wrk -t2 -c50:
//   plain     nginx WITHOUT the Lua module: a static `upstream` block. The limit.
//   product   the product's nginx with the one-line include (nginx/dyups.conf as shipped: its http-level
//             log_by_lua runs for every request of the nginx, the backends' included):
//             "no dyups"  a static `upstream` block: a request that does not use dyups (the tax on everything else)
//             "lua floor" a balancer_by_lua that only calls set_current_peer (the cost of entering that phase)
//             "dynamic"   proxy_pass http://dyups to a dyups upstream of the same 2 backends (round robin)
//   location  the product's nginx with the per-location form (nginx/dyups-http.conf at http level,
//             nginx/dyups-location.conf in the dyups location only): "no dyups (loc)", "lua floor (loc)",
//             "dynamic (loc)". Each form's dynamic path is compared with the floor of its own nginx.
// Two profiles, each with its own pair of nginx:
//   trivial    backends `return 200` (a 2-byte body), access_log off: the worst case for any per-request cost
//   realistic  backends serve an 8 KB file, a buffered access log on the proxy (combined, buffer=64k), as in
//              production
// Rounds interleave all paths (A B C D, then D C B A, ...); figures are medians over rounds, with the
// per-round ratio (each round's runs adjacent in time) and CPU per request (/proc/PID/schedstat of that
// nginx's workers, proxy and backend work together: far less disturbed by other load than req/s).
// Targets (issue 19): trivial: no dyups >= 0.99 of plain; dynamic >= 0.95 of the lua floor and >= 0.88 of
// plain; realistic: dynamic >= 0.97 of plain; each printed for both forms. (Spread over 10 000 upstreams:
// scripts/bench-balancer.mjs b.)
// BENCH_QUICK=1: 3 rounds x 2 s.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, readFileSync, chmodSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { QUICK, running, cleanup, snapshot, median, f1, f2, f3, pad, lpad, wrk, sleep, luaFloorUpstream, realisticAccessLog } from "./bench-lib.mjs";

const ROUNDS = QUICK ? 3 : 6, SECONDS = QUICK ? 2 : 4;
const KEEP = `proxy_http_version 1.1; proxy_set_header Connection "";`;

/** A folder with the realistic profile's page: 8 KB (a small page / API answer), served by the backends. */
function pageDir() {
  const dir = mkdtempSync(path.join(tmpdir(), "dyups-page-"));
  running.dirs.add(dir);
  chmodSync(dir, 0o755);
  writeFileSync(path.join(dir, "index.html"), "x".repeat(8192));
  return dir;
}

function backendBlock(ports, profile, page) {
  const loc = profile === "realistic" ? `root ${page};` : `return 200 "ok";`;
  return ports.map((p) => `  server { listen 127.0.0.1:${p}; access_log off; location / { ${loc} } }`).join("\n");
}

function accessLog(dir, profile) {
  return profile === "realistic" ? realisticAccessLog(dir) : "access_log off;";
}

/** plain nginx, no Lua module at all: its own process, config, backends. */
async function startPlain(h, nginxBin, profile, page) {
  const [port, b1, b2] = await h.freePorts(3);
  const dir = mkdtempSync(path.join(tmpdir(), "dyups-plain-"));
  running.dirs.add(dir);
  chmodSync(dir, 0o755);
  mkdirSync(path.join(dir, "conf"));
  mkdirSync(path.join(dir, "logs"));
  writeFileSync(path.join(dir, "conf/nginx.conf"), `daemon off; master_process on; worker_processes 1;
pid ${dir}/nginx.pid; error_log ${dir}/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream static_b { server 127.0.0.1:${b1}; server 127.0.0.1:${b2}; keepalive 64; }
${backendBlock([b1, b2], profile, page)}
  server { listen 127.0.0.1:${port} reuseport; ${accessLog(dir, profile)} location / { proxy_pass http://static_b; ${KEEP} } }
}
`);
  const proc = spawn(nginxBin, ["-p", dir, "-c", "conf/nginx.conf"], { stdio: "ignore" });
  const exited = new Promise((r) => proc.once("exit", r));
  const x = {
    url: `http://127.0.0.1:${port}/`,
    pids: () => execFileSync("pgrep", ["-P", String(proc.pid)]).toString().trim().split(/\s+/).map(Number),
    async stop() { proc.kill("SIGQUIT"); const t = setTimeout(() => proc.kill("SIGKILL"), 5000); await exited; clearTimeout(t); },
  };
  running.nginx.add(x);
  for (let i = 0; i < 100; i++) {
    try { const r = await h.request(port, "GET", "/", { headers: { host: "bench" } }); if (r.status === 200) return x; } catch {}
    await sleep(50);
  }
  throw new Error("plain nginx did not answer");
}

/** the product's nginx, in the one-line form (dyups.conf as shipped) or the per-location one, and its paths */
async function startProduct(h, profile, page, form) {
  const [noDyups, floor, b1, b2] = await h.freePorts(4);
  const ng = await h.startNginx({
    workers: 1, backends: 0, logLevel: "warn", form,
    proxyExtra: `${KEEP} ${accessLog(".", profile)}`,
    httpExtra: `
  upstream static_b { server 127.0.0.1:${b1}; server 127.0.0.1:${b2}; keepalive 64; }
  ${luaFloorUpstream(b1, b2)}
${backendBlock([b1, b2], profile, page)}
  server { listen 127.0.0.1:${noDyups} reuseport; ${accessLog(".", profile)} location / { proxy_pass http://static_b; ${KEEP} } }
  server { listen 127.0.0.1:${floor} reuseport; ${accessLog(".", profile)} location / { proxy_pass http://lua_floor; ${KEEP} } }`,
  });
  running.nginx.add(ng);
  const w = await ng.post("/upstream/bench", `server 127.0.0.1:${b1}; server 127.0.0.1:${b2};`);
  if (w.status !== 200) throw new Error(`cannot create the upstream: ${w.status} ${w.body}`);
  return {
    ng,
    paths: {
      "no dyups": `http://127.0.0.1:${noDyups}/`,
      "lua floor": `http://127.0.0.1:${floor}/`,
      dynamic: `http://127.0.0.1:${ng.proxyPort}/`,
    },
  };
}

async function profileRun(h, nginxBin, profile, summary) {
  const page = pageDir();
  const plain = await startPlain(h, nginxBin, profile, page);
  const prod = await startProduct(h, profile, page, undefined);
  const loc = await startProduct(h, profile, page, "location");
  try {
    const ppids = plain.pids(), npids = prod.ng.workerPids(), lpids = loc.ng.workerPids();
    const T = [
      { name: "plain nginx", url: plain.url, pids: ppids },
      { name: "no dyups", url: prod.paths["no dyups"], pids: npids },
      { name: "lua floor", url: prod.paths["lua floor"], pids: npids },
      { name: "dynamic", url: prod.paths.dynamic, pids: npids },
      { name: "no dyups (loc)", url: loc.paths["no dyups"], pids: lpids },
      { name: "lua floor (loc)", url: loc.paths["lua floor"], pids: lpids },
      { name: "dynamic (loc)", url: loc.paths.dynamic, pids: lpids },
    ];
    for (const t of T) { // sanity: 200 from both backends; warm-up
      const x = await wrk(t.url, { seconds: 1, host: "bench", pids: t.pids });
      if (x.non2xx || x.errors) throw new Error(`${t.name}: ${x.non2xx} non-2xx, ${x.errors} errors in the warm-up`);
    }
    console.log(`\n## ${profile} (1 worker each, wrk -t2 -c50, ${ROUNDS} interleaved rounds x ${SECONDS} s)`);
    console.log(`  ${pad("round", 7)}${pad("path", 17)}${lpad("req/s", 11)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}${lpad("errors", 8)}`);
    const res = Object.fromEntries(T.map((t) => [t.name, []]));
    for (let r = 1; r <= ROUNDS; r++) {
      for (const t of r % 2 ? T : [...T].reverse()) {
        const x = await wrk(t.url, { seconds: SECONDS, host: "bench", pids: t.pids });
        res[t.name].push(x);
        console.log(`  ${pad(r, 7)}${pad(t.name, 17)}${lpad(f1(x.rps), 11)}${lpad(f3(x.p99ms), 9)}${lpad(f2(x.cpuUs), 12)}${lpad(x.non2xx + x.errors, 8)}`);
      }
    }
    const med = (n, k) => median(res[n].map((x) => x[k]));
    const perRound = (a, b) => median(res[a].map((x, i) => x.rps / res[b][i].rps));
    const ratio = (a, b) => ({ rps: med(a, "rps") / med(b, "rps"), round: perRound(a, b), cpu: med(b, "cpuUs") / med(a, "cpuUs") });
    console.log(`  ${pad("median", 17)}${lpad("req/s", 11)}${lpad("p99 ms", 9)}${lpad("cpu us/req", 12)}`);
    for (const t of T) console.log(`  ${pad(t.name, 17)}${lpad(f1(med(t.name, "rps")), 11)}${lpad(f3(med(t.name, "p99ms")), 9)}${lpad(f2(med(t.name, "cpuUs")), 12)}`);
    const line = (what, a, b, target) => {
      const x = ratio(a, b);
      const met = x.rps >= target && x.cpu >= target ? "met" : x.rps >= target || x.cpu >= target ? "met by one measure" : "not met";
      const s = `${profile.padEnd(9)} ${what.padEnd(40)} req/s ${f3(x.rps)} (per-round ${f3(x.round)}), CPU ${f3(x.cpu)}; target >= ${target}: ${met}`;
      console.log(`  ${s}`);
      summary.push(`cost ${s}`);
    };
    if (profile === "trivial") {
      line("no dyups / plain", "no dyups", "plain nginx", 0.99);
      line("no dyups (loc) / plain", "no dyups (loc)", "plain nginx", 0.99);
      line("dynamic / lua floor", "dynamic", "lua floor", 0.95);
      line("dynamic (loc) / lua floor (loc)", "dynamic (loc)", "lua floor (loc)", 0.95);
      line("dynamic / plain", "dynamic", "plain nginx", 0.88);
      line("dynamic (loc) / plain", "dynamic (loc)", "plain nginx", 0.88);
      line("lua floor / plain (info)", "lua floor", "plain nginx", 0);
      line("lua floor (loc) / plain (info)", "lua floor (loc)", "plain nginx", 0);
    } else {
      line("dynamic / plain", "dynamic", "plain nginx", 0.97);
      line("dynamic (loc) / plain", "dynamic (loc)", "plain nginx", 0.97);
      line("no dyups / plain (info)", "no dyups", "plain nginx", 0);
      line("no dyups (loc) / plain (info)", "no dyups (loc)", "plain nginx", 0);
      line("dynamic (loc) / lua floor (loc) (info)", "dynamic (loc)", "lua floor (loc)", 0);
      line("lua floor (loc) / plain (info)", "lua floor (loc)", "plain nginx", 0);
    }
    const bad = Object.values(res).flat().reduce((a, x) => a + x.non2xx + x.errors, 0);
    if (bad) console.log(`  WARNING: ${bad} non-2xx answers or socket errors: these figures are not valid`);
  } finally {
    await plain.stop(); running.nginx.delete(plain);
    for (const p of [prod, loc]) { await p.ng.stop(); running.nginx.delete(p.ng); }
  }
}

async function main() {
  const snap = snapshot();
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const nginxBin = execFileSync(path.join(snap, "scripts/nginx-bin.sh")).toString().trim();
  console.log(`# bench-cost: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}${QUICK ? ", BENCH_QUICK=1" : ""}`);
  const summary = [];
  for (const profile of ["trivial", "realistic"]) await profileRun(h, nginxBin, profile, summary);
  console.log("\n## summary (bench-cost)");
  for (const l of summary) console.log(`SUMMARY ${l}`);
}

main().then(cleanup, async (e) => { console.error(`bench-cost failed: ${e.stack ?? e}`); await cleanup(); process.exit(1); });
