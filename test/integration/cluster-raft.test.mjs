// Cluster mode on a 3-member etcd (started here, each member with its own data directory) and three nodes,
// each listing the members in another order: the leader killed during writes (every write 200 or a clear
// 503, none half-applied, the nodes converge), and a node's member killed under its watch (fail-over).
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { sleep } from "./harness.mjs";
import { startEtcd } from "./etcd.mjs";
import { startNode, status, converged, timeUntil } from "./cluster-lib.mjs";

let etcd;
let nodes = [];
before(async () => {
  etcd = await startEtcd({ members: 3 });
  const eps = etcd.endpoints;
  nodes = await Promise.all([0, 1, 2].map((i) => startNode({ etcd: [...eps.slice(i), ...eps.slice(0, i)] })));
});
after(async () => {
  for (const n of nodes) { await n.stop(); n.remove(); }
  if (etcd) await etcd.stop();
});

describe("three etcd members, three nodes", () => {
  test("etcd's leader killed during writes: every write answers 200 or a clear 503, none is half-applied, the nodes converge", async () => {
    const port = nodes[0].backendPorts[0];
    const names = nodes.flatMap((_, ni) => [0, 1].map((w) => `lw${ni}${w}`));
    for (const name of names) assert.equal((await nodes[0].post(`/upstream/${name}`, `# n=0\nserver 127.0.0.1:${port};`)).status, 200);
    await converged(nodes, etcd);
    const leader = await etcd.leader();
    const answers = Object.fromEntries(names.map((n) => [n, []]));
    let killed = false;
    const N = 30;
    await Promise.all(nodes.flatMap((node, ni) => [0, 1].map(async (w) => {
      const name = `lw${ni}${w}`;
      for (let k = 1; k <= N; k++) {
        if (k === 8 && ni === 0 && w === 0) { await etcd.kill(leader); killed = true; }
        const r = await node.post(`/upstream/${name}`, `# n=${k}\nserver 127.0.0.1:${port};`, { timeout: 15000 });
        answers[name].push({ k, status: r.status, body: r.body });
      }
    })));
    assert.ok(killed);
    const all = Object.values(answers).flat();
    const unclear = all.filter((a) => a.status !== 200 && !(a.status === 503 && /^add server failed: etcd (did not confirm|is unreachable|refused)/.test(a.body)));
    assert.deepEqual(unclear, [], "every write answers 200 or a 503 with the reason");
    const ok = all.filter((a) => a.status === 200).length;
    await etcd.start(leader);
    await etcd.waitReady(leader);
    const { kvs } = await converged(nodes, etcd, 20000);
    for (const name of names) {
      const final = Number(JSON.parse(kvs[`/dyups/upstreams/${name}`].value).body.match(/# n=(\d+)/)[1]);
      const last200 = Math.max(0, ...answers[name].filter((a) => a.status === 200).map((a) => a.k));
      assert.ok(final >= last200, `${name}: etcd holds n=${final}, but n=${last200} was answered 200`);
      for (const a of answers[name].filter((x) => x.k > last200 && x.k <= final)) {
        assert.match(a.body, /did not confirm/, `${name}: n=${a.k} is in etcd but was answered ${a.status} ${a.body}`);
      }
      for (const n of nodes) assert.match(JSON.parse((await n.get(`/upstream/${name}?format=json`)).body).body, new RegExp(`# n=${final}\\n`));
    }
    console.log(`# leader killed during ${all.length} writes: ${ok} answered 200, ${all.length - ok} answered 503`);
  });

  test("the member a node watches is killed: the node fails over to another endpoint and keeps following", async () => {
    const [a, , c] = nodes;
    const watched = (await status(c)).cluster.endpoint;
    const idx = etcd.endpoints.indexOf(watched);
    assert.ok(idx >= 0, watched);
    await etcd.kill(idx);
    const port = a.backendPorts[1];
    let r;
    const ms = await timeUntil(async () => {
      r = await a.post("/upstream/failover", `server 127.0.0.1:${port};`, { timeout: 15000 });
      return r.status === 200;
    }, 15000);
    const etag = `"${r.headers["x-dyups-version"]}"`;
    const seen = await timeUntil(async () => (await c.get("/upstream/failover")).headers.etag === etag, 10000);
    assert.equal((await c.proxy("failover")).body, String(port));
    const s = (await status(c)).cluster;
    assert.notEqual(s.endpoint, watched, "the watch moved to another member");
    console.log(`# member ${watched} killed: write accepted after ${ms.toFixed(0)} ms, followed by the node after ${seen.toFixed(0)} ms more`);
    await etcd.start(idx);
    await etcd.waitReady(idx);
    await converged(nodes, etcd);
    await sleep(10);
  });
});
