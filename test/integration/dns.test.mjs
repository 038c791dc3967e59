// Host names with `resolve` against a real DNS server (dnsmasq on 127.0.0.1, its own port, answers from a
// hosts file it re-reads on SIGHUP, TTL 1 s). Backends are nginx servers on 127.0.0.2..127.0.0.9 (one port)
// plus Node servers for the slow/in-flight case. Every process started here is stopped in after().
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import http from "node:http";
import { startNginx, freePorts, sleep, eventually } from "./harness.mjs";

const DNSMASQ = "/usr/sbin/dnsmasq";
const SYNC = 0.1; // the default sync_interval: one timer tick

/** dnsmasq on 127.0.0.1:port, answering from a hosts file (TTL 1), NXDOMAIN for other *.test names. */
async function startDns(hostsText, extra = []) {
  const dir = mkdtempSync(path.join(tmpdir(), "dyups-dns-"));
  chmodSync(dir, 0o755); // dnsmasq drops to nobody and re-reads the hosts file on SIGHUP
  const hosts = path.join(dir, "hosts");
  const log = path.join(dir, "log");
  writeFileSync(hosts, hostsText, { mode: 0o644 });
  const [port] = await freePorts(1);
  const args = [
    "--no-daemon", `--port=${port}`, "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
    `--addn-hosts=${hosts}`, "--local-ttl=1", "--local=/test/", "--log-queries", `--log-facility=${log}`,
    "--pid-file=", "-C", "/dev/null", ...extra,
  ];
  const dns = {
    port, dir, proc: undefined, exited: undefined,
    async start() {
      const proc = spawn(DNSMASQ, args, { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      proc.stdout.on("data", (d) => (out += d));
      proc.stderr.on("data", (d) => (out += d));
      dns.proc = proc;
      dns.exited = new Promise((r) => proc.once("exit", r));
      const ok = await eventually(() => existsSync(log) && readFileSync(log, "utf8").includes("read " + hosts), 5000);
      if (!ok) throw new Error(`dnsmasq did not start: ${out}`);
    },
    setHosts(text) {
      writeFileSync(hosts, text);
      dns.proc.kill("SIGHUP");
    },
    /** how many A queries for `name` the log shows so far */
    queries(name) {
      const text = existsSync(log) ? readFileSync(log, "utf8") : "";
      return text.split("\n").filter((l) => l.includes(`query[A] ${name} from`)).length;
    },
    async stop() {
      if (dns.proc && dns.proc.exitCode === null && dns.proc.signalCode === null) {
        dns.proc.kill("SIGTERM");
        await dns.exited;
      }
      dns.proc = undefined;
    },
    async remove() {
      await dns.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await dns.start();
  return dns;
}

/** A Node HTTP server on host:port that answers `body` after `delay` ms. */
function nodeServer(host, port, body, delay) {
  const srv = http.createServer((req, res) => {
    setTimeout(() => { res.writeHead(200, { "content-type": "text/plain" }); res.end(body); }, delay);
  });
  return new Promise((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(port, host, () => resolve(srv));
  });
}

/** `conc` clients sending requests to upstream `name` back to back until stop(). */
function clientLoop(ng, name, conc = 2) {
  let stopped = false;
  const results = [];
  const runners = Array.from({ length: conc }, async () => {
    while (!stopped) {
      const t = Date.now();
      const r = await ng.proxy(name, "/", { allowError: true, timeout: 5000 });
      results.push({ t, status: r.status, body: r.body });
    }
  });
  return {
    results,
    /** the bodies of the last n responses */
    last: (n) => results.slice(-n).map((r) => r.body),
    async stop() { stopped = true; await Promise.all(runners); return results; },
  };
}

const failures = (results) => results.filter((r) => r.status !== 200);

let dns, ng, bp, sp;
const servers = [];
const hostsFile = (m) => Object.entries(m).flatMap(([name, ips]) => ips.map((ip) => `${ip} ${name}`)).join("\n") + "\n";
let table;
function setNames(changes) {
  table = { ...table, ...changes };
  for (const k of Object.keys(table)) if (table[k] === undefined) delete table[k];
  dns.setHosts(hostsFile(table));
}

async function status() {
  const r = await ng.get("/status");
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body).dns;
}
const entry = (st, name) => (Array.isArray(st.names) ? st.names : []).find((e) => e.name === name);

before(async () => {
  [bp, sp] = await freePorts(2);
  table = {
    "web.test": ["127.0.0.2"],
    "other.test": ["127.0.0.6"],
    "fixed.test": ["127.0.0.5"],
    "slow.test": ["127.0.0.7"],
    "b9.test": ["127.0.0.9"],
    "meta.test": ["169.254.169.254"],
    "rebind.test": ["127.0.0.2"],
  };
  dns = await startDns(hostsFile(table), [`--srv-host=_http._tcp.svc.test,b9.test,${bp},0,10`]);
  servers.push(await nodeServer("127.0.0.7", sp, "slow", 2000));
  servers.push(await nodeServer("127.0.0.8", sp, "fast", 0));
  const backends = [2, 3, 4, 5, 6, 9].map((i) => `server { listen 127.0.0.${i}:${bp}; location / { return 200 "b${i}"; } }`).join("\n");
  ng = await startNginx({
    workers: 4,
    backends: 0,
    init: { resolver: [`127.0.0.1:${dns.port}`], dns_min_ttl: 1, dns_max_ttl: 2, dns_stale_ttl: 4, dns_timeout: 0.5 },
    httpExtra: backends,
    upstreamConf: `upstream fixed { server fixed.test:${bp}; }\nupstream boot { server web.test:${bp} resolve; }\n`,
  });
});

after(async () => {
  await ng?.stop();
  await dns?.remove();
  for (const s of servers) await new Promise((r) => s.close(r));
});

test("names in upstream_conf start unresolved and the DNS timer resolves them (with and without resolve)", async () => {
  const fixed = await eventually(async () => (await ng.proxy("fixed")).body === "b5", 5000);
  assert.ok(fixed, "fixed.test was not resolved by the timer");
  const boot = await eventually(async () => (await ng.proxy("boot")).body === "b2", 5000);
  assert.ok(boot, "web.test (resolve) was not resolved by the timer");
});

test("adding, changing and removing a name's addresses moves traffic within TTL + one tick, 0 failed requests", async () => {
  const r = await ng.post("/upstream/web", `server web.test:${bp} resolve;`);
  assert.equal(r.status, 200, r.body);
  assert.equal((await ng.proxy("web")).body, "b2");
  const loop = clientLoop(ng, "web", 2);
  // the bound: TTL (1 s) + one tick, plus the client's own latency and the DNS round trip
  const bound = 1000 + SYNC * 1000 + 1000;
  const moved = async (want) => {
    const t0 = Date.now();
    const ok = await eventually(() => {
      const last = loop.last(20);
      return last.length === 20 && want.every((b) => last.includes(b)) && last.every((b) => want.includes(b));
    }, 8000, 20);
    return { ok, ms: Date.now() - t0 };
  };
  try {
    await sleep(300);
    setNames({ "web.test": ["127.0.0.2", "127.0.0.3"] }); // add
    const a = await moved(["b2", "b3"]);
    assert.ok(a.ok, "traffic did not reach the added address");
    assert.ok(a.ms <= bound, `added address took ${a.ms} ms`);
    setNames({ "web.test": ["127.0.0.4"] }); // change
    const c = await moved(["b4"]);
    assert.ok(c.ok, "traffic did not move to the changed address");
    assert.ok(c.ms <= bound, `changed address took ${c.ms} ms`);
    setNames({ "web.test": ["127.0.0.3", "127.0.0.4"] });
    assert.ok((await moved(["b3", "b4"])).ok);
    setNames({ "web.test": ["127.0.0.4"] }); // remove one
    const d = await moved(["b4"]);
    assert.ok(d.ok, "traffic still reaches the removed address");
    assert.ok(d.ms <= bound, `removed address took ${d.ms} ms`);
  } finally {
    const res = await loop.stop();
    assert.deepEqual(failures(res), [], "failed requests during the changes");
    assert.ok(res.length > 100, `only ${res.length} requests`);
  }
  // /status shows the name with its addresses, TTL and next refresh; /detail the resolved address
  const e = entry(await status(), "web.test");
  assert.ok(e, "web.test missing from /status dns");
  assert.deepEqual(e.addresses, ["127.0.0.4"]);
  assert.equal(e.ttl, 1);
  assert.ok(e.last_resolved > 0 && e.next_refresh >= e.last_resolved, JSON.stringify(e));
  assert.ok(e.upstreams.includes("web") && e.upstreams.includes("boot"), JSON.stringify(e));
  const detail = await ng.get("/detail");
  assert.match(detail.body, new RegExp(`127\\.0\\.0\\.4:${bp}`));
});

test("a name without resolve keeps the address it was resolved to", async () => {
  setNames({ "fixed.test": ["127.0.0.6"] });
  await sleep(2500);
  for (let i = 0; i < 10; i++) assert.equal((await ng.proxy("fixed")).body, "b5");
  setNames({ "fixed.test": ["127.0.0.5"] });
});

test("only one worker (of 4) queries a name: one query per refresh period, also after the owner is SIGKILLed", async (t) => {
  const window = async (ms) => {
    const q0 = dns.queries("web.test");
    await sleep(ms);
    return dns.queries("web.test") - q0;
  };
  // TTL 1 s clamped to [1, 2], refreshed up to 10% early, on 0.1 s ticks: one query every 0.9..1.1 s
  const n1 = await window(5000);
  t.diagnostic(`A queries for web.test in 5 s: ${n1}`);
  assert.ok(n1 >= 3 && n1 <= 7, `${n1} queries in 5 s (4 workers each querying would be ~20)`);
  const owner = (await status()).owner;
  assert.ok(ng.workerPids().includes(owner), `owner ${owner} is not a worker`);
  process.kill(owner, "SIGKILL");
  // the dead owner's claim expires within 2 s, another worker (or the respawned one) takes over
  const moved = await eventually(async () => {
    const o = (await status()).owner;
    return o && o !== owner && ng.workerPids().includes(o) ? o : undefined;
  }, 6000, 100);
  assert.ok(moved, "nobody took over resolving");
  const n2 = await window(5000);
  t.diagnostic(`after SIGKILL of owner ${owner}: new owner ${moved}, A queries in 5 s: ${n2}`);
  assert.ok(n2 >= 3 && n2 <= 7, `${n2} queries in 5 s after the takeover`);
  // traffic still follows DNS after the takeover
  setNames({ "web.test": ["127.0.0.3"] });
  assert.ok(await eventually(async () => (await ng.proxy("web")).body === "b3", 4000), "no refresh after the takeover");
});

test("the DNS server stopped: traffic keeps flowing to the last good addresses (stale), then recovers", async () => {
  const loop = clientLoop(ng, "web", 2);
  try {
    await dns.stop();
    await sleep(2500); // more than two TTLs: every refresh fails
    const e = entry(await status(), "web.test");
    assert.ok(e.last_error, JSON.stringify(e));
    assert.ok(e.stale_since > 0, JSON.stringify(e));
    assert.deepEqual(e.addresses, ["127.0.0.3"]);
    await dns.start();
    await sleep(1500);
  } finally {
    const res = await loop.stop();
    assert.deepEqual(failures(res), [], "failed requests while DNS was down");
    assert.ok(res.every((r) => r.body === "b3"), "traffic left the last good address");
  }
  const ok = await eventually(async () => {
    const e = entry(await status(), "web.test");
    return e && e.last_error === undefined && e.stale_since === undefined;
  }, 4000);
  assert.ok(ok, "the name did not recover after the DNS server came back");
  const log = ng.errorLog();
  assert.match(log, /cannot resolve web\.test: .*serving the last good addresses/);
  // logged once per state change, not per retry
  assert.equal((log.match(/cannot resolve web\.test/g) || []).length, 1, "the failure was logged more than once");
  assert.match(log, /web\.test resolves again/);
});

test("NXDOMAIN for one server leaves the other servers serving; its stale addresses expire after dns_stale_ttl", async () => {
  const r = await ng.post("/upstream/mix", `server web.test:${bp} resolve; server other.test:${bp} resolve;`);
  assert.equal(r.status, 200, r.body);
  const web = table["web.test"].map((ip) => "b" + ip.split(".")[3]); // whatever the earlier tests left
  const seen = new Set();
  for (let i = 0; i < 20; i++) seen.add((await ng.proxy("mix")).body);
  assert.deepEqual([...seen].sort(), [...web, "b6"].sort());
  const loop = clientLoop(ng, "mix", 2);
  let res;
  try {
    setNames({ "other.test": undefined }); // NXDOMAIN from now on
    const nx = await eventually(async () => /nxdomain/.test(entry(await status(), "other.test")?.last_error ?? ""), 4000);
    assert.ok(nx, "other.test never failed with nxdomain");
    const expired = await eventually(async () => entry(await status(), "other.test")?.stale_expired === true, 8000, 100);
    assert.ok(expired, "the stale addresses of other.test never expired");
    await sleep(500);
  } finally {
    res = await loop.stop();
  }
  assert.deepEqual(failures(res), [], "failed requests with one server NXDOMAIN");
  assert.ok(res.slice(-20).every((x) => web.includes(x.body)), "traffic still goes to the expired server");
  assert.ok(res.some((x) => x.body === "b6"), "the stale addresses were not served before expiry");
  setNames({ "other.test": ["127.0.0.6"] });
  assert.ok(await eventually(async () => (await ng.proxy("mix")).body === "b6", 5000), "other.test did not come back");
});

test("requests in flight across an address change finish on the old peer", async () => {
  const r = await ng.post("/upstream/slow", `server slow.test:${sp} resolve;`);
  assert.equal(r.status, 200, r.body);
  const t0 = Date.now();
  const inflight = Array.from({ length: 6 }, () => ng.proxy("slow", "/", { timeout: 10000 }).then((x) => ({ ...x, done: Date.now() - t0 })));
  await sleep(100);
  setNames({ "slow.test": ["127.0.0.8"] });
  // probes give up after 300 ms: a probe that still reaches the slow peer would itself take 2 s
  const moved = await eventually(async () => (await ng.proxy("slow", "/", { timeout: 300, allowError: true })).body === "fast", 4000, 20);
  const movedAt = Date.now() - t0;
  assert.ok(moved, "traffic did not move to the new address");
  const done = await Promise.all(inflight);
  for (const x of done) {
    assert.equal(x.status, 200);
    assert.equal(x.body, "slow");
  }
  assert.ok(movedAt < Math.min(...done.map((x) => x.done)), `the change (${movedAt} ms) came after the slow requests ended`);
});

test("service= resolves SRV records: port and target from the records", async () => {
  const r = await ng.post("/upstream/srv", `server svc.test service=http resolve;`);
  assert.equal(r.status, 200, r.body);
  // resolved when the body is applied (content phase), like A records
  assert.equal((await ng.proxy("srv")).body, "b9");
  // and re-resolved by the timer
  const ok = await eventually(async () => entry(await status(), "_http._tcp.svc.test")?.last_resolved > 0, 5000);
  assert.ok(ok, "the SRV name was not re-resolved by the timer");
  const e = entry(await status(), "_http._tcp.svc.test");
  assert.ok(e, "SRV query missing from /status");
  assert.equal(e.type, "SRV");
  assert.deepEqual(e.addresses, [`127.0.0.9:${bp} weight=10`]);
});

test("link-local and metadata answers are refused (allowed targets): at the POST, and dropped at re-resolution", async () => {
  // no request is ever proxied while a name points at 169.254.169.254: only the interface is asked
  const r = await ng.post("/upstream/meta", `server meta.test:${bp} resolve;`);
  assert.equal(r.status, 400, r.body);
  assert.match(r.body, /^add server failed: server 1 \(meta\.test:\d+\): target 169\.254\.169\.254 is a link-local/);
  assert.equal((await ng.get("/upstream/meta")).status, 404);
  assert.equal((await ng.post("/upstream/rebind", `server rebind.test:${bp} resolve;`)).status, 200);
  assert.equal((await ng.get("/upstream/rebind")).body, `server 127.0.0.2:${bp}\n`);
  setNames({ "rebind.test": ["127.0.0.3", "169.254.169.254"] });
  const resolved = async () => JSON.parse((await ng.get("/upstream/rebind?format=json")).body).servers[0].resolved;
  const moved = await eventually(async () => (await resolved()).includes(`127.0.0.3:${bp}`), 5000);
  assert.ok(moved, `the new answer was not applied: ${await resolved()}`);
  assert.deepEqual(await resolved(), [`127.0.0.3:${bp}`]);
  assert.match(ng.errorLog(), /upstream rebind server 1: refused an address of the answer: target 169\.254\.169\.254/);
  setNames({ "rebind.test": ["127.0.0.3"] });
  assert.equal((await ng.proxy("rebind")).body, "b3");
  assert.match(ng.errorLog(), /dyups audit: op=update upstream=rebind rev_before=\d+ rev_after=\d+ source=dns/);
});
