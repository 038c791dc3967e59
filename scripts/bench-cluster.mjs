#!/usr/bin/env node
// Benchmark of issue 16 (cluster mode on etcd). Prints figures; asserts no timing. Needs etcd (Debian's
// etcd-server: scripts/install-deps.sh --test). Everything runs on 127.0.0.1; every process it starts
// (etcd, nginx) it stops, also on error or Ctrl-C.
//
//   a. propagation: from a write's 200 on one node to every other node routing by it (3 nodes, 2 workers
//      each, writes rotating over the nodes), p50/p99. Baseline in the same run: a plain etcd watch client
//      (this process) receiving the same writes' events: the floor of any design that follows etcd.
//   b. writes/s through etcd from 1 and from 8 keep-alive clients on one node, against the same node type in
//      the embedded mode (no etcd), interleaved: ratio cluster/embedded.
//   c. a new node loading 10 000 upstreams from etcd: from nginx's start to routing the last one (target
//      < 2 s), and the node's own figures (read, apply). Baseline: an embedded node starting from a state
//      file with the same 10 000 upstreams.
// ONLY_C=1 runs part c alone; BENCH_QUICK=1 shortens a and b.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, existsSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import http from "node:http";
import { pathToFileURL } from "node:url";
import { QUICK, REPO, running, cleanup, snapshot, pct, median, f1, f2, pad, lpad, req, sleep } from "./bench-lib.mjs";

const b64 = (s) => Buffer.from(s).toString("base64");

/** a raw etcd watch of `prefix` in this process: calls onEvent(key, modRevision) as events arrive */
function rawWatch(port, prefix, onEvent) {
  const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
  const body = JSON.stringify({ create_request: { key: b64(prefix), range_end: b64(end) } });
  const r = http.request({ host: "127.0.0.1", port, method: "POST", path: "/v3/watch", agent: false,
    headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
    let buf = "";
    res.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        const m = JSON.parse(line);
        for (const ev of m.result?.events ?? []) onEvent(Buffer.from(ev.kv.key, "base64").toString(), Number(ev.kv.mod_revision));
      }
    });
  });
  r.on("error", () => {});
  r.end(body);
  return () => r.destroy();
}

async function main() {
  const snap = snapshot();
  for (const p of ["test/integration/etcd.mjs", "test/integration/cluster-lib.mjs"]) {
    mkdirSync(path.dirname(path.join(snap, p)), { recursive: true });
    cpSync(path.join(REPO, p), path.join(snap, p));
  }
  const h = await import(pathToFileURL(path.join(snap, "test/integration/harness.mjs")).href);
  const { startEtcd, gateway } = await import(pathToFileURL(path.join(snap, "test/integration/etcd.mjs")).href);
  const { startNode } = await import(pathToFileURL(path.join(snap, "test/integration/cluster-lib.mjs")).href);
  const etcdVersion = execFileSync("etcd", ["--version"]).toString().split("\n")[0];
  console.log(`# bench-cluster: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${etcdVersion}, load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}${QUICK ? ", BENCH_QUICK=1" : ""}`);
  const summary = [];
  const etcd = await startEtcd({ members: 1 });
  running.nginx.add(etcd); // cleanup() calls stop()
  const started = (ng) => { running.nginx.add({ stop: async () => { await ng.stop(); ng.remove?.(); } }); return ng; };

  // ---------------- a. propagation
  if (!process.env.ONLY_C) {
    const nodes = [];
    for (let i = 0; i < 3; i++) nodes.push(started(await startNode({ etcd: etcd.endpoints, logLevel: "warn" })));
    const writes = QUICK ? 40 : 200;
    const seenByWatch = new Map();
    const stopWatch = rawWatch(etcd.members[0].client, "/dyups/upstreams/", (key, rev) => seenByWatch.set(rev, performance.now()));
    await sleep(200);
    const [A, B] = nodes[0].backendPorts;
    for (const n of nodes) for (let i = 0; i < 20; i++) await n.proxy("warm"); // connections and workers warm
    const all = [], floor = [];
    let unrouted = 0;
    for (let i = 0; i < writes; i++) {
      const w = nodes[i % 3];
      const port = i % 2 ? A : B;
      const r = await w.post("/upstream/prop", `server 127.0.0.1:${port};`);
      const t0 = performance.now();
      if (r.status !== 200) throw new Error(`write ${i}: ${r.status} ${r.body}`);
      const rev = Number(r.headers["x-dyups-version"]);
      const others = nodes.filter((n) => n !== w);
      const times = await Promise.all(others.map(async (n) => {
        for (;;) {
          const p = await h.request(n.proxyPort, "GET", "/", { headers: { host: "prop" }, allowError: true });
          if (p.status === 200 && p.body === String(port)) return performance.now() - t0;
          if (performance.now() - t0 > 5000) { unrouted++; return NaN; }
        }
      }));
      all.push(Math.max(...times));
      for (let k = 0; k < 100 && !seenByWatch.has(rev); k++) await sleep(1);
      if (seenByWatch.has(rev)) floor.push(Math.max(0, seenByWatch.get(rev) - t0));
    }
    stopWatch();
    console.log(`\n## a. write's 200 on one node -> both other nodes route by it (3 nodes x 2 workers, ${writes} writes rotating over the nodes)`);
    console.log(`  every other node routes by it: p50 ${f2(pct(all, 50))} ms, p99 ${f2(pct(all, 99))} ms, max ${f2(pct(all, 100))} ms; not within 5 s: ${unrouted}`);
    console.log(`  baseline, a plain etcd watch client here receives the event: p50 ${f2(pct(floor, 50))} ms, p99 ${f2(pct(floor, 99))} ms (${floor.length} events)`);
    console.log(`  (each node's routing is polled with fresh connections, one request at a time: the figure includes that polling)`);
    summary.push(`cluster.a  write -> every node routes  p50 ${f2(pct(all, 50))} ms  p99 ${f2(pct(all, 99))} ms | etcd watch client p50 ${f2(pct(floor, 50))} ms p99 ${f2(pct(floor, 99))} ms`);

    // ---------------- b. writes/s, cluster vs embedded, interleaved
    const embedded = started(await h.startNginx({ workers: 2, backends: 2, logLevel: "warn" }));
    const seconds = QUICK ? 2 : 5;
    const rounds = QUICK ? 1 : 3;
    async function rate(port, concurrency, tag) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
      const lat = [];
      let n = 0, failed = 0, first;
      const t0 = performance.now(), end = t0 + seconds * 1000;
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const i = n++;
          const s = performance.now();
          const r = await req(agent, port, "POST", `/upstream/${tag}${i % 100}`, `server 127.0.0.1:${1000 + (i % 50)} weight=${1 + (i % 7)}; server 127.0.0.1:${A};`);
          lat.push(performance.now() - s);
          if (r.status !== 200) { failed++; first ??= `${r.status} ${r.body}`; }
        }
      }));
      agent.destroy();
      return { rate: n / ((performance.now() - t0) / 1000), p50: pct(lat, 50), p99: pct(lat, 99), failed, first };
    }
    /** the floor: the same guarded transaction sent to etcd directly from here (keep-alive), no nginx */
    async function rawRate(concurrency) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
      let n = 0;
      const t0 = performance.now(), end = t0 + seconds * 1000;
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const i = n++;
          const key = b64(`/raw/upstreams/r${i % 100}`);
          const body = JSON.stringify({ compare: [{ key, target: "VERSION", version: "0", result: "GREATER" }],
            success: [{ request_put: { key, value: b64(JSON.stringify({ name: `r${i % 100}`, body: `server 127.0.0.1:${1000 + i % 50};` })) } }],
            failure: [{ request_put: { key, value: b64("{}") } }] });
          const r = await req(agent, etcd.members[0].client, "POST", "/v3/kv/txn", body, { "content-type": "application/json" });
          if (r.status !== 200) throw new Error(`etcd txn: ${r.status} ${r.body}`);
        }
      }));
      agent.destroy();
      return n / ((performance.now() - t0) / 1000);
    }
    console.log(`\n## b. writes/s through etcd vs the embedded mode (one node, 2 workers, 100 names, keep-alive clients, ${rounds} x ${seconds} s rounds, interleaved)`);
    console.log(`  ${pad("clients", 9)}${pad("mode", 10)}${lpad("writes/s", 10)}${lpad("p50 ms", 9)}${lpad("p99 ms", 9)}${lpad("failed", 8)}`);
    for (const concurrency of [1, 8]) {
      const res = { cluster: [], embedded: [] };
      for (let r = 0; r < rounds; r++) {
        for (const mode of r % 2 ? ["embedded", "cluster"] : ["cluster", "embedded"]) {
          const x = await rate(mode === "cluster" ? nodes[0].apiPort : embedded.apiPort, concurrency, mode === "cluster" ? "w" : "e");
          res[mode].push(x);
          console.log(`  ${pad(concurrency, 9)}${pad(mode, 10)}${lpad(f1(x.rate), 10)}${lpad(f2(x.p50), 9)}${lpad(f2(x.p99), 9)}${lpad(x.failed, 8)}${x.first ? `  first failure: ${x.first}` : ""}`);
        }
      }
      const c = median(res.cluster.map((x) => x.rate)), e = median(res.embedded.map((x) => x.rate));
      const raw = await rawRate(concurrency);
      console.log(`  ${concurrency} client(s): cluster ${f1(c)} writes/s, embedded ${f1(e)} writes/s, ratio ${f2(c / e)}; etcd alone (the same transaction from here, no nginx) ${f1(raw)} txn/s: cluster/etcd ${f2(c / raw)}`);
      summary.push(`cluster.b  writes/s from ${concurrency} client(s): ${f1(c)} through etcd (p99 ${f2(median(res.cluster.map((x) => x.p99)))} ms), embedded ${f1(e)} (ratio ${f2(c / e)}), etcd alone ${f1(raw)} txn/s (ratio ${f2(c / raw)})`);
    }
  }

  // ---------------- c. a new node loads 10 000 upstreams
  {
    const N = 10000, prefix = "/load";
    const port = etcd.members[0].client;
    let next = 0;
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < N) {
        const ops = [];
        for (let j = 0; j < 100 && next < N; j++) {
          const i = next++;
          const name = `up${String(i).padStart(5, "0")}`;
          const body = `server 127.0.0.1:${1000 + (i % 100)} weight=${1 + (i % 5)};\nserver 127.0.0.1:${2000 + (i % 50)} max_fails=3 fail_timeout=5s;`;
          ops.push({ request_put: { key: b64(`${prefix}/upstreams/${name}`), value: b64(JSON.stringify({ name, body })) } });
        }
        const r = await gateway(port, "/v3/kv/txn", { success: ops });
        if (r.status !== 200) throw new Error(`cannot load etcd: ${JSON.stringify(r.body)}`);
      }
    }));
    const last = `up${String(N - 1).padStart(5, "0")}`;
    async function timeToLast(ng, t0) {
      for (;;) {
        const r = await ng.get(`/upstream/${last}`);
        if (r.status === 200) return performance.now() - t0;
        if (performance.now() - t0 > 60000) throw new Error("the node did not load the upstreams in 60 s");
        await sleep(20);
      }
    }
    const runs = QUICK ? 1 : 3;
    const loads = [], reads = [], applies = [], fromFile = [];
    let stateDir;
    console.log(`\n## c. a new node (2 workers, with a state file) loads ${N} upstreams from etcd; baseline: an embedded node starting from a state file of the same ${N}`);
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      const ng = await startNode({ etcd: etcd.endpoints, prefix, logLevel: "notice" });
      const ms = await timeToLast(ng, t0);
      // the watcher logs its summary line after the last apply, which can be after the last upstream routes
      const line = /read (\d+) upstreams from etcd at revision \d+ in (\d+) ms, applied (\d+) changes in (\d+) ms/;
      for (let k = 0; k < 100 && !line.test(ng.errorLog()); k++) await sleep(20);
      const m = ng.errorLog().match(line);
      loads.push(ms);
      if (m) { reads.push(Number(m[2])); applies.push(Number(m[4])); }
      const list = (await ng.get("/list")).body.trim().split("\n").length;
      console.log(`  run ${r + 1}: start -> routing the last upstream ${f1(ms)} ms; the node read ${m?.[1]} in ${m?.[2]} ms and applied them in ${m?.[4]} ms; /list has ${list}`);
      // wait for the state file to hold them all, for the baseline
      const file = path.join(ng.stateDir, "state.json");
      for (let k = 0; k < 300; k++) {
        try { if (JSON.parse(readFileSync(file, "utf8")).upstreams.length === N) break; } catch {}
        await sleep(50);
      }
      await ng.stop();
      if (stateDir) ng.remove(); else stateDir = ng.stateDir;
    }
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      const ng = await h.startNginx({ workers: 2, backends: 0, logLevel: "warn", init: { state_file: path.join(stateDir, "state.json") } });
      fromFile.push(await timeToLast(ng, t0));
      await ng.stop();
    }
    execFileSync("rm", ["-rf", stateDir]);
    console.log(`  median: from etcd ${f1(median(loads))} ms (target < 2000 ms), of which the read ${f1(median(reads))} ms and the apply ${f1(median(applies))} ms; from a state file (embedded) ${f1(median(fromFile))} ms; ratio ${f2(median(loads) / median(fromFile))}`);
    summary.push(`cluster.c  new node loads ${N} upstreams from etcd in ${f1(median(loads))} ms (read ${f1(median(reads))} ms, apply ${f1(median(applies))} ms; target < 2000 ms) | embedded from a state file ${f1(median(fromFile))} ms`);
  }

  console.log("\n## summary (bench-cluster)");
  for (const l of summary) console.log(`SUMMARY ${l}`);
}

main().then(cleanup, async (e) => { console.error(`bench-cluster failed: ${e.stack ?? e}`); await cleanup(); process.exit(1); });
