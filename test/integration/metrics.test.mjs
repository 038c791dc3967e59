// GET /metrics (issue 18) against a real nginx (2 workers) under traffic: the numbers equal what the client
// sent, failures are counted per peer and kind (a dead port: connect; a server that closes without answering:
// read), a deleted upstream's series are gone (and its counters with them), writes are counted by result,
// Debian's `promtool check metrics` accepts the output, and a real Prometheus (Debian's, started here on
// 127.0.0.1 with a 1 s scrape interval and its own data dir) scrapes the node and answers the per-peer
// request rate from its query API.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startNginx, freePorts, sleep, eventually, request, ROOT } from "./harness.mjs";
import { startEtcd } from "./etcd.mjs";
import { startNode } from "./cluster-lib.mjs";

/** Parses the exposition text into samples { name, labels, value }. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/);
    assert.ok(m, `not a sample line: ${line}`);
    const labels = {};
    if (m[2]) for (const [, k, v] of m[2].matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample named `name` whose labels include `labels` (undefined: none). */
function value(samples, name, labels = {}) {
  const hit = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(hit.length <= 1, `${hit.length} samples of ${name} ${JSON.stringify(labels)}`);
  return hit[0]?.value;
}

let ng, deadPort, closerPort, errorPort;

async function scrape() {
  const r = await ng.get("/metrics");
  assert.equal(r.status, 200);
  assert.equal(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  return parseMetrics(r.body);
}

/** n requests to upstream `name`, `conc` at a time; returns the bodies by count */
async function send(name, n, conc = 8) {
  const bodies = {};
  let next = 0;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < n) {
      next++;
      const r = await ng.proxy(name);
      assert.equal(r.status, 200, `${name}: ${r.status} ${r.body}`);
      bodies[r.body] = (bodies[r.body] ?? 0) + 1;
    }
  }));
  return bodies;
}

describe("GET /metrics", () => {
  before(async () => {
    [deadPort, closerPort, errorPort] = await freePorts(3);
    ng = await startNginx({
      workers: 2,
      // closes every connection without a response: the proxy's try fails after connecting (a read failure)
      // and one that answers 500
      httpExtra: `server { listen 127.0.0.1:${closerPort}; location / { return 444; } }
  server { listen 127.0.0.1:${errorPort}; location / { return 500; } }`,
      proxyExtra: "proxy_next_upstream error timeout http_500;",
    });
  });
  after(async () => { await ng?.stop(); });

  test("requests counted per peer equal what the client sent; the upstream's requests, classes and histogram agree", async () => {
    const [b1, b2] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/counted", `server 127.0.0.1:${b1}; server 127.0.0.1:${b2} weight=3;`)).status, 200);
    const bodies = await send("counted", 400);
    const want = { [`127.0.0.1:${b1}`]: bodies[String(b1)], [`127.0.0.1:${b2}`]: bodies[String(b2)] };
    assert.equal(want[`127.0.0.1:${b1}`] + want[`127.0.0.1:${b2}`], 400);
    // every worker publishes about once a second
    const s = await eventually(async () => {
      const x = await scrape();
      return value(x, "dyups_upstream_requests_total", { upstream: "counted" }) === 400 ? x : undefined;
    }, 5000, 200);
    assert.ok(s, "400 requests were not all counted within 5 s");
    for (const [peer, n] of Object.entries(want)) {
      assert.equal(value(s, "dyups_peer_requests_total", { upstream: "counted", peer }), n, peer);
      assert.equal(value(s, "dyups_peer_responses_total", { upstream: "counted", peer, code: "2xx" }), n, peer);
      assert.equal(value(s, "dyups_peer_active_connections", { upstream: "counted", peer }), 0);
      assert.equal(value(s, "dyups_peer_up", { upstream: "counted", peer }), 1);
      assert.equal(value(s, "dyups_peer_passive_failed", { upstream: "counted", peer }), 0);
      assert.equal(value(s, "dyups_peer_failures_total", { upstream: "counted", peer, type: "connect" }), undefined);
    }
    assert.ok(want[`127.0.0.1:${b2}`] > want[`127.0.0.1:${b1}`] * 2, "weight 3 got about 3 times the requests");
    assert.equal(value(s, "dyups_upstream_responses_total", { upstream: "counted", code: "2xx" }), 400);
    assert.equal(value(s, "dyups_upstream_retries_total", { upstream: "counted" }), 0);
    assert.equal(value(s, "dyups_upstream_response_seconds_count", { upstream: "counted" }), 400);
    assert.equal(value(s, "dyups_upstream_response_seconds_bucket", { upstream: "counted", le: "+Inf" }), 400);
    assert.ok(value(s, "dyups_upstream_response_seconds_sum", { upstream: "counted" }) >= 0);
    assert.equal(value(s, "dyups_upstream_peers_up", { upstream: "counted" }), 2);
    // buckets are cumulative
    const buckets = s.filter((x) => x.name === "dyups_upstream_response_seconds_bucket" && x.labels.upstream === "counted").map((x) => x.value);
    assert.equal(buckets.length, 12);
    assert.deepEqual([...buckets].sort((a, b) => a - b), buckets);
  });

  test("failures are counted at the failing peer: connect (dead port) and read (closed without an answer); the client sees none", async () => {
    const [b1] = ng.backendPorts;
    // max_fails=0: the balancer keeps trying the broken peers, so every one of their tries fails and is retried
    const body = `server 127.0.0.1:${deadPort} max_fails=0; server 127.0.0.1:${closerPort} max_fails=0; server 127.0.0.1:${b1} max_fails=0;`;
    assert.equal((await ng.post("/upstream/broken", body)).status, 200);
    const bodies = await send("broken", 60, 4);
    assert.deepEqual(bodies, { [String(b1)]: 60 });
    const dead = `127.0.0.1:${deadPort}`, closer = `127.0.0.1:${closerPort}`, live = `127.0.0.1:${b1}`;
    const s = await eventually(async () => {
      const x = await scrape();
      return value(x, "dyups_upstream_requests_total", { upstream: "broken" }) === 60 ? x : undefined;
    }, 5000, 200);
    assert.ok(s);
    const tries = (p) => value(s, "dyups_peer_requests_total", { upstream: "broken", peer: p });
    assert.ok(tries(dead) > 0 && tries(closer) > 0);
    assert.equal(tries(live), 60);
    assert.equal(value(s, "dyups_peer_failures_total", { upstream: "broken", peer: dead, type: "connect" }), tries(dead));
    assert.equal(value(s, "dyups_peer_failures_total", { upstream: "broken", peer: dead, type: "read" }), undefined);
    assert.equal(value(s, "dyups_peer_failures_total", { upstream: "broken", peer: closer, type: "read" }), tries(closer));
    assert.equal(value(s, "dyups_peer_failures_total", { upstream: "broken", peer: closer, type: "connect" }), undefined);
    assert.equal(value(s, "dyups_peer_responses_total", { upstream: "broken", peer: live, code: "2xx" }), 60);
    assert.equal(value(s, "dyups_upstream_retries_total", { upstream: "broken" }), tries(dead) + tries(closer));
    assert.equal(value(s, "dyups_upstream_responses_total", { upstream: "broken", code: "2xx" }), 60);
  });

  test("a peer that answers 500 (proxy_next_upstream http_500) counts 5xx responses there, not failures, and the retries", async () => {
    const [, b2] = ng.backendPorts;
    const body = `server 127.0.0.1:${errorPort} max_fails=0; server 127.0.0.1:${b2} max_fails=0;`;
    assert.equal((await ng.post("/upstream/fivehundred", body)).status, 200);
    assert.deepEqual(await send("fivehundred", 40, 4), { [String(b2)]: 40 });
    const s = await eventually(async () => {
      const x = await scrape();
      return value(x, "dyups_upstream_requests_total", { upstream: "fivehundred" }) === 40 ? x : undefined;
    }, 5000, 200);
    assert.ok(s);
    const bad = `127.0.0.1:${errorPort}`;
    const tries = value(s, "dyups_peer_requests_total", { upstream: "fivehundred", peer: bad });
    assert.ok(tries > 0);
    assert.equal(value(s, "dyups_peer_responses_total", { upstream: "fivehundred", peer: bad, code: "5xx" }), tries);
    assert.equal(value(s, "dyups_peer_failures_total", { upstream: "fivehundred", peer: bad, type: "read" }), undefined);
    assert.equal(value(s, "dyups_upstream_retries_total", { upstream: "fivehundred" }), tries);
    assert.equal(value(s, "dyups_upstream_responses_total", { upstream: "fivehundred", code: "2xx" }), 40);
  });

  test("a dead peer under the default max_fails: passive health takes it out, and the metrics say so", async () => {
    const [b1] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/passive", `server 127.0.0.1:${b1}; server 127.0.0.1:${deadPort};`)).status, 200);
    await send("passive", 10, 1);
    const dead = `127.0.0.1:${deadPort}`;
    const s = await eventually(async () => {
      const x = await scrape();
      return value(x, "dyups_upstream_requests_total", { upstream: "passive" }) === 10 ? x : undefined;
    }, 5000, 200);
    assert.ok(s);
    assert.equal(value(s, "dyups_peer_passive_failed", { upstream: "passive", peer: dead }), 1);
    assert.equal(value(s, "dyups_peer_up", { upstream: "passive", peer: dead }), 0);
    assert.equal(value(s, "dyups_peer_up", { upstream: "passive", peer: `127.0.0.1:${b1}` }), 1);
    assert.equal(value(s, "dyups_upstream_peers_up", { upstream: "passive" }), 1);
    assert.ok(value(s, "dyups_peer_failures_total", { upstream: "passive", peer: dead, type: "connect" }) >= 1);
  });

  test("a deleted upstream's series disappear, and a re-created one counts from zero", async () => {
    const [b1] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/ephemeral", `server 127.0.0.1:${b1};`)).status, 200);
    await send("ephemeral", 20);
    assert.ok(await eventually(async () => value(await scrape(), "dyups_upstream_requests_total", { upstream: "ephemeral" }) === 20, 5000, 200));
    assert.equal((await ng.del("/upstream/ephemeral")).status, 200);
    const after = await ng.get("/metrics");
    assert.doesNotMatch(after.body, /upstream="ephemeral"/);
    // each worker deletes the counters it wrote at its next publication (about a second)
    await sleep(1500);
    assert.equal((await ng.post("/upstream/ephemeral", `server 127.0.0.1:${b1};`)).status, 200);
    const s = await scrape();
    assert.equal(value(s, "dyups_upstream_requests_total", { upstream: "ephemeral" }), 0);
    assert.equal(value(s, "dyups_peer_requests_total", { upstream: "ephemeral", peer: `127.0.0.1:${b1}` }), 0);
  });

  test("node figures: upstreams, versions per worker, writes by result, shm", async () => {
    const before = await scrape();
    const w400 = value(before, "dyups_writes_total", { code: "400" });
    assert.equal((await ng.post("/upstream/bad", "server 127.0.0.1:1 bogus=1;")).status, 400);
    assert.equal((await ng.del("/upstream/neverwas")).status, 404);
    const s = await scrape();
    assert.equal(value(s, "dyups_writes_total", { code: "400" }), w400 + 1);
    assert.ok(value(s, "dyups_writes_total", { code: "404" }) >= 1);
    assert.ok(value(s, "dyups_writes_total", { code: "200" }) >= 4);
    const status = JSON.parse((await ng.get("/status")).body);
    assert.equal(value(s, "dyups_upstreams"), status.upstreams);
    assert.equal(value(s, "dyups_config_version"), status.version);
    for (const w of ["0", "1"]) {
      assert.ok(value(s, "dyups_worker_applied_version", { worker: w }) <= status.version);
      assert.ok(value(s, "dyups_worker_lua_memory_bytes", { worker: w }) > 0);
    }
    assert.equal(value(s, "dyups_shm_capacity_bytes", { dict: "dyups" }), 32 * 1024 * 1024);
    assert.equal(value(s, "dyups_shm_capacity_bytes", { dict: "dyups_metrics" }), 32 * 1024 * 1024);
    assert.ok(value(s, "dyups_shm_free_bytes", { dict: "dyups_metrics" }) > 0);
    assert.equal(value(s, "dyups_metrics_dropped_total"), 0);
    assert.equal(value(s, "dyups_info", { version: status.dyups_version }), 1);
    assert.ok(value(s, "dyups_metrics_scrape_duration_seconds") >= 0);
  });

  test("promtool check metrics accepts the output", async () => {
    const text = (await ng.get("/metrics")).body;
    const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    assert.equal(r.error, undefined, String(r.error));
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
    assert.equal((r.stdout + r.stderr).trim(), "");
  });

  test("a real Prometheus scrapes the node every second and answers the per-peer request rate", async () => {
    const [b1, b2] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/prom", `server 127.0.0.1:${b1}; server 127.0.0.1:${b2};`)).status, 200);
    const [promPort] = await freePorts(1);
    const dir = mkdtempSync(path.join(tmpdir(), "dyups-prom-"));
    writeFileSync(path.join(dir, "prometheus.yml"), `global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: dyups
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:${ng.apiPort}"]
`);
    const prom = spawn("prometheus", [`--config.file=${dir}/prometheus.yml`, `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${promPort}`, "--log.level=warn"], { stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    prom.stdout.on("data", (d) => (log += d));
    prom.stderr.on("data", (d) => (log += d));
    const exited = new Promise((r) => prom.once("exit", r));
    let traffic = true;
    const load = (async () => { while (traffic) { await ng.proxy("prom"); await sleep(5); } })();
    try {
      const query = async (q) => {
        const r = await request(promPort, "GET", `/api/v1/query?query=${encodeURIComponent(q)}`, { allowError: true, timeout: 2000 });
        return r.status === 200 ? JSON.parse(r.body).data.result : undefined;
      };
      const rates = await eventually(async () => {
        const res = await query('rate(dyups_peer_requests_total{upstream="prom"}[5s])');
        return res && res.length === 2 && res.every((x) => Number(x.value[1]) > 0) ? res : undefined;
      }, 20000, 500);
      assert.ok(rates, `no per-peer rate from Prometheus within 20 s:\n${log}`);
      assert.deepEqual(rates.map((x) => x.metric.peer).sort(), [`127.0.0.1:${b1}`, `127.0.0.1:${b2}`].sort());
      const up = await query('up{job="dyups"}');
      assert.equal(up[0].value[1], "1");
    } finally {
      traffic = false;
      await load;
      prom.kill("SIGTERM");
      const t = setTimeout(() => prom.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the README's scrape job and alert rules pass promtool", () => {
    const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Metrics and the status page"), readme.indexOf("## Hostnames and DNS"));
    const blocks = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.equal(blocks.length, 2);
    const dir = mkdtempSync(path.join(tmpdir(), "dyups-promtool-"));
    try {
      const token = path.join(dir, "token");
      writeFileSync(token, "x\n");
      writeFileSync(path.join(dir, "prometheus.yml"), blocks[0].replace("/etc/prometheus/dyups-read-token", token));
      writeFileSync(path.join(dir, "rules.yml"), blocks[1]);
      for (const args of [["check", "config", "--syntax-only", path.join(dir, "prometheus.yml")], ["check", "rules", path.join(dir, "rules.yml")]]) {
        const r = spawnSync("promtool", args, { encoding: "utf8" });
        assert.equal(r.status, 0, `promtool ${args.join(" ")}: ${r.stdout}${r.stderr}`);
      }
    } finally { rmSync(dir, { recursive: true, force: true }); }
  });
});

describe("GET /metrics in cluster mode", () => {
  let etcd, node;
  before(async () => {
    etcd = await startEtcd({ members: 1 });
    node = await startNode({ etcd: etcd.endpoints, workers: 1 });
  });
  after(async () => {
    if (node) { await node.stop(); node.remove(); }
    if (etcd) await etcd.stop();
  });

  test("the watcher's state and revisions, and the counters of an upstream written through etcd", async () => {
    const [b1] = node.backendPorts;
    assert.equal((await node.post("/upstream/viaetcd", `server 127.0.0.1:${b1};`)).status, 200);
    for (let i = 0; i < 5; i++) assert.equal((await node.proxy("viaetcd")).status, 200);
    const s = await eventually(async () => {
      const r = await node.get("/metrics");
      const x = parseMetrics(r.body);
      return value(x, "dyups_cluster_state", { state: "watching" }) === 1 && value(x, "dyups_upstream_requests_total", { upstream: "viaetcd" }) === 5 ? x : undefined;
    }, 10000, 200);
    assert.ok(s, "no watching state or no counts within 10 s");
    const applied = value(s, "dyups_cluster_applied_revision");
    assert.ok(applied > 0);
    assert.ok(value(s, "dyups_cluster_etcd_revision") >= applied);
    assert.equal(value(s, "dyups_cluster_lag_revisions"), value(s, "dyups_cluster_etcd_revision") - applied);
    assert.equal(value(s, "dyups_cluster_rejected_upstreams"), 0);
    assert.equal(value(s, "dyups_writes_total", { code: "200" }), 1);
    const text = (await node.get("/metrics")).body;
    const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
  });
});
