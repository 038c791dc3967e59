// State across restarts: with the state file on a volume (a bind-mounted host folder, and a docker named volume),
// upstreams added at run time are back after a container restart and in a new container on the same volume.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { startDyups, tempDir, dockerVolume, eventually } from "./lib.mjs";

const servers = (...ports) => ports.map((p) => `server 127.0.0.1:${p};`).join(" ");

async function expectState(d, B) {
  let r = await d.get("/upstream/keep1");
  assert.equal(r.status, 200, `keep1 after restart: ${r.status} ${r.body}`);
  assert.equal(r.body, `server 127.0.0.1:${B[0]}\nserver 127.0.0.1:${B[1]}\n`);
  r = await d.get("/upstream/keep2");
  assert.equal(r.body, `server 127.0.0.1:${B[1]}\n`);
  assert.equal((await d.get("/upstream/dropped")).status, 404, "a deleted upstream stays deleted");
  const seen = new Set();
  for (let i = 0; i < 8; i++) {
    const p = await d.proxy("keep1");
    assert.equal(p.status, 200, p.body);
    seen.add(p.body);
  }
  assert.deepEqual([...seen].sort(), [String(B[0]), String(B[1])].sort());
  assert.equal((await d.proxy("keep2")).body, String(B[1]));
}

async function writeState(d, B) {
  for (const [name, body] of [["keep1", servers(B[0], B[1])], ["keep2", servers(B[1])], ["dropped", servers(B[0])]]) {
    const r = await d.post(`/upstream/${name}`, body);
    assert.equal(r.status, 200, r.body);
  }
  assert.equal((await d.del("/upstream/dropped")).status, 200);
}

test("bind-mounted state folder: restart the container, then a new container, and the upstreams are back", async (t) => {
  const dir = tempDir("dyups-state-");
  const d = await startDyups({ workers: 2, stateMount: dir });
  t.after(() => d.stop());
  const B = d.backendPorts;
  await writeState(d, B);
  const stateFile = path.join(dir, "state.json");
  // the state file is written in the background: wait until it has the changes (the named-volume test below
  // restarts right after the writes instead)
  const saved = () => existsSync(stateFile) && readFileSync(stateFile, "utf8");
  assert.ok(await eventually(() => /keep2/.test(saved()) && !/dropped/.test(saved()), 5000),
    `state.json on the volume has the changes: ${saved()}`);

  const t0 = Date.now();
  await d.restart(10); // docker restart: SIGQUIT (graceful), then start; waits for the workers again
  console.log(`# restarted in ${Date.now() - t0} ms`);
  await expectState(d, B);
  await d.stop();

  const d2 = await startDyups({ workers: 2, stateMount: dir, ports: d.ports });
  t.after(() => d2.stop());
  await expectState(d2, B);
  // the demo upstreams of upstream_conf are there too
  const list = (await d2.get("/list")).body.split("\n").filter(Boolean).sort();
  assert.deepEqual(list, ["host1", "host2", "keep1", "keep2"]);
});

test("docker named volume: stopped right after the writes (graceful), a new container on the same volume has the upstreams", async (t) => {
  const vol = dockerVolume(); // removed after this file's containers
  let d, d2;
  t.after(async () => { if (d2) await d2.stop(); if (d) await d.stop(); });
  d = await startDyups({ workers: 2, stateMount: vol });
  const B = d.backendPorts;
  await writeState(d, B);
  await d.stop();
  d2 = await startDyups({ workers: 2, stateMount: vol, ports: d.ports });
  await expectState(d2, B);
});

test("without a state file (STATE_FILE empty) a new container starts from upstream_conf only", async (t) => {
  const d = await startDyups({ workers: 1, env: { STATE_FILE: "" } });
  t.after(() => d.stop());
  assert.equal((await d.post("/upstream/temp", servers(d.backendPorts[0]))).status, 200);
  await d.stop();
  const d2 = await startDyups({ workers: 1, env: { STATE_FILE: "" }, ports: d.ports });
  t.after(() => d2.stop());
  assert.equal((await d2.get("/list")).body, "host1\nhost2\n");
});
