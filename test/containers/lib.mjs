// Container-test helpers: the product image run by testcontainers on the host network (loopback only).
//
// Environment: a Docker engine (scripts/docker-engine.sh start), TESTCONTAINERS_RYUK_DISABLED=true (the Ryuk image
// cannot be pulled offline), TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 (set below when missing). DYUPS_IMAGE: an
// already built product image (scripts/containers.sh builds one); without it the image is built here from the
// Dockerfile with BASE_IMAGE=BUILD_IMAGE=$DYUPS_BASE_IMAGE (default dyups-base:bookworm) and the release tarball of
// scripts/dist.sh (DIST_TARBALL: no Node image needed). DYUPS_TEST_RUN labels every container
// of a run (org.dyups.test-run) so that leftovers can be removed.
//
// Every container is started with a fixed name and label and removed in after() even when its start failed (with
// Ryuk off a failed start() leaves the container behind).
import { after } from "node:test";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

process.env.TESTCONTAINERS_RYUK_DISABLED ??= "true";
process.env.TESTCONTAINERS_HOST_OVERRIDE ??= "127.0.0.1";
const { GenericContainer, Wait, StartupCheckStrategy } = await import("testcontainers");

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const RUN = process.env.DYUPS_TEST_RUN || `pid${process.pid}`;
export { sleep, freePorts, eventually } from "../lib/net.mjs";
import { request as httpRequest, sleep, freePorts } from "../lib/net.mjs";
// the line each worker logs at the end of init_worker: "dyups: worker N (pid P) started, version V"
export const WORKER_STARTED = /dyups: worker \d+ .*started/;

const docker = (...args) => execFileSync("docker", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

// ---------------------------------------------------------------------------------------------- HTTP

/** One request over a fresh connection (test/lib/net.mjs); connection errors give status 0 (never throws). */
export function request(port, method, urlPath, opts = {}) {
  return httpRequest(port, method, urlPath, { ...opts, allowError: true });
}

// ---------------------------------------------------------------------------------------------- image

let imagePromise;
/** the product image: $DYUPS_IMAGE, or built once per test file from the Dockerfile */
export function productImage() {
  imagePromise ??= (async () => {
    if (process.env.DYUPS_IMAGE) return process.env.DYUPS_IMAGE;
    const t0 = Date.now();
    const tag = process.env.DYUPS_IMAGE_TAG ?? "dyups:containers-test"; // the tag scripts/containers.sh builds too
    const base = process.env.DYUPS_BASE_IMAGE ?? "dyups-base:bookworm";
    const tarball = execFileSync(path.join(ROOT, "scripts/dist.sh"), [path.join(ROOT, "dist")], { encoding: "utf8" }).trim();
    await GenericContainer.fromDockerfile(ROOT)
      .withBuildArgs({ BASE_IMAGE: base, BUILD_IMAGE: base, DIST_TARBALL: `dist/${path.basename(tarball)}` })
      .withPullPolicy({ shouldPull: () => false })
      .build(tag, { deleteOnExit: false });
    console.log(`# image ${tag} built in ${Date.now() - t0} ms`);
    return tag;
  })();
  return imagePromise;
}

// ---------------------------------------------------------------------------------------------- containers

const started = new Set(); // container names of this file
let seq = 0;

/**
 * Starts the product. o: workers (2), backends (number of demo backends, 2), env (extra environment),
 * upstreamConf (text copied to /etc/dyups/upstream.conf; default: the image's demo host1/host2 file),
 * stateMount (host folder or docker volume name mounted at /var/lib/dyups), expectFailure (do not wait for
 * readiness: resolves once the container has exited), ports (reuse { proxyPort, apiPort, backendPorts }).
 * Returns { name, container, proxyPort, apiPort, backendPorts, api(), get(), post(), del(), proxy(), logs(), stop() }.
 */
export async function startDyups(o = {}) {
  const workers = o.workers ?? 2;
  let proxyPort, apiPort, backendPorts;
  if (o.ports) ({ proxyPort, apiPort, backendPorts } = o.ports);
  else {
    const ports = await freePorts(2 + (o.backends ?? 2));
    [proxyPort, apiPort] = ports;
    backendPorts = ports.slice(2);
  }
  const name = `dyups-ct-${RUN}-${process.pid}-${++seq}`.toLowerCase();
  const env = {
    PROXY_PORT: String(proxyPort),
    API_PORT: String(apiPort),
    DEMO_BACKENDS: backendPorts.join(" "),
    WORKERS: String(workers),
    LOG_LEVEL: "info",
    ...(o.env || {}),
  };
  let gc = new GenericContainer(await productImage())
    .withName(name)
    .withLabels({ "org.dyups.test-run": RUN })
    .withNetworkMode("host") // no port mapping: everything on the host's 127.0.0.1
    .withEnvironment(env)
    .withStartupTimeout(o.startupTimeout ?? 20_000);
  if (o.upstreamConf !== undefined) {
    gc = gc.withCopyContentToContainer([{ content: o.upstreamConf, target: "/etc/dyups/upstream.conf", mode: 0o644 }]);
  }
  if (o.stateMount) gc = gc.withBindMounts([{ source: o.stateMount, target: "/var/lib/dyups", mode: "rw" }]);
  const exited = {};
  gc = o.expectFailure
    ? gc.withWaitStrategy(new UntilExited(name, exited))
    : gc.withWaitStrategy(Wait.forAll([
      Wait.forLogMessage(WORKER_STARTED, workers), // every worker ran init_worker
      Wait.forSuccessfulCommand("dyups-entrypoint health"), // the interface answers (forHttp needs port bindings)
    ]));
  started.add(name);
  const t0 = Date.now();
  let container;
  try {
    container = await gc.start();
  } catch (e) {
    if (o.expectFailure) return { name, error: e, running: undefined, exitCode: undefined, logs: () => `${e.message}\n${logsOf(name)}` };
    const logs = logsOf(name);
    await removeContainer(name);
    e.message += `\n--- container logs (${name}) ---\n${logs}`;
    throw e;
  }
  const d = {
    name, container, proxyPort, apiPort, backendPorts, workers, startedIn: Date.now() - t0,
    ports: { proxyPort, apiPort, backendPorts },
    api: (method, p, opts) => request(apiPort, method, p, opts),
    get: (p) => request(apiPort, "GET", p),
    post: (p, body) => request(apiPort, "POST", p, { body }),
    del: (p) => request(apiPort, "DELETE", p),
    /** a request through the proxy to upstream `host` (fresh connection) */
    proxy: (host, p = "/") => request(proxyPort, "GET", p, { headers: { host } }),
    logs: () => logsOf(name),
    restart: (timeoutSeconds = 10) => container.restart({ timeout: timeoutSeconds }),
    async stop() {
      try { await container.stop({ timeout: 10, removeVolumes: true }); } catch { /* removed below */ }
      await removeContainer(name);
    },
  };
  if (o.expectFailure) return { ...d, ...exited, logs: () => exited.logs ?? logsOf(name) };
  return d;
}

/** the container's output: nginx and the entrypoint log to stderr, so both streams (stdout first) */
function logsOf(name) {
  const r = spawnSync("docker", ["logs", name], { encoding: "utf8", maxBuffer: 64 << 20 });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`;
}

function inspect(name) {
  try {
    const s = JSON.parse(docker("inspect", "-f", "{{json .State}}", name));
    return { exitCode: s.ExitCode, running: s.Running, state: s };
  } catch {
    return { exitCode: undefined, running: undefined };
  }
}

/**
 * A "wait strategy" for containers expected to fail: resolves once the container has exited (or the startup timeout
 * passed, then running stays true), and records exit code, logs and how long it ran in `into`. testcontainers
 * removes a container whose wait strategy fails, and its logs with it: this one never fails.
 */
class UntilExited extends StartupCheckStrategy {
  constructor(name, into) { super(); this.name = name; this.into = into; }
  async waitUntilReady() {
    const end = Date.now() + this.startupTimeoutMs;
    let st;
    for (;;) {
      st = inspect(this.name);
      if (st.running === false || Date.now() > end) break;
      await sleep(100);
    }
    const ranMs = st.state ? Date.parse(st.state.FinishedAt) - Date.parse(st.state.StartedAt) : undefined;
    Object.assign(this.into, { running: st.running, exitCode: st.exitCode, ranMs, logs: logsOf(this.name) });
  }
}

async function removeContainer(name) {
  try { docker("rm", "-f", "-v", name); } catch { /* already gone */ }
  started.delete(name);
}

const volumes = new Set(); // docker volumes of this file
/** a new docker named volume, removed after this file's containers */
export function dockerVolume(what = "state") {
  const vol = `dyups-ct-${RUN}-${process.pid}-${what}-${++seq}`.toLowerCase();
  docker("volume", "create", vol);
  volumes.add(vol);
  return vol;
}

/** a host folder for a bind-mounted state directory, removed after the file */
export function tempDir(prefix = "dyups-ct-") {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// Always: remove this file's containers, then any container of this run that testcontainers created and left.
after(async () => {
  for (const name of [...started]) await removeContainer(name);
  try {
    const ids = docker("ps", "-aq", "--filter", "label=org.testcontainers=true", "--filter", `label=org.dyups.test-run=${RUN}`)
      .split(/\s+/).filter(Boolean);
    // other test files of the same run may still be running (with --test-concurrency=1 they are not): only ours by name
    for (const id of ids) {
      const n = docker("inspect", "-f", "{{.Name}}", id).trim().replace(/^\//, "");
      if (n.includes(`-${process.pid}-`)) docker("rm", "-f", "-v", id);
    }
  } catch { /* engine gone: nothing to remove */ }
  for (const vol of volumes) { try { docker("volume", "rm", "-f", vol); } catch { /* gone */ } }
});
