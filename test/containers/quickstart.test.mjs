// The README quick start (ngx_http_dyups_module's, see /work/shared/reference/dyups-behaviour.md §3.4) against the
// product image: demo upstreams host1/host2 from the image's upstream.conf, POST dyhost, the proxy alternates
// between its two servers, /detail byte for byte, DELETE. One worker, so that round-robin order is observable.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startDyups, request } from "./lib.mjs";

let d, B1, B2;
const detailLine = (port) => `server 127.0.0.1:${port} weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n`;

before(async () => {
  d = await startDyups({ workers: 1, backends: 2 });
  [B1, B2] = d.backendPorts; // the image's demo upstreams: host1 -> B1, host2 -> B2 (8088/8089 by default)
  console.log(`# container ${d.name} ready in ${d.startedIn} ms (proxy ${d.proxyPort}, api ${d.apiPort}, backends ${B1} ${B2})`);
});
after(async () => { if (d) await d.stop(); });

test("the demo backends answer their own port", async () => {
  for (const p of [B1, B2]) {
    const r = await request(p, "GET", "/");
    assert.equal(r.status, 200);
    assert.equal(r.body, String(p));
  }
});

test("GET /list shows the upstream_conf upstreams host1 and host2", async () => {
  const r = await d.get("/list");
  assert.equal(r.status, 200);
  assert.equal(r.body, "host1\nhost2\n");
});

test("host1 and host2 proxy to their backends", async () => {
  assert.deepEqual(await d.proxy("host1").then((r) => [r.status, r.body]), [200, String(B1)]);
  assert.deepEqual(await d.proxy("host2").then((r) => [r.status, r.body]), [200, String(B2)]);
});

test("an unknown upstream is a 502 from the proxy", async () => {
  const r = await d.proxy("dyhost");
  assert.equal(r.status, 502);
});

test("POST /upstream/dyhost with two servers, then the proxy alternates between them", async () => {
  const r = await d.post("/upstream/dyhost", `server 127.0.0.1:${B2};server 127.0.0.1:${B1};`);
  assert.equal(r.status, 200, r.body);
  assert.equal(r.body, "success");
  const answers = [];
  for (let i = 0; i < 6; i++) {
    const p = await d.proxy("dyhost");
    assert.equal(p.status, 200, p.body);
    answers.push(p.body);
  }
  assert.deepEqual(new Set(answers), new Set([String(B1), String(B2)]), `answers: ${answers}`);
  for (let i = 1; i < answers.length; i++) assert.notEqual(answers[i], answers[i - 1], `round-robin alternates: ${answers}`);
});

test("GET /upstream/dyhost lists its servers", async () => {
  const r = await d.get("/upstream/dyhost");
  assert.equal(r.status, 200);
  assert.equal(r.body, `server 127.0.0.1:${B2}\nserver 127.0.0.1:${B1}\n`);
});

test("GET /detail shows every upstream and its servers", async () => {
  const r = await d.get("/detail");
  assert.equal(r.status, 200);
  assert.equal(r.body,
    `host1\n${detailLine(B1)}\nhost2\n${detailLine(B2)}\ndyhost\n${detailLine(B2)}${detailLine(B1)}\n`);
});

test("a body that does not parse is a 400 'add server failed' and changes nothing", async () => {
  const r = await d.post("/upstream/dyhost", "server 127.0.0.1:1 bogus=1;");
  assert.equal(r.status, 400);
  assert.match(r.body, /^add server failed/);
  assert.equal((await d.get("/upstream/dyhost")).body, `server 127.0.0.1:${B2}\nserver 127.0.0.1:${B1}\n`);
});

test("DELETE /upstream/dyhost, then it is gone from /detail and the proxy", async () => {
  let r = await d.del("/upstream/dyhost");
  assert.equal(r.status, 200);
  assert.equal(r.body, "success");
  r = await d.get("/detail");
  assert.equal(r.body, `host1\n${detailLine(B1)}\nhost2\n${detailLine(B2)}\n`);
  assert.equal((await d.proxy("dyhost")).status, 502);
  assert.equal((await d.get("/upstream/dyhost")).status, 404);
  assert.equal((await d.del("/upstream/dyhost")).status, 404);
});
