// Every worker sees every change (issue 4): no stale window with 4 workers, recovery of a worker killed
// with SIGKILL, state kept across reload and restart, concurrent writers serialised, a full dict refused
// atomically, trylock, read_msg_log.
import { test, after, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync, rmSync } from "node:fs";
import path from "node:path";
import { startNginx, sleep, eventually, request } from "./harness.mjs";

const started = [];
async function start(o) { const ng = await startNginx(o); started.push(ng); return ng; }
after(async () => { for (const ng of started) await ng.stop(); });

async function status(ng) { return JSON.parse((await ng.get("/status")).body); }

/** waits until every worker applied the current version and has the store's digest */
async function converged(ng, workers) {
  return eventually(async () => {
    const s = await status(ng);
    return s.workers.length === workers && s.workers.every((w) => w.applied === s.version && w.digest === s.digest) ? s : false;
  }, 10000, 50);
}

describe("no stale window (4 workers)", () => {
  test("right after each write's 200, bursts over fresh connections on all workers see only the new peers", async () => {
    const ng = await start({ workers: 4, backends: 2 });
    const [a, b] = ng.backendPorts;
    let stale = 0, total = 0;
    const pids = new Set();
    for (let i = 0; i < 60; i++) {
      const port = i % 2 ? a : b;
      const w = await ng.post("/upstream/flip", `server 127.0.0.1:${port};`);
      assert.equal(w.status, 200);
      const burst = await Promise.all(Array.from({ length: 16 }, () => ng.proxy("flip")));
      for (const r of burst) {
        total++;
        pids.add(r.headers["x-worker"]);
        if (r.status !== 200 || r.body !== String(port)) stale++;
      }
    }
    assert.equal(pids.size, 4, `requests reached ${pids.size} workers`);
    assert.equal(stale, 0, `${stale} stale answers of ${total}`);
    // and a delete is seen at once too
    assert.equal((await ng.del("/upstream/flip")).status, 200);
    const after = await Promise.all(Array.from({ length: 32 }, () => ng.proxy("flip")));
    assert.ok(after.every((r) => r.status === 502));
  });
});

describe("recovery", () => {
  test("a worker killed with SIGKILL during a stream of writes comes back with identical state", async () => {
    const ng = await start({ workers: 4, backends: 2 });
    const [a, b] = ng.backendPorts;
    for (let i = 0; i < 30; i++) assert.equal((await ng.post(`/upstream/pre${i}`, `server 127.0.0.1:${a};`)).status, 200);
    const victim = ng.workerPids()[1];
    let writes = 0;
    const writer = (async () => {
      for (let i = 0; i < 200; i++) {
        // a write whose connection the kill cut is retried, as a client would (writes are idempotent)
        for (let attempt = 0; attempt < 5; attempt++) {
          const r = await ng.post(`/upstream/during${i % 20}`, `server 127.0.0.1:${i % 2 ? a : b};`, { allowError: true });
          if (r.status === 200) { writes++; break; }
          assert.equal(r.status, 0, `write ${i}: ${r.status} ${r.body}`);
        }
      }
    })();
    await sleep(30);
    process.kill(victim, "SIGKILL");
    await writer;
    assert.equal(writes, 200);
    const s = await converged(ng, 4);
    assert.ok(s, "workers did not converge");
    assert.ok(!ng.workerPids().includes(victim), "the killed worker was respawned under a new pid");
    assert.equal(new Set(s.workers.map((w) => w.digest)).size, 1);
    // and the respawned worker routes the early upstreams
    const rs = await Promise.all(Array.from({ length: 64 }, () => ng.proxy("pre7")));
    assert.ok(rs.every((r) => r.status === 200 && r.body === String(a)));
  });

  test("nginx -s reload keeps every upstream", async () => {
    const ng = await start({ workers: 2, backends: 2, upstreamConf: "upstream fromconf { server 127.0.0.1:1; }\n" });
    const [a] = ng.backendPorts;
    for (let i = 0; i < 20; i++) assert.equal((await ng.post(`/upstream/r${i}`, `server 127.0.0.1:${a};`)).status, 200);
    assert.equal((await ng.del("/upstream/fromconf")).status, 200);
    const before = (await ng.get("/detail")).body;
    const oldPids = ng.workerPids();
    ng.signal("HUP");
    await eventually(() => { const p = ng.workerPids(); return p.length === 2 && p.every((x) => !oldPids.includes(x)); }, 10000);
    assert.equal((await ng.get("/detail")).body, before);
    const rs = await Promise.all(Array.from({ length: 20 }, () => ng.proxy("r5")));
    assert.ok(rs.every((r) => r.status === 200 && r.body === String(a)));
    assert.equal((await ng.get("/upstream/fromconf")).status, 404, "a deleted conf upstream stays deleted across reload");
  });

  test("a full stop and start keeps every upstream (state file), and upstream_conf edits win", async () => {
    const conf = "upstream keep { server 127.0.0.1:1; }\nupstream edited { server 127.0.0.1:2; }\n";
    let ng = await start({ workers: 2, backends: 2, upstreamConf: conf, keepPrefix: true, init: {} });
    const prefix = ng.prefix;
    const stateFile = path.join(prefix, "state", "state.json");
    await ng.stop();
    // the same prefix, now with a state file
    ng = await start({ workers: 2, prefix, upstreamConf: conf, init: { state_file: stateFile } });
    const [a] = ng.backendPorts;
    for (let i = 0; i < 10; i++) assert.equal((await ng.post(`/upstream/s${i}`, `server 127.0.0.1:${a} weight=${i + 1};`)).status, 200);
    assert.equal((await ng.post("/upstream/keep", "server 127.0.0.1:3;")).status, 200);
    await eventually(() => existsSync(stateFile) && JSON.parse(readFileSync(stateFile, "utf8")).upstreams.length === 12, 5000);
    const before = (await ng.get("/detail")).body;
    await ng.stop();
    const conf2 = conf.replace("127.0.0.1:2", "127.0.0.1:4");
    ng = await start({ workers: 2, prefix, upstreamConf: conf2, init: { state_file: stateFile } });
    const afterDetail = (await ng.get("/detail")).body;
    assert.equal(afterDetail, before.replace("127.0.0.1:2 ", "127.0.0.1:4 "));
    assert.equal((await ng.get("/upstream/keep")).body, "server 127.0.0.1:3\n", "run-time change kept over the unchanged file");
    assert.equal((await ng.get("/upstream/edited")).body, "server 127.0.0.1:4\n", "an edit of the file wins");
    await ng.stop();
    rmSync(prefix, { recursive: true, force: true }); // kept across the three starts above; ours to remove
  });
});

describe("writers", () => {
  test("8 concurrent writers x 100 updates end in the state of the serial order of their versions", async () => {
    const ng = await start({ workers: 4, backends: 2 });
    const v0 = (await status(ng)).version;
    const writes = [];
    await Promise.all(Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 100; i++) {
        const name = `cw${(w + i) % 5}`;
        const body = `server 127.0.0.${w + 1}:${1000 + i};`;
        const r = await ng.post(`/upstream/${name}`, body);
        assert.equal(r.status, 200, r.body);
        writes.push({ v: Number(r.headers["x-dyups-version"]), name, body });
      }
    }));
    const s = await converged(ng, 4);
    assert.ok(s);
    assert.equal(s.version - v0, 800, "no update lost: one version per write");
    assert.equal(new Set(writes.map((x) => x.v)).size, 800, "versions are unique");
    writes.sort((x, y) => x.v - y.v);
    const expected = {};
    for (const x of writes) expected[x.name] = x.body.match(/server (\S+);/)[1];
    for (const [name, addr] of Object.entries(expected)) {
      assert.equal((await ng.get(`/upstream/${name}`)).body, `server ${addr}\n`);
    }
  });

  test("a full shared dict refuses the next write cleanly (507), every worker keeps the same state", async () => {
    const ng = await start({ workers: 2, backends: 2, includeConf: false, init: { dict: "small" },
      httpExtra: `lua_shared_dict small 256k;
        upstream dyups { server 127.0.0.1:1 down; balancer_by_lua_block { require("dyups").balance() } }
        log_by_lua_block { require("dyups").log() }` });
    const [a] = ng.backendPorts;
    const pad = "# " + "x".repeat(8000) + "\n";
    let refused;
    for (let i = 0; i < 200 && !refused; i++) {
      const r = await ng.post(`/upstream/fill${i}`, `${pad}server 127.0.0.1:${a};`);
      if (r.status !== 200) refused = { i, r };
    }
    assert.ok(refused, "the dict never filled");
    assert.equal(refused.r.status, 507);
    assert.match(refused.r.body, /^add server failed: shared dict "small" is full/);
    const s = await converged(ng, 2);
    assert.ok(s);
    const names = (await ng.get("/list")).body.trim().split("\n");
    assert.equal(names.length, refused.i);
    assert.ok(!names.includes(`fill${refused.i}`));
    const rs = await Promise.all(Array.from({ length: 20 }, () => ng.proxy("fill0")));
    assert.ok(rs.every((r) => r.status === 200));
    // freeing space makes writes possible again
    assert.equal((await ng.del("/upstream/fill0")).status, 200);
    assert.equal((await ng.post("/upstream/small1", `server 127.0.0.1:${a};`)).status, 200);
  });

  test("trylock: concurrent writers get 200 or 409 'wait and try again', never a lost or torn write", async () => {
    const ng = await start({ workers: 4, backends: 2, init: { trylock: true } });
    const v0 = (await status(ng)).version;
    const pad = "# " + "y".repeat(60000) + "\n";
    let ok = 0, busy = 0;
    await Promise.all(Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 40; i++) {
        const r = await ng.post(`/upstream/t${w}`, `${pad}server 127.0.0.1:${1000 + i};`);
        if (r.status === 200) ok++;
        else { assert.equal(r.status, 409); assert.equal(r.body, "wait and try again\n"); busy++; }
      }
    }));
    const s = await converged(ng, 4);
    assert.equal(s.version - v0, ok);
    console.log(`# trylock: ${ok} written, ${busy} answered 409`);
  });

  test("read_msg_log logs each catch-up", async () => {
    const ng = await start({ workers: 2, backends: 1, init: { read_msg_log: true } });
    assert.equal((await ng.post("/upstream/logged", "server 127.0.0.1:1;")).status, 200);
    await sleep(300);
    assert.match(ng.errorLog(), /\[dyups\] worker \d+ caught up from version \d+ to \d+/);
  });
});
