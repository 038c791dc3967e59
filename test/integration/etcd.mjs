// A real etcd (Debian's etcd-server) for the cluster tests and benchmark: one member or several, on
// 127.0.0.1, ports from freePorts(), each member with its own data directory under one temporary folder.
// Fast elections for tests (heartbeat 25 ms, election timeout 250 ms). Every process started here is stopped
// by stop() (by pid); a member can be killed and started again with its data (start(i)).
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import http from "node:http";
import { freePorts, sleep } from "./harness.mjs";

export const ETCD = (() => { try { return execFileSync("sh", ["-c", "command -v etcd"]).toString().trim(); } catch { return ""; } })();

const b64 = (s) => Buffer.from(s).toString("base64");
const unb64 = (s) => Buffer.from(s ?? "", "base64").toString();

/** POST a JSON body to the gateway of 127.0.0.1:port; resolves { status, body (parsed) } or rejects. */
export function gateway(port, p, body, timeout = 5000, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body ?? {});
    const req = http.request({ host: "127.0.0.1", port, method: "POST", path: p, agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(data), ...headers } }, (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("end", () => {
        const text = Buffer.concat(parts).toString();
        let parsed; try { parsed = JSON.parse(text); } catch { parsed = { raw: text }; }
        resolve({ status: res.statusCode, body: parsed });
      });
    });
    req.setTimeout(timeout, () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(data);
  });
}

/**
 * Starts etcd with `members` members. Returns { endpoints, members, put, get, del, range, compact,
 * revision, leader, kill, start, stopAll, startAll, stop }.
 */
export async function startEtcd({ members = 1 } = {}) {
  if (!ETCD) throw new Error("etcd is not installed (scripts/install-deps.sh --test installs etcd-server)");
  const ports = await freePorts(2 * members);
  const dir = mkdtempSync(path.join(tmpdir(), "dyups-etcd-"));
  const ms = Array.from({ length: members }, (_, i) => ({
    name: `m${i + 1}`, client: ports[2 * i], peer: ports[2 * i + 1], proc: undefined, exited: undefined,
  }));
  const cluster = ms.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(",");
  const token = `dyups-${process.pid}-${ports[0]}`;

  function startMember(m) {
    const args = [
      "--name", m.name, "--data-dir", path.join(dir, m.name),
      "--listen-client-urls", `http://127.0.0.1:${m.client}`, "--advertise-client-urls", `http://127.0.0.1:${m.client}`,
      "--listen-peer-urls", `http://127.0.0.1:${m.peer}`, "--initial-advertise-peer-urls", `http://127.0.0.1:${m.peer}`,
      "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", token,
      "--heartbeat-interval", "25", "--election-timeout", "250", "--enable-v2=false",
      "--logger", "zap", "--log-level", "error", "--log-outputs", path.join(dir, `${m.name}.log`),
    ];
    m.proc = spawn(ETCD, args, { stdio: "ignore" });
    m.exited = new Promise((r) => m.proc.once("exit", () => { m.proc = undefined; r(); }));
  }

  async function waitReady(m, ms = 15000) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      try {
        const r = await gateway(m.client, "/v3/kv/range", { key: b64("/"), count_only: true }, 1000);
        if (r.status === 200) return;
      } catch {}
      await sleep(50);
    }
    throw new Error(`etcd ${m.name} did not become ready:\n${logOf(m)}`);
  }
  function logOf(m) { const f = path.join(dir, `${m.name}.log`); return existsSync(f) ? readFileSync(f, "utf8").slice(-2000) : ""; }

  /** a call on the first running member that answers */
  async function call(p, body, headers) {
    let last;
    for (let round = 0; round < 40; round++) {
      for (const m of ms) {
        if (!m.proc) continue;
        try {
          const r = await gateway(m.client, p, body, 3000, headers);
          if (r.status === 200) return r.body;
          last = new Error(`${p}: ${r.status} ${JSON.stringify(r.body)}`);
        } catch (e) { last = e; }
      }
      await sleep(100);
    }
    throw last ?? new Error("no etcd member runs");
  }

  ms.forEach(startMember);
  await Promise.all(ms.map((m) => waitReady(m)));

  const e = {
    dir, members: ms,
    endpoints: ms.map((m) => `127.0.0.1:${m.client}`),
    call,
    async put(key, value) { return call("/v3/kv/put", { key: b64(key), value: b64(value) }); },
    async del(key) { return call("/v3/kv/deleterange", { key: b64(key) }); },
    /** { key: value } of every key under prefix, and the revision read at */
    async range(prefix) {
      const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
      const r = await call("/v3/kv/range", { key: b64(prefix), range_end: b64(end) });
      const out = {};
      for (const kv of r.kvs ?? []) out[unb64(kv.key)] = { value: unb64(kv.value), mod: Number(kv.mod_revision) };
      return { kvs: out, revision: Number(r.header.revision) };
    },
    async get(key) { const r = await call("/v3/kv/range", { key: b64(key) }); const kv = (r.kvs ?? [])[0]; return kv ? { value: unb64(kv.value), mod: Number(kv.mod_revision) } : undefined; },
    async revision() { return Number((await call("/v3/kv/range", { key: b64("/"), count_only: true })).header.revision); },
    async compact(rev) { return call("/v3/kv/compaction", { revision: String(rev ?? await e.revision()), physical: true }); },
    /** index of the member that leads now */
    async leader() {
      for (let round = 0; round < 100; round++) {
        for (const [i, m] of ms.entries()) {
          if (!m.proc) continue;
          try {
            const r = await gateway(m.client, "/v3/maintenance/status", {}, 1000);
            if (r.status === 200 && r.body.leader && r.body.leader === r.body.header.member_id) return i;
          } catch {}
        }
        await sleep(50);
      }
      throw new Error("no etcd leader");
    },
    /** kills member i (SIGKILL by default) and waits for its exit */
    async kill(i, signal = "SIGKILL") { const m = ms[i]; if (m.proc) { m.proc.kill(signal); await m.exited; } },
    /** starts member i again with its data */
    async start(i) { const m = ms[i]; if (!m.proc) { startMember(m); } },
    async waitReady(i) { await waitReady(ms[i]); },
    /** stops every member, removes their data and starts a new, empty cluster on the same ports */
    async wipe() {
      await e.stopAll("SIGKILL");
      for (const m of ms) rmSync(path.join(dir, m.name), { recursive: true, force: true });
      await e.startAll();
    },
    async stopAll(signal = "SIGTERM") { await Promise.all(ms.map((_, i) => e.kill(i, signal))); },
    async startAll() { ms.forEach((m) => { if (!m.proc) startMember(m); }); await Promise.all(ms.map((m) => waitReady(m))); },
    async stop() {
      await e.stopAll("SIGKILL");
      if (!process.env.DYUPS_KEEP) rmSync(dir, { recursive: true, force: true });
      else console.log(`# etcd data kept: ${dir}`);
    },
  };
  return e;
}

export { b64, unb64 };
