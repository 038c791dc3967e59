// Changes under traffic, 2 workers: client loops (fresh connections) run while upstreams are added, replaced and
// deleted. An upstream that always has a live peer never answers 5xx; a replaced upstream only reaches its new
// peers once the POST's 200 has been received; a deleted upstream answers 502 from then on, never before.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startDyups, sleep } from "./lib.mjs";

let d, B;
before(async () => {
  d = await startDyups({ workers: 2, backends: 4, upstreamConf: "# no upstreams from the file\n" });
  B = d.backendPorts;
  console.log(`# container ${d.name} ready in ${d.startedIn} ms`);
});
after(async () => { if (d) await d.stop(); });

const servers = (...ports) => ports.map((p) => `server 127.0.0.1:${p};`).join(" ");

/** n concurrent loops of requests to upstream `host` until stop(); each result: { status, body, sentAt, doneAt } */
function load(host, n = 4) {
  const results = [];
  let running = true;
  const loops = Array.from({ length: n }, async () => {
    while (running) results.push(await d.proxy(host));
  });
  return { results, async stop() { running = false; await Promise.all(loops); return results; } };
}

async function post(name, body) {
  const r = await d.post(`/upstream/${name}`, body);
  assert.equal(r.status, 200, `POST ${name}: ${r.status} ${r.body}`);
  return r;
}

test("add, replace and delete under traffic: no 5xx while a live peer exists, no stale peer after a 200", async () => {
  await post("live", servers(B[0]));
  await post("other", servers(B[3]));
  const live = load("live");
  const other = load("other", 2);
  // each step: a POST and the peers it sets. A request may reach the peers of the last version whose 200 was
  // received before the request was sent, or of any later version whose POST was sent before the answer came back.
  const steps = [
    [servers(B[0], B[1]), [B[0], B[1]]],
    [servers(B[1], B[2]), [B[1], B[2]]],
    [servers(B[2]), [B[2]]],
    [`${servers(B[0])} ${servers(B[1])} ${servers(B[2])}`, [B[0], B[1], B[2]]],
    [servers(B[1]), [B[1]]],
  ];
  const versions = [{ sentAt: -Infinity, from: -Infinity, peers: [String(B[0])] }];
  await sleep(200);
  for (const [body, peers] of steps) {
    const r = await post("live", body);
    versions.push({ sentAt: r.sentAt, from: r.doneAt, peers: peers.map(String) });
    await sleep(250);
  }
  const del = await d.del("/upstream/other");
  assert.equal(del.status, 200, del.body);
  await sleep(300);
  const liveResults = await live.stop();
  const otherResults = await other.stop();

  const bad = liveResults.filter((r) => r.status === 0 || r.status >= 500);
  assert.equal(bad.length, 0, `live: ${bad.length} of ${liveResults.length} failed, e.g. ${JSON.stringify(bad.slice(0, 3))}`);
  // a request sent after a window's 200 (and before the next one) only reaches that window's peers
  const stale = [];
  for (const r of liveResults) {
    let first = 0, last = 0;
    for (const [k, v] of versions.entries()) {
      if (v.from < r.sentAt) first = k;
      if (v.sentAt < r.doneAt) last = k;
    }
    const allowed = versions.slice(first, last + 1).flatMap((v) => v.peers);
    if (r.status === 200 && !allowed.includes(r.body)) {
      stale.push(`got ${r.body}, sent ${(r.sentAt - versions[first].from).toFixed(2)} ms after the 200 of step ${first} (allowed: ${[...new Set(allowed)]})`);
    }
  }
  assert.equal(stale.length, 0, `live: ${stale.length} answers from peers of an earlier version: ${stale.slice(0, 5).join("; ")}`);
  assert.ok(liveResults.length > 200, `enough traffic: ${liveResults.length} requests`);

  // other: 200 from B[3] until the DELETE is sent; 502 for requests sent after its 200
  const early5xx = otherResults.filter((r) => r.doneAt < del.sentAt && r.status !== 200);
  const late200 = otherResults.filter((r) => r.sentAt > del.doneAt && r.status !== 502);
  assert.equal(early5xx.length, 0, `other before DELETE: ${JSON.stringify(early5xx.slice(0, 3))}`);
  assert.equal(late200.length, 0, `other after DELETE: ${JSON.stringify(late200.slice(0, 3))}`);
  assert.ok(otherResults.some((r) => r.sentAt > del.doneAt), "requests to the deleted upstream were sent");
  console.log(`# live: ${liveResults.length} requests, other: ${otherResults.length} requests`);
});

test("replacing an upstream with a dead peer next to a live one still answers 200 (retry on the next peer)", async () => {
  // 127.0.0.1:1 refuses connections: nginx moves to the next peer, so clients never see the dead one
  await post("mixed", servers(1, B[0]));
  const rs = await Promise.all(Array.from({ length: 40 }, () => d.proxy("mixed")));
  const bad = rs.filter((r) => r.status !== 200 || r.body !== String(B[0]));
  assert.equal(bad.length, 0, JSON.stringify(bad.slice(0, 3)));
  assert.equal((await d.del("/upstream/mixed")).status, 200);
});

test("the container logged no Lua error while serving", async () => {
  const logs = d.logs();
  const errors = logs.split("\n").filter((l) => /\[(error|crit|alert|emerg)\]/.test(l) && /\[lua\]|\.lua:\d+|lua entry thread|runtime error/.test(l));
  assert.deepEqual(errors, []);
});
