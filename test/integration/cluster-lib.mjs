// Shared by the cluster suites and the cluster benchmark: product nodes (nginx) that follow one etcd, their
// /status, and convergence checks against etcd's own state.
import { mkdtempSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import path from "node:path";
import { crc32 } from "node:zlib";
import { startNginx, eventually } from "./harness.mjs";

/**
 * Starts a node that follows etcd. o: etcd (endpoints), prefix ("/dyups"), workers (2), stateDir (reuse a
 * node's state folder: a restart with its state file), cluster (extra cluster options), init (extra init
 * options), serverExtra. node.stateDir is removed by node.remove() (stop() keeps it, for restarts).
 */
export async function startNode(o) {
  const stateDir = o.stateDir ?? mkdtempSync(path.join(tmpdir(), "dyups-node-"));
  try { execFileSync("chown", ["nobody", stateDir]); } catch {}
  const ng = await startNginx({
    workers: o.workers ?? 2, backends: o.backends ?? 2, logLevel: o.logLevel ?? "notice",
    init: { cluster: { etcd: o.etcd, prefix: o.prefix ?? "/dyups", ...(o.cluster || {}) }, state_file: path.join(stateDir, "state.json"), ...(o.init || {}) },
    serverExtra: o.serverExtra,
  });
  ng.stateDir = stateDir;
  ng.remove = () => rmSync(stateDir, { recursive: true, force: true });
  return ng;
}

export async function status(ng) {
  const r = await ng.get("/status", { timeout: 5000 });
  return JSON.parse(r.body);
}

/** the digest a node shows when it holds exactly etcd's upstreams (kvs from etcd.range) */
export function expectedDigest(kvs, prefix = "/dyups") {
  let d = 0;
  for (const [key, { mod }] of Object.entries(kvs)) {
    const name = key.slice(`${prefix}/upstreams/`.length);
    d ^= crc32(`${name}:${mod}`);
  }
  return d;
}

/**
 * Waits until every node holds etcd's state (digest), has applied up to etcd's revision and watches.
 * Returns the nodes' cluster statuses, or throws with what each node shows.
 */
export async function converged(nodes, etcd, ms = 15000, prefix = "/dyups") {
  let last = [];
  const ok = await eventually(async () => {
    const { kvs, revision } = await etcd.range(`${prefix}/upstreams/`);
    const want = expectedDigest(kvs, prefix);
    last = await Promise.all(nodes.map(async (n) => (await status(n)).cluster));
    return last.every((c) => c.digest === want && c.revision >= revision && c.state === "watching"
      && c.upstreams_in_etcd === Object.keys(kvs).length) ? { kvs, revision, want } : false;
  }, ms, 100);
  if (!ok) throw new Error(`nodes did not converge: ${JSON.stringify(last.map((c) => ({ state: c.state, revision: c.revision, digest: c.digest, lag: c.lag, err: c.last_error })))}`);
  return { ...ok, statuses: last };
}

/** Resolves when `fn()` is truthy, with the milliseconds it took (polling every ms), or rejects after `limit` ms. */
export async function timeUntil(fn, limit = 5000) {
  const t0 = performance.now();
  for (;;) {
    if (await fn()) return performance.now() - t0;
    if (performance.now() - t0 > limit) throw new Error(`not within ${limit} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
