// Cross-worker consistency, 3 workers: right after each POST's 200, a burst of requests with `Host: NAME` over
// fresh connections (spread over the workers by the kernel) must all reach the new peers: 0 stale answers.
// The same for the interface (GET /upstream/NAME on any worker) and for DELETE (502 right after its 200).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startDyups } from "./lib.mjs";

const WORKERS = 3;
let d, B;
before(async () => {
  d = await startDyups({ workers: WORKERS, backends: 4, upstreamConf: "# empty\n" });
  B = d.backendPorts;
  console.log(`# container ${d.name} ready in ${d.startedIn} ms`);
});
after(async () => { if (d) await d.stop(); });

const ROUNDS = 30, BURST = 24;

test(`${WORKERS} workers: 0 stale answers right after each POST (${ROUNDS} rounds x ${BURST} requests)`, async () => {
  let stale = 0, total = 0;
  const samples = [];
  for (let i = 0; i < ROUNDS; i++) {
    // alternate between disjoint peer sets, so that any stale answer is visible
    const peers = i % 2 === 0 ? [B[0], B[1]] : [B[2], B[3]];
    const r = await d.post("/upstream/burst", peers.map((p) => `server 127.0.0.1:${p};`).join(""));
    assert.equal(r.status, 200, r.body);
    const answers = await Promise.all(Array.from({ length: BURST }, () => d.proxy("burst")));
    for (const a of answers) {
      total++;
      if (a.status !== 200 || !peers.map(String).includes(a.body)) { stale++; if (samples.length < 5) samples.push(`round ${i}: ${a.status} ${a.body.slice(0, 60)}`); }
    }
  }
  assert.equal(stale, 0, `${stale} of ${total} answers were stale or failed: ${samples.join("; ")}`);
});

test("the interface on every worker shows the new servers right after the 200", async () => {
  let stale = 0;
  for (let i = 0; i < 10; i++) {
    const body = `server 127.0.0.1:${B[i % 4]};`;
    assert.equal((await d.post("/upstream/shown", body)).status, 200);
    const reads = await Promise.all(Array.from({ length: 12 }, () => d.get("/upstream/shown")));
    stale += reads.filter((r) => r.status !== 200 || r.body !== `server 127.0.0.1:${B[i % 4]}\n`).length;
  }
  assert.equal(stale, 0);
});

test("after DELETE's 200 every worker answers 502 for the upstream", async () => {
  for (let i = 0; i < 10; i++) {
    assert.equal((await d.post("/upstream/gone", `server 127.0.0.1:${B[0]};`)).status, 200);
    const ok = await Promise.all(Array.from({ length: 12 }, () => d.proxy("gone")));
    assert.deepEqual(ok.filter((r) => r.status !== 200).map((r) => r.status), []);
    assert.equal((await d.del("/upstream/gone")).status, 200);
    const gone = await Promise.all(Array.from({ length: 12 }, () => d.proxy("gone")));
    assert.deepEqual(gone.filter((r) => r.status !== 502).map((r) => `${r.status} ${r.body}`), [], `round ${i}`);
  }
});

test("bursts over fresh connections reach several workers (so '0 stale' covers more than one)", async (t) => {
  // GET /status names the worker that answered (this_worker.pid): a product extension, skipped when absent
  const probe = await d.get("/status");
  let pid;
  try { pid = JSON.parse(probe.body).this_worker?.pid; } catch { /* not JSON */ }
  if (probe.status !== 200 || pid === undefined) { t.skip("no /status with this_worker.pid"); return; }
  const pids = new Set();
  for (let i = 0; i < 5; i++) {
    const rs = await Promise.all(Array.from({ length: BURST }, () => d.get("/status")));
    for (const r of rs) pids.add(JSON.parse(r.body).this_worker.pid);
  }
  console.log(`# ${pids.size} of ${WORKERS} workers answered the bursts`);
  assert.ok(pids.size >= 2, `only worker(s) ${[...pids]} answered`);
});
