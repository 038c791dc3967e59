// Integration harness: renders an nginx config into a temporary prefix, starts a real nginx (master +
// workers, `daemon off`) as a child process, waits until its ports answer, and always stops it.
// Everything listens on 127.0.0.1, on ports below 32768 (the kernel's ephemeral range starts there).
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync, readFileSync, existsSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import net from "node:net";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const LUA = path.join(ROOT, "dist/lua");
export const NGINX = execFileSync(path.join(ROOT, "scripts/nginx-bin.sh")).toString().trim();
const IS_OPENRESTY = !NGINX.endsWith("/nginx");

export { sleep, freePorts, request, eventually } from "../lib/net.mjs";
import { sleep, freePorts, request } from "../lib/net.mjs";

function luaString(s) {
  return `"${String(s).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}
/** Renders a JS value as a Lua table constructor (for init() options). */
export function luaValue(v) {
  if (v === null || v === undefined) return "nil";
  if (typeof v === "string") return luaString(v);
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return `{ ${v.map(luaValue).join(", ")} }`;
  return `{ ${Object.entries(v).map(([k, x]) => `[${luaString(k)}] = ${luaValue(x)}`).join(", ")} }`;
}

/** server blocks of demo backends: each answers 200 with its own port as the body */
export function backendServers(ports) {
  return ports.map((p) => `  server { listen 127.0.0.1:${p}; location / { return 200 "${p}"; } }`).join("\n");
}

/**
 * Starts nginx. Options:
 *   workers (2), init (init() options object), backends (number of demo backends: each answers its own
 *   port as the body), httpExtra / serverExtra (config text), dictSize ("32m"), prefix (reuse a prefix:
 *   for restart tests), upstreamConf (text written to <prefix>/upstream.conf and passed as upstream_conf),
 *   includeConf (false: do not include nginx/dyups.conf; the test supplies its own in httpExtra),
 *   dyupsConf (the dyups.conf to include: default nginx/dyups.conf), form ("location": the per-location form,
 *   nginx/dyups-http.conf at http level and nginx/dyups-location.conf in the proxy location),
 *   luaPackagePath (default: dist/lua, then ";;"),
 *   initBefore / initAfter / initWorkerExtra (Lua run in init_by_lua before and after init(), in init_worker_by_lua).
 * Returns an object with ports, request helpers, logs and stop().
 */
export async function startNginx(o = {}) {
  const workers = o.workers ?? 2;
  const nb = o.backends ?? 2;
  const ports = await freePorts(2 + nb);
  const [proxyPort, apiPort] = ports;
  const backendPorts = ports.slice(2);
  const prefix = o.prefix ?? mkdtempSync(path.join(tmpdir(), "dyups-it-"));
  mkdirSync(path.join(prefix, "conf"), { recursive: true });
  mkdirSync(path.join(prefix, "logs"), { recursive: true });
  // workers run as nobody: they must reach the temp folders, and write the state folder
  chmodSync(prefix, 0o755);
  mkdirSync(path.join(prefix, "state"), { recursive: true });
  try { execFileSync("chown", ["nobody", path.join(prefix, "state")]); } catch {}
  const init = { ...(o.init || {}) };
  if (o.upstreamConf !== undefined) {
    writeFileSync(path.join(prefix, "upstream.conf"), o.upstreamConf);
    init.upstream_conf = path.join(prefix, "upstream.conf");
  }
  const perLocation = o.form === "location";
  const dyupsConf = o.includeConf === false ? ""
    : `include ${o.dyupsConf ?? `${ROOT}/nginx/${perLocation ? "dyups-http.conf" : "dyups.conf"}`};`;
  const conf = `
${IS_OPENRESTY ? "" : "load_module /usr/lib/nginx/modules/ndk_http_module.so;\nload_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"}
daemon off;
master_process on;
worker_processes ${workers};
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log ${o.logLevel ?? "info"};
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fcgi; uwsgi_temp_path ${prefix}/uwsgi; scgi_temp_path ${prefix}/scgi;
  lua_package_path "${o.luaPackagePath ?? `${LUA}/?.lua;${LUA}/?/init.lua;;`}";
  ${dyupsConf}
  init_by_lua_block { ${o.initBefore ?? ""} require("dyups").init(${luaValue(init)}) ${o.initAfter ?? ""} }
  init_worker_by_lua_block { require("dyups").init_worker() ${o.initWorkerExtra ?? ""} }
  ${o.httpExtra ?? ""}
${backendServers(backendPorts)}
  server {
    listen 127.0.0.1:${proxyPort}${o.reuseport === false ? "" : " reuseport"};
    add_header X-Worker $pid always;
    location / {
      set $dyups_upstream $host;
      proxy_pass http://dyups;
      ${perLocation ? `include ${ROOT}/nginx/dyups-location.conf;` : ""}
      ${o.proxyExtra ?? ""}
    }
  }
  server {
    listen 127.0.0.1:${apiPort};
    client_max_body_size ${o.maxBody ?? "64m"};
    location / { content_by_lua_block { require("dyups").interface() } }
    ${o.serverExtra ?? ""}
  }
}
`;
  writeFileSync(path.join(prefix, "conf/nginx.conf"), conf);
  const errorLog = path.join(prefix, "logs/error.log");
  const proc = spawn(NGINX, ["-p", prefix, "-c", "conf/nginx.conf"], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  proc.stdout.on("data", (d) => (stderr += d));
  const exited = new Promise((r) => proc.once("exit", (code, sig) => r({ code, sig })));
  let done = false;
  exited.then(() => (done = true));

  const ng = {
    prefix, proxyPort, apiPort, backendPorts, proc, conf, workers,
    get exited() { return done; },
    stderr: () => stderr,
    errorLog: () => (existsSync(errorLog) ? readFileSync(errorLog, "utf8") : ""),
    api: (method, p, opts) => request(apiPort, method, p, opts),
    get: (p, opts) => request(apiPort, "GET", p, opts),
    post: (p, body, opts = {}) => request(apiPort, "POST", p, { ...opts, body }),
    del: (p, opts) => request(apiPort, "DELETE", p, opts),
    /** a request through the proxy to upstream `name` */
    proxy: (name, p = "/", opts = {}) => request(proxyPort, opts.method ?? "GET", p, { ...opts, headers: { host: name, ...(opts.headers || {}) } }),
    masterPid: () => Number(readFileSync(path.join(prefix, "nginx.pid"), "utf8").trim()),
    workerPids: () => {
      const master = ng.masterPid();
      return execFileSync("pgrep", ["-P", String(master)]).toString().trim().split(/\s+/).map(Number)
        .filter((p) => { try { return !readFileSync(`/proc/${p}/cmdline`, "utf8").includes("cache"); } catch { return false; } });
    },
    /** send a signal to the master: "HUP" (reload), ... */
    signal: (sig) => process.kill(ng.masterPid(), `SIG${sig}`),
    async stop() {
      if (!done) {
        proc.kill("SIGQUIT");
        const t = setTimeout(() => { if (!done) proc.kill("SIGKILL"); }, 5000);
        await exited;
        clearTimeout(t);
      }
      // a prefix the caller passed in is the caller's to remove (restart tests reuse it)
      if (o.keepPrefix || process.env.DYUPS_KEEP) console.log(`# nginx prefix kept: ${prefix}`);
      else if (!o.prefix) rmSync(prefix, { recursive: true, force: true });
    },
  };
  // wait until both ports answer (or nginx exits: a config error)
  const deadline = Date.now() + 10000;
  for (;;) {
    if (done) {
      const e = new Error(`nginx exited at start:\n${stderr}\n${ng.errorLog()}`);
      e.stderr = stderr + ng.errorLog();
      if (!o.keepPrefix && !o.prefix) rmSync(prefix, { recursive: true, force: true });
      throw e;
    }
    const a = await request(apiPort, "GET", "/list", { allowError: true, timeout: 1000 });
    const b = await request(proxyPort, "GET", "/", { allowError: true, timeout: 1000 });
    if (a.status && b.status) break;
    if (Date.now() > deadline) { await ng.stop(); throw new Error(`nginx did not answer:\n${stderr}`); }
    await sleep(20);
  }
  return ng;
}

/** Starts nginx expecting it to fail; resolves with its output. */
export async function startNginxExpectFailure(o = {}) {
  try {
    const ng = await startNginx(o);
    await ng.stop();
  } catch (e) {
    return e.stderr ?? String(e);
  }
  throw new Error("nginx started but was expected to fail");
}

/** Until fn() returns truthy or ms passes; returns the last value. */
/** Sends raw bytes over one connection and resolves with the raw response text (the server closes). */
export function rawRequest(port, text, timeout = 5000) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    const parts = [];
    s.setTimeout(timeout, () => s.destroy(new Error("timeout")));
    s.on("data", (d) => parts.push(d));
    s.on("end", () => resolve(Buffer.concat(parts).toString()));
    s.on("error", reject);
    s.write(text);
  });
}
