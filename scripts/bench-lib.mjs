// Shared by the benchmark scripts (bench-sync.mjs, bench-balancer.mjs): a private snapshot of the tree,
// cleanup of everything a run starts, wrk with CPU-time accounting, percentiles and formatting.
// The Lua code is a private copy of dist/lua taken at start, so a concurrent `tools/build.sh` (which removes
// dist/lua) cannot break a run.
import { spawn, execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, existsSync, readFileSync, chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import path from "node:path";
import http from "node:http";
import { fileURLToPath, pathToFileURL } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const QUICK = process.env.BENCH_QUICK === "1";

// ---------------------------------------------------------------- cleanup: everything we start, we stop
export const running = { nginx: new Set(), children: new Set(), dirs: new Set() };
export async function cleanup() {
  for (const c of running.children) { try { c.kill("SIGKILL"); } catch {} }
  running.children.clear();
  for (const ng of running.nginx) { try { await ng.stop(); } catch {} }
  running.nginx.clear();
  for (const d of running.dirs) rmSync(d, { recursive: true, force: true });
  running.dirs.clear();
}
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, async () => { console.error(`# ${sig}: stopping`); await cleanup(); process.exit(130); });
}

/** A private copy of the tree the harness needs (harness and its test/lib/net.mjs, dist/lua, nginx/*.conf, nginx-bin.sh). */
export function snapshot() {
  if (!existsSync(path.join(REPO, "dist/lua/dyups/init.lua"))) execFileSync(path.join(REPO, "tools/build.sh"), { stdio: "inherit" });
  const dir = mkdtempSync(path.join(tmpdir(), "dyups-bench-"));
  running.dirs.add(dir);
  for (const p of ["test/integration/harness.mjs", "test/lib", "dist/lua", "nginx", "scripts/nginx-bin.sh"]) {
    mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    cpSync(path.join(REPO, p), path.join(dir, p), { recursive: true });
  }
  execFileSync("chmod", ["-R", "a+rX", dir]);
  chmodSync(dir, 0o755);
  if (!existsSync(path.join(dir, "dist/lua/dyups/init.lua"))) throw new Error("dist/lua vanished while copying: rerun");
  return dir;
}

// ---------------------------------------------------------------- small helpers
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export function pct(arr, p) {
  if (arr.length === 0) return NaN;
  const s = [...arr].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
export const median = (arr) => pct(arr, 50);
export const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : "n/a");
export const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
export const f3 = (x) => (Number.isFinite(x) ? x.toFixed(3) : "n/a");
export const pad = (s, n) => String(s).padEnd(n);
export const lpad = (s, n) => String(s).padStart(n);

/** one request over a keep-alive agent (for the write benchmarks: measures the server, not TCP setup) */
export function req(agent, port, method, p, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined) h["content-length"] = Buffer.byteLength(body);
    const r = http.request({ host: "127.0.0.1", port, method, path: p, headers: h, agent }, (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts).toString() }));
      res.on("error", reject);
    });
    r.setTimeout(15000, () => r.destroy(new Error("timeout")));
    r.on("error", reject);
    if (body !== undefined) r.write(body);
    r.end();
  });
}

/** on-CPU nanoseconds of these processes so far (/proc/PID/schedstat: not skewed by other load) */
export function cpuNs(pids) {
  let t = 0;
  for (const p of pids) { try { t += Number(readFileSync(`/proc/${p}/schedstat`, "utf8").split(" ")[0]); } catch {} }
  return t;
}

/**
 * runs wrk; returns { rps, p50ms, p99ms, non2xx, errors, requests, cpuUs }. cpuUs: CPU time the nginx
 * workers `pids` spent per request (proxy and backend work together), when pids are given.
 */
export async function wrk(url, { threads = 2, conns = 50, seconds = 10, host, pids = [], script, env } = {}) {
  const c0 = cpuNs(pids);
  const x = await wrkRun(url, { threads, conns, seconds, host, script, env });
  x.cpuUs = pids.length ? (cpuNs(pids) - c0) / 1000 / x.requests : NaN;
  return x;
}
export function wrkRun(url, { threads, conns, seconds, host, script, env }) {
  return new Promise((resolve, reject) => {
    const args = [`-t${threads}`, `-c${conns}`, `-d${seconds}s`, "--latency"];
    if (host) args.push("-H", `Host: ${host}`);
    if (script) args.push("-s", script);
    args.push(url);
    const c = spawn("wrk", args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...(env ?? {}) } });
    running.children.add(c);
    let out = "";
    c.stdout.on("data", (d) => (out += d));
    c.stderr.on("data", (d) => (out += d));
    c.on("error", (e) => { running.children.delete(c); reject(e); });
    c.on("exit", (code) => {
      running.children.delete(c);
      if (code !== 0) return reject(new Error(`wrk exited ${code}:\n${out}`));
      const ms = (v, u) => Number(v) * ({ us: 0.001, ms: 1, s: 1000, m: 60000 }[u] ?? NaN);
      const lat = (p) => { const m = out.match(new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m")); return m ? ms(m[1], m[2]) : NaN; };
      const rps = Number((out.match(/Requests\/sec:\s+([\d.]+)/) || [])[1]);
      const requests = Number((out.match(/(\d+) requests in/) || [])[1]);
      const non2xx = Number((out.match(/Non-2xx or 3xx responses:\s+(\d+)/) || [0, 0])[1]);
      const se = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
      const errors = se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
      resolve({ rps, p50ms: lat(50), p99ms: lat(99), non2xx, errors, requests, raw: out });
    });
  });
}

export async function status(ng) { return JSON.parse((await ng.get("/status")).body); }

/** waits until every worker applied the current version: { ms waited (NaN on timeout), last status } */
export async function converge(ng, workers, ms, step) {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    const s = await status(ng);
    if (s.workers.length === workers && s.workers.every((w) => w.applied === s.version)) return { ms: performance.now() - t0, s };
    await sleep(step);
  }
  return { ms: NaN, s: await status(ng) };
}

/**
 * A wrk script in DIR that names, per request, a random upstream of PREFIX0 .. PREFIX(N-1) as the Host, with N
 * from the environment (BENCH_NAMES): traffic spread over every upstream. Returns its path.
 */
export function spreadScript(dir, prefix) {
  const script = path.join(dir, "spread.lua");
  writeFileSync(script, `local n = tonumber(os.getenv("BENCH_NAMES"))
local names = {}
for i = 1, n do names[i] = "${prefix}" .. (i - 1) end
local format, random = wrk.format, math.random
function setup(thread) thread:set("seed", tostring(math.random(1, 1e9))) end
function init() math.randomseed(tonumber(seed) or os.time()) end
function request() return format(nil, nil, { Host = names[random(n)] }) end
`);
  return script;
}

/** The realistic profile's access log of the cost benchmarks: buffered, `combined`, in DIR/logs (DIR "." = the prefix). */
export function realisticAccessLog(dir) {
  return `access_log ${dir}/logs/access.log combined buffer=64k flush=5s;`;
}

/**
 * The "lua floor" of the cost benchmarks: an upstream whose balancer_by_lua only sets the peer (alternating
 * between two backends), the least any balancer_by_lua plugin can cost.
 */
export function luaFloorUpstream(b1, b2) {
  return `upstream lua_floor {
    server 127.0.0.1:1 down;
    balancer_by_lua_block {
      local n = (package.loaded.bench_rr or 0) + 1
      package.loaded.bench_rr = n
      require("ngx.balancer").set_current_peer("127.0.0.1", n % 2 == 0 and ${b1} or ${b2})
    }
    keepalive 64;
  }`;
}
