// The per-request cost's behaviour (issue 19), over HTTP against real nginx workers:
// - a request that never reaches the dyups balancer (a `return 200` location, a static upstream) leaves no
//   per-request state behind: 100 000 of them keep every worker's Lua heap flat and no request slot in use,
//   with the one-line include (nginx/dyups.conf), whose http-level log phase runs for every request;
// - the per-location form (nginx/dyups-http.conf + nginx/dyups-location.conf in the dyups location) routes,
//   counts and releases like the one-line form, and a dyups location that forgot its log line is named in
//   the error log (once per worker) while its requests still route.
// Requests are pipelined over keep-alive connections (test/lib/net.mjs pipelined): 100 000 take seconds.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { startNginx, freePorts, eventually, sleep, ROOT } from "./harness.mjs";
import { pipelined } from "../lib/net.mjs";

/** /status workers, once every worker has reported after `since` (ms, Date.now()) */
async function workersAfter(ng, since) {
  await sleep(300);
  return eventually(async () => {
    const r = await ng.get("/status");
    const ws = JSON.parse(r.body).workers;
    const fresh = ws.length === ng.workers && ws.every((w) => w.seconds_since_report < (Date.now() - since) / 1000);
    return fresh ? ws : undefined;
  }, 10000, 50);
}

/** a metric's value from the exposition text (labels in the order they are printed) */
function metric(text, name, labels) {
  const m = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return m === undefined ? undefined : Number(m.split(" ").pop());
}

describe("a request that never reaches the balancer", () => {
  let ng;
  after(async () => { await ng?.stop(); });

  test("100 000 of them (return 200, a static upstream) leave no per-request state: Lua heap flat, no slot in use", async () => {
    const [port, backend] = await freePorts(2);
    ng = await startNginx({
      workers: 2, logLevel: "warn",
      // the heartbeat reports the heap with its garbage (timers make some): a full collection every 50 ms
      // makes it the live heap, so a leak shows and garbage does not
      initWorkerExtra: "ngx.timer.every(0.05, function() collectgarbage() end)",
      httpExtra: `upstream plain_static { server 127.0.0.1:${backend}; keepalive 8; }
  server { listen 127.0.0.1:${backend}; location / { return 200 "backend"; } }
  server {
    listen 127.0.0.1:${port};
    location /ret { return 200 "ok"; }
    location /static { proxy_pass http://plain_static; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }`,
    });
    const load = async (n) => {
      const a = await pipelined(port, "/ret", "x", n / 2);
      const b = await pipelined(port, "/static", "x", n / 2);
      assert.deepEqual([a.statuses, b.statuses], [{ 200: n / 2 }, { 200: n / 2 }]);
    };
    const logFrom = ng.errorLog().length; // (the harness's start-up probe leaves a "no live upstreams")
    await load(20000); // warm-up: every code path JIT-compiled, the pools at their working size
    const t0 = Date.now();
    const before = await workersAfter(ng, t0);
    await load(100000);
    const afterLoad = await workersAfter(ng, Date.now());
    for (const w of afterLoad) {
      const b = before.find((x) => x.id === w.id);
      assert.equal(w.inflight, 0, `worker ${w.id}: ${w.inflight} request slots in use`);
      // a per-request leak of even 4 bytes over 100 000 requests would be 400 KB
      assert.ok(w.lua_kb - b.lua_kb < 256, `worker ${w.id}: Lua heap ${b.lua_kb} KB -> ${w.lua_kb} KB`);
    }
    assert.doesNotMatch(ng.errorLog().slice(logFrom), /\[(error|alert|crit)\]/);
    console.log(`# Lua heap per worker, KB: ${before.map((b) => `${b.lua_kb} -> ${afterLoad.find((w) => w.id === b.id).lua_kb}`).join(", ")}`);
  });
});

describe("the per-location form (dyups-http.conf + dyups-location.conf)", () => {
  let ng;

  test("is the one-line form split in two: the same directives, the log line moved to the locations", () => {
    const directives = (f) => readFileSync(path.join(ROOT, "nginx", f), "utf8").split("\n")
      .map((l) => l.replace(/#.*/, "").trim()).filter((l) => l !== "");
    assert.deepEqual(directives("dyups.conf"), [...directives("dyups-http.conf"), ...directives("dyups-location.conf")]);
  });
  after(async () => { await ng?.stop(); });

  test("routes, counts every request and releases its slot; a dyups location without its log line is named once per worker", async () => {
    const [forgot] = await freePorts(1);
    ng = await startNginx({
      workers: 2, form: "location", logLevel: "warn",
      proxyExtra: 'proxy_http_version 1.1; proxy_set_header Connection "";',
      // a location that proxies to dyups but forgot nginx/dyups-location.conf
      httpExtra: `server { listen 127.0.0.1:${forgot}; location / { set $dyups_upstream $host; proxy_pass http://dyups; } }`,
    });
    assert.doesNotMatch(ng.conf, /^\s*include [^;]*dyups\.conf;/m);
    const w = await ng.post("/upstream/formed", ng.backendPorts.map((p) => `server 127.0.0.1:${p};`).join(" "));
    assert.equal(w.status, 200, w.body);
    const r = await pipelined(ng.proxyPort, "/", "formed", 4000);
    assert.deepEqual(r.statuses, { 200: 4000 });
    const ws = await workersAfter(ng, Date.now());
    for (const x of ws) assert.equal(x.inflight, 0, `worker ${x.id}: ${x.inflight} slots in use`);
    const counted = await eventually(async () => {
      const m = await ng.get("/metrics");
      return metric(m.body, "dyups_upstream_requests_total", 'upstream="formed"') === 4000 ? true : undefined;
    }, 5000, 100);
    assert.equal(counted, true);
    assert.doesNotMatch(ng.errorLog(), /without dyups' log phase/);

    // the forgotten log line: requests still route (a slot left behind is released by the next request at
    // its address), the error log says what is missing, once per worker, not once per request
    const f = await pipelined(forgot, "/", "formed", 2000);
    assert.deepEqual(f.statuses, { 200: 2000 });
    const warned = ng.errorLog().match(/without dyups' log phase[^\n]*dyups-location\.conf/g) ?? [];
    assert.ok(warned.length >= 1 && warned.length <= ng.workers, `${warned.length} warnings`);
  });
});
