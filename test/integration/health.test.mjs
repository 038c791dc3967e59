// Active health checks (issue 15) against real backends: a plain nginx the test starts and stops (200, 500,
// TLS, and one it stops and restarts), Node listeners (accepts and never answers, MySQL greeting, AJP CPONG).
// One product nginx with 4 workers for every test: default_down, fall/rise timing, 0 client errors with a
// dead peer known down, state kept across a replace, delete stops the probes, one prober for the node and
// every worker routing by the same state, SIGKILL of the prober, the check_status page byte for byte.
// Intervals are 200-300 ms so the suite stays short; waits run in parallel where they can.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import net from "node:net";
import { startNginx, freePorts, sleep, eventually, NGINX, request } from "./harness.mjs";

/** A plain nginx (no Lua) with `servers` text; access log "$msec $server_port "$request" $status". */
async function plainNginx(dir, servers) {
  mkdirSync(path.join(dir, "logs"), { recursive: true });
  const conf = `daemon off; master_process on; worker_processes 1; pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 256; }
http {
  log_format t '$msec $server_port "$request" $status';
  access_log ${dir}/logs/access.log t;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  ${servers}
}`;
  writeFileSync(path.join(dir, "nginx.conf"), conf);
  const proc = spawn(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf")], { stdio: "ignore" });
  const exited = new Promise((r) => proc.once("exit", r));
  const ports = [...servers.matchAll(/listen 127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]));
  const up = await eventually(async () => {
    for (const p of ports) if (!(await connects(p))) return false;
    return true;
  }, 5000, 20);
  if (!up) throw new Error(`backend nginx did not start: ${existsSync(path.join(dir, "logs/error.log")) ? readFileSync(path.join(dir, "logs/error.log"), "utf8") : ""}`);
  return {
    stop: async () => { proc.kill("SIGTERM"); await exited; },
    /** requests in the access log whose line matches re */
    count: (re) => (existsSync(path.join(dir, "logs/access.log")) ? readFileSync(path.join(dir, "logs/access.log"), "utf8").split("\n").filter((l) => re.test(l)).length : 0),
  };
}

function connects(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

/** A Node TCP listener: onConn(socket) decides what it does. */
async function listener(port, onConn) {
  const sockets = new Set();
  const s = net.createServer((c) => { sockets.add(c); c.on("close", () => sockets.delete(c)); c.on("error", () => {}); onConn(c); });
  await new Promise((r) => s.listen(port, "127.0.0.1", r));
  return { close: () => new Promise((r) => { for (const c of sockets) c.destroy(); s.close(r); }) };
}

let ng, dir, web, flap, flapServers;
let P = {};
const nodeListeners = [];

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "dyups-hc-"));
  const [ok, err500, tls, flapPort, silent, mysql, mysqlBad, ajp, closed, ok2] = await freePorts(10);
  P = { ok, err500, tls, flap: flapPort, silent, mysql, mysqlBad, ajp, closed, ok2 };
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-subj", "/CN=localhost", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "ignore" });
  const [webDir, flapDir] = [path.join(dir, "web"), path.join(dir, "flap")];
  web = await plainNginx(webDir, `
  server { listen 127.0.0.1:${ok}; location / { return 200 "${ok}"; } }
  server { listen 127.0.0.1:${ok2}; location / { return 200 "${ok2}"; } }
  server { listen 127.0.0.1:${err500}; location / { return 500; } }
  server { listen 127.0.0.1:${tls} ssl; ssl_certificate ${dir}/cert.pem; ssl_certificate_key ${dir}/key.pem; location / { return 200; } }`);
  flapServers = `server { listen 127.0.0.1:${flapPort}; location / { return 200 "${flapPort}"; } }`;
  flap = await plainNginx(flapDir, flapServers);
  flap.dir = flapDir;
  nodeListeners.push(await listener(silent, () => {}));
  const greeting = (seq) => Buffer.concat([Buffer.from([10, 0, 0, seq]), Buffer.from("\x0a5.7.0\0abcdefgh")]);
  nodeListeners.push(await listener(mysql, (c) => c.write(greeting(0))));
  nodeListeners.push(await listener(mysqlBad, (c) => c.write(greeting(1))));
  nodeListeners.push(await listener(ajp, (c) => c.on("data", (d) => { if (d.equals(Buffer.from([0x12, 0x34, 0, 1, 0x0a]))) c.write(Buffer.from([0x41, 0x42, 0, 1, 9])); })));
  ng = await startNginx({ workers: 4, backends: 0, serverExtra: `location /hc { content_by_lua_block { require("dyups").check_status() } }
    location /hc_csv { content_by_lua_block { require("dyups").check_status("csv") } }
    location /health_api { content_by_lua_block { ngx.print(require("cjson").encode({ h = require("dyups").health(ngx.var.arg_name) or "unknown" })) } }` });
});

after(async () => {
  await ng?.stop();
  await web?.stop();
  await flap?.stop();
  for (const l of nodeListeners) await l.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** rows of the csv status page: { "name addr": { status, rise, fall, type, port, index } } */
async function rows(query = "") {
  const r = await ng.get(`/check_status?format=csv${query}`);
  const out = {};
  for (const line of r.body.split("\n").filter(Boolean)) {
    const [index, upstream, name, status, rise, fall, type, port] = line.split(",");
    out[`${upstream} ${name}`] = { index: Number(index), status, rise: Number(rise), fall: Number(fall), type, port: Number(port) };
  }
  return out;
}
const row = async (up, port) => (await rows())[`${up} 127.0.0.1:${port}`];
const until = (fn, ms = 4000) => eventually(fn, ms, 25);

describe("probes per type", () => {
  test("tcp, http (status classes), ssl_hello, mysql and ajp against real listeners", async () => {
    const cases = [
      ["t-tcp-ok", `server 127.0.0.1:${P.ok}; check type=tcp`, "up"],
      ["t-tcp-closed", `server 127.0.0.1:${P.closed}; check type=tcp`, "down"],
      ["t-http-ok", `server 127.0.0.1:${P.ok}; check type=http`, "up"],
      ["t-http-500", `server 127.0.0.1:${P.err500}; check type=http`, "down"],
      ["t-http-5xx", `server 127.0.0.1:${P.err500}; check_http_expect_alive http_5xx; check type=http`, "up"],
      ["t-http-silent", `server 127.0.0.1:${P.silent}; check type=http`, "down"],
      ["t-ssl-tls", `server 127.0.0.1:${P.tls}; check type=ssl_hello`, "up"],
      ["t-ssl-plain", `server 127.0.0.1:${P.ok}; check type=ssl_hello`, "down"],
      ["t-mysql", `server 127.0.0.1:${P.mysql}; check type=mysql`, "up"],
      ["t-mysql-seq1", `server 127.0.0.1:${P.mysqlBad}; check type=mysql`, "down"],
      ["t-mysql-http", `server 127.0.0.1:${P.ok}; check type=mysql`, "down"],
      ["t-ajp", `server 127.0.0.1:${P.ajp}; check type=ajp`, "up"],
      ["t-ajp-http", `server 127.0.0.1:${P.ok}; check type=ajp`, "down"],
      ["t-port", `server 127.0.0.1:${P.closed}; check type=http port=${P.ok}`, "up"],
    ];
    for (const [name, body] of cases) {
      // default_down=false: "down" can only come from failed probes (fall=1), "up" from rise=1 successes
      const b = body.replace(/check type=(\S+)/, "check interval=300 rise=1 fall=1 timeout=250 default_down=false type=$1");
      const r = await ng.post(`/upstream/${name}`, `${b};`);
      assert.equal(r.status, 200, `${name}: ${r.body}`);
    }
    const want = Object.fromEntries(cases.map(([n, , s]) => [n, s]));
    const seen = await until(async () => {
      const all = await rows();
      const got = Object.fromEntries(Object.entries(all).filter(([k]) => k.startsWith("t-")).map(([k, v]) => [k.split(" ")[0], v]));
      const done = cases.every(([n, , s]) => got[n] && got[n].status === s && (s === "up" ? got[n].rise >= 1 : got[n].fall >= 1));
      return done ? got : false;
    }, 5000);
    assert.ok(seen, `states never matched ${JSON.stringify(want)}: ${JSON.stringify(await rows())}`);
    for (const [name] of cases) assert.equal((await ng.del(`/upstream/${name}`)).status, 200);
  });
});

describe("state over time", () => {
  test("default_down=true answers 502 until `rise` successes; default_down=false routes at once", async () => {
    const [a, b] = await Promise.all([
      ng.post("/upstream/dd-true", `server 127.0.0.1:${P.ok}; check interval=300 rise=2 fall=2 timeout=200 type=http;`),
      ng.post("/upstream/dd-false", `server 127.0.0.1:${P.ok2}; check interval=300 rise=2 fall=2 timeout=200 type=http default_down=false;`),
    ]);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    const t0 = Date.now();
    assert.equal((await ng.proxy("dd-true")).status, 502);
    assert.equal((await ng.proxy("dd-false")).status, 200);
    // up at the 2nd success: about one interval after the POST (the first probe runs at once)
    const up = await until(async () => (await ng.proxy("dd-true")).status === 200);
    const took = Date.now() - t0;
    assert.ok(up, "never came up");
    assert.ok(took >= 200 && took < 1500, `up after ${took} ms`);
    assert.match(ng.errorLog(), new RegExp(`enable check peer: 127\\.0\\.0\\.1:${P.ok} \\(http, upstream dd-true\\): up after 2 successes`));
    await Promise.all([ng.del("/upstream/dd-true"), ng.del("/upstream/dd-false")]);
  });

  test("down at the `fall`-th failure, up at the `rise`-th success, logged once per change", async () => {
    assert.equal((await ng.post("/upstream/fr", `server 127.0.0.1:${P.flap}; check interval=200 rise=2 fall=3 timeout=150 type=http default_down=false;`)).status, 200);
    assert.ok(await until(async () => (await row("fr", P.flap))?.rise >= 2), "never probed");
    await flap.stop();
    const t0 = Date.now();
    assert.ok(await until(async () => (await row("fr", P.flap)).status === "down"), "never went down");
    const down = Date.now() - t0;
    // the 3rd failed probe: about 2 intervals after the first one (which comes within one interval)
    assert.ok(down >= 350 && down < 1500, `down after ${down} ms`);
    const r = await row("fr", P.flap);
    assert.equal(r.fall, 3);
    assert.equal(r.rise, 0);
    assert.equal((await ng.proxy("fr")).status, 502);
    flap = await plainNginx(flap.dir, flapServers).then((f) => Object.assign(f, { dir: flap.dir }));
    const t1 = Date.now();
    assert.ok(await until(async () => (await ng.proxy("fr")).status === 200), "never came back");
    const upAfter = Date.now() - t1;
    assert.ok(upAfter < 1500, `up after ${upAfter} ms`);
    await sleep(600);
    const log = ng.errorLog();
    const count = (re) => log.split("\n").filter((l) => re.test(l)).length;
    assert.equal(count(new RegExp(`disable check peer: 127\\.0\\.0\\.1:${P.flap} \\(http, upstream fr\\): down after 3 failures: connect\\(\\) failed: connection refused`)), 1);
    assert.equal(count(new RegExp(`enable check peer: 127\\.0\\.0\\.1:${P.flap} .*up after 2 successes`)), 1);
    await ng.del("/upstream/fr");
  });
});

describe("routing", () => {
  test("0 client errors while a healthy peer exists and a dead or silent peer is known down (passive checks off)", async () => {
    const body = `server 127.0.0.1:${P.ok} max_fails=0; server 127.0.0.1:${P.silent} max_fails=0; server 127.0.0.1:${P.closed} max_fails=0;
      check interval=200 rise=1 fall=1 timeout=150 type=http default_down=false;`;
    assert.equal((await ng.post("/upstream/zero", body)).status, 200);
    assert.ok(await until(async () => { const r = await rows(); return r[`zero 127.0.0.1:${P.silent}`]?.status === "down" && r[`zero 127.0.0.1:${P.closed}`]?.status === "down"; }), "the bad peers never went down");
    await sleep(100); // every worker reads the new health generation at its next request
    const results = await Promise.all(Array.from({ length: 120 }, () => ng.proxy("zero", "/", { timeout: 2000, allowError: true })));
    const bad = results.filter((r) => r.status !== 200 || r.body !== String(P.ok));
    assert.equal(bad.length, 0, `${bad.length} of 120 failed: ${JSON.stringify(bad.slice(0, 3))}`);
    await ng.del("/upstream/zero");
  });

  test("4 workers: one worker probes, every worker routes by the same state", async () => {
    const s0 = JSON.parse((await ng.get("/status")).body);
    assert.equal(s0.workers.length, 4);
    const pids = new Set(s0.workers.map((w) => w.pid));
    assert.ok(pids.has(s0.health.owner), `owner ${s0.health.owner} is not a worker`);
    assert.equal((await ng.post("/upstream/w4", `server 127.0.0.1:${P.ok}; server 127.0.0.1:${P.err500};
      check interval=250 rise=1 fall=1 timeout=200 type=http default_down=false; check_http_send "GET /w4-probe HTTP/1.0\\r\\n\\r\\n";`)).status, 200);
    const before = web.count(/w4-probe/);
    await sleep(2000);
    const probes = web.count(/w4-probe/) - before;
    // 2 peers, 2 s, interval 250 ms: about 16 probes in all for the node (4 probing workers would make ~64)
    assert.ok(probes >= 10 && probes <= 20, `${probes} probes in 2 s`);
    // fresh connections reach every worker; each routes only to the healthy peer
    const workers = new Set();
    for (let i = 0; i < 80 && workers.size < 4; i++) {
      const r = await ng.proxy("w4");
      assert.equal(r.status, 200);
      assert.equal(r.body, String(P.ok));
      workers.add(r.headers["x-worker"]);
    }
    assert.equal(workers.size, 4, `reached workers ${[...workers]}`);
    await ng.del("/upstream/w4");
  });

  test("the prober SIGKILLed: another worker probes within the lease time", async () => {
    assert.equal((await ng.post("/upstream/kill", `server 127.0.0.1:${P.ok}; check interval=200 rise=1 fall=1 timeout=150 type=http; check_http_send "GET /kill-probe HTTP/1.0\\r\\n\\r\\n";`)).status, 200);
    assert.ok(await until(async () => web.count(/kill-probe/) >= 2), "no probes");
    const owner = JSON.parse((await ng.get("/status")).body).health.owner;
    process.kill(owner, "SIGKILL");
    const t0 = Date.now();
    await sleep(50);
    const at = web.count(/kill-probe/);
    assert.ok(await until(async () => web.count(/kill-probe/) >= at + 2, 3500), "probing never resumed");
    const resumed = Date.now() - t0;
    assert.ok(resumed < 3000, `resumed after ${resumed} ms`);
    const newOwner = await until(async () => { const o = JSON.parse((await ng.get("/status")).body).health.owner; return o && o !== owner ? o : false; });
    assert.ok(newOwner, "no new owner");
    assert.equal((await row("kill", P.ok)).status, "up");
    await ng.del("/upstream/kill");
  });
});

describe("beating the reference (its §6)", () => {
  test("an update racing a probe in flight never stops that peer's probes", async () => {
    // the module's array reallocation during a probe left the peer "up" forever (§6.5)
    const body = `server 127.0.0.1:${P.silent}; check interval=200 rise=1 fall=1 timeout=600 type=http default_down=false;`;
    assert.equal((await ng.post("/upstream/race", body)).status, 200);
    await sleep(100); // the first probe is waiting for the silent listener now
    for (let i = 0; i < 6; i++) assert.equal((await ng.post(`/upstream/race${i}`, `server 127.0.0.1:${P.ok}; check interval=5000 type=tcp;`)).status, 200);
    assert.equal((await ng.post("/upstream/race", body)).status, 200); // replaced while the probe is in flight
    assert.ok(await until(async () => (await row("race", P.silent))?.fall >= 2, 4000), JSON.stringify(await row("race", P.silent)));
    assert.equal((await row("race", P.silent)).status, "down");
    await Promise.all(["race", ...Array.from({ length: 6 }, (_, i) => `race${i}`)].map((n) => ng.del(`/upstream/${n}`)));
  });

  test("random respects the check (the module's random ignores it: §6.11)", async () => {
    assert.equal((await ng.post("/upstream/rnd", `random; server 127.0.0.1:${P.ok}; server 127.0.0.1:${P.err500};
      check interval=200 rise=1 fall=1 timeout=150 type=http default_down=false;`)).status, 200);
    assert.ok(await until(async () => (await row("rnd", P.err500))?.status === "down"), "the 500 peer never went down");
    await sleep(100);
    const results = await Promise.all(Array.from({ length: 60 }, () => ng.proxy("rnd")));
    assert.deepEqual([...new Set(results.map((r) => r.status))], [200]);
    await ng.del("/upstream/rnd");
  });

  test("Lua API health(name)", async () => {
    assert.equal((await ng.post("/upstream/api", `server 127.0.0.1:${P.ok}; server 127.0.0.1:${P.closed} backup; server 127.0.0.1:${P.ok2} down;
      check interval=200 rise=1 fall=1 timeout=150 type=tcp;`)).status, 200);
    assert.ok(await until(async () => (await row("api", P.closed))?.fall >= 1 && (await row("api", P.ok))?.rise >= 1));
    const h = JSON.parse((await ng.get("/health_api?name=API")).body).h;
    assert.equal(h.length, 2); // the server marked down is not checked
    assert.deepEqual(h.map((x) => [x.upstream, x.addr, x.status, x.type]), [["api", `127.0.0.1:${P.ok}`, "up", "tcp"], ["api", `127.0.0.1:${P.closed}`, "down", "tcp"]]);
    assert.match(h[1].last_error, /connection refused/);
    assert.ok(h[0].probes >= 1 && h[0].since > 0 && h[0].last_probe > 0);
    assert.equal(JSON.parse((await ng.get("/health_api?name=nosuch")).body).h, "unknown");
    await ng.post("/upstream/api2", `server 127.0.0.1:${P.ok};`);
    assert.deepEqual(JSON.parse((await ng.get("/health_api?name=api2")).body).h, {}); // no check: empty (cjson: {})
    await Promise.all([ng.del("/upstream/api"), ng.del("/upstream/api2")]);
  });
});

describe("replace and delete", () => {
  test("a replaced upstream keeps its peers' state; a new server starts as default_down says", async () => {
    assert.equal((await ng.post("/upstream/rep", `server 127.0.0.1:${P.ok}; check interval=200 rise=2 fall=2 timeout=150 type=http;`)).status, 200);
    assert.ok(await until(async () => (await row("rep", P.ok))?.rise >= 3), "never up");
    const r1 = await ng.post("/upstream/rep", `server 127.0.0.1:${P.ok}; server 127.0.0.1:${P.ok2}; check interval=200 rise=2 fall=2 timeout=150 type=http;`);
    assert.equal(r1.status, 200);
    const after = await rows();
    assert.equal(after[`rep 127.0.0.1:${P.ok}`].status, "up");
    assert.ok(after[`rep 127.0.0.1:${P.ok}`].rise >= 3, JSON.stringify(after));
    assert.equal(after[`rep 127.0.0.1:${P.ok2}`].status, "down");
    // no 502 window: the kept peer serves at once
    for (let i = 0; i < 8; i++) assert.equal((await ng.proxy("rep")).body, String(P.ok));
    await ng.del("/upstream/rep");
  });

  test("delete stops the probes (counted in the backend's access log) and releases the state", async () => {
    assert.equal((await ng.post("/upstream/del", `server 127.0.0.1:${P.ok}; check interval=200 rise=1 fall=1 timeout=150 type=http; check_http_send "GET /del-probe HTTP/1.0\\r\\n\\r\\n";`)).status, 200);
    assert.ok(await until(async () => web.count(/del-probe/) >= 3), "no probes");
    assert.equal((await ng.del("/upstream/del")).status, 200);
    await sleep(300);
    const n = web.count(/del-probe/);
    await sleep(1000);
    assert.equal(web.count(/del-probe/), n, "probes went on after the delete");
    const s = JSON.parse((await ng.get("/status")).body);
    // Debian's cjson encodes an empty list as {}
    assert.ok(!Object.values(s.health.peers).some((p) => p.upstreams.includes("del")));
  });

  test("a bad check is refused with the reason and changes nothing", async () => {
    const r = await ng.post("/upstream/bad", `server 127.0.0.1:${P.ok}; check interval=1s;`);
    assert.equal(r.status, 400);
    assert.equal(r.body, 'add server failed: invalid interval "1s" in "check" directive');
    const r2 = await ng.post("/upstream/bad", `server 127.0.0.1:${P.ok}; check interval=1000; check_http_send "GET / HTTP/1.0";`);
    assert.equal(r2.body, 'add server failed: invalid check_http_send for type "tcp"');
    assert.equal((await ng.get("/upstream/bad")).status, 404);
  });
});

describe("check_status", () => {
  test("html, csv and json as the reference's for the same state; filters; HEAD; 405; bad arguments", async () => {
    // a long interval: one probe right after the POST, then the counters stay put
    await ng.post("/upstream/st", `server 127.0.0.1:${P.ok}; server 127.0.0.1:${P.err500}; check interval=60000 rise=1 fall=1 timeout=500 type=http;`);
    await ng.post("/upstream/dy", `server 127.0.0.1:${P.ok2}; check interval=60000 rise=1 fall=1 timeout=500 type=tcp port=${P.ok};`);
    assert.ok(await until(async () => { const r = await rows(); return r[`st 127.0.0.1:${P.ok}`]?.rise === 1 && r[`st 127.0.0.1:${P.err500}`]?.fall === 1 && r[`dy 127.0.0.1:${P.ok2}`]?.rise === 1; }), JSON.stringify(await rows()));
    const A = `127.0.0.1:${P.ok}`, B = `127.0.0.1:${P.err500}`, C = `127.0.0.1:${P.ok2}`;
    const tr = (i, up, name, st, rise, fall, type, port) => `  <tr${st === "down" ? ' bgcolor="#FF0000"' : ""}>\n    <td>${i}</td>\n    <td>${up}</td>\n    <td>${name}</td>\n    <td>${st}</td>\n    <td>${rise}</td>\n    <td>${fall}</td>\n    <td>${type}</td>\n    <td>${port}</td>\n  </tr>\n`;
    const html = (n, trs) => `<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN\n"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml">\n<head>\n  <title>Nginx http upstream check status</title>\n</head>\n<body>\n<h1>Nginx http upstream check status</h1>\n<h2>Check upstream server number: ${n}, generation: 1</h2>\n<table style="background-color:white" cellspacing="0"        cellpadding="3" border="1">\n  <tr bgcolor="#C0C0C0">\n    <th>Index</th>\n    <th>Upstream</th>\n    <th>Name</th>\n    <th>Status</th>\n    <th>Rise counts</th>\n    <th>Fall counts</th>\n    <th>Check type</th>\n    <th>Check port</th>\n  </tr>\n${trs}</table>\n</body>\n</html>\n`;
    const jr = (i, up, name, st, rise, fall, type, port) => `{"index": ${i}, "upstream": "${up}", "name": "${name}", "status": "${st}", "rise": ${rise}, "fall": ${fall}, "type": "${type}", "port": ${port}}`;
    const json = (rs) => `{"servers": {\n  "total": ${rs.length},\n  "generation": 1,\n  "server": [\n${rs.map((x) => `    ${x}`).join(",\n")}${rs.length ? "\n" : ""}  ]\n}}\n`;
    const R = [[0, "st", A, "up", 1, 0, "http", 0], [1, "st", B, "down", 0, 1, "http", 0], [2, "dy", C, "up", 1, 0, "tcp", P.ok]];
    // only our three upstreams are checked now (every other test deleted its upstreams)
    const page = await ng.get("/hc");
    assert.equal(page.headers["content-type"], "text/html");
    assert.equal(page.body, html(3, R.map((r) => tr(...r)).join("")));
    assert.equal(Number(page.headers["content-length"]), Buffer.byteLength(page.body));
    const csv = await ng.get("/hc?format=csv");
    assert.equal(csv.headers["content-type"], "text/plain");
    assert.equal(csv.body, R.map((r) => `${r.join(",")}\n`).join(""));
    const js = await ng.get("/hc?format=json");
    assert.equal(js.headers["content-type"], "application/json");
    assert.equal(js.body, json(R.map((r) => jr(...r))));
    // filtered: the reference's JSON would end the array with a comma here; ours stays valid
    const down = await ng.get("/hc?format=json&status=DOWN");
    assert.equal(down.body, json([jr(...R[1])]));
    JSON.parse(down.body);
    assert.equal((await ng.get("/hc?format=csv&status=up")).body, `${R[0].join(",")}\n${R[2].join(",")}\n`);
    assert.equal((await ng.get("/hc?status=down")).body, html(1, tr(...R[1])));
    // the location's default format, first occurrence of an argument, bad values ignored and logged
    assert.equal((await ng.get("/hc_csv")).body, csv.body);
    assert.equal((await ng.get("/hc?format=csv&format=json")).body, csv.body);
    assert.equal((await ng.get("/hc?format=xml")).body, page.body);
    assert.match(ng.errorLog(), /http upstream check, bad argument: "xml"/);
    const head = await request(ng.apiPort, "HEAD", "/hc");
    assert.equal(head.status, 200);
    assert.equal(head.headers["content-type"], "text/html");
    assert.equal(head.body, "");
    assert.equal((await ng.api("POST", "/hc", { body: "x" })).status, 405);
    // the interface serves the same page
    assert.equal((await ng.get("/check_status?format=json")).body, js.body);
    await Promise.all([ng.del("/upstream/st"), ng.del("/upstream/dy")]);
    // nothing checked: csv empty, json an empty list
    assert.equal((await ng.get("/hc?format=csv")).headers["content-length"], "0");
    assert.equal((await ng.get("/hc?format=json")).body, json([]));
  });
});
