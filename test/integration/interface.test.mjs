// The dyups-compatible interface over HTTP: every row of the reference endpoint table, the grammar forms,
// invalid bodies (400 + reason, state unchanged), whole bodies (chunked, spooled to disk), case-insensitive
// names, a prefix location, and JSON/status extensions.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { startNginx, request, rawRequest } from "./harness.mjs";

let ng;
before(async () => {
  ng = await startNginx({
    workers: 2,
    backends: 2,
    serverExtra: `location /dyups/ { content_by_lua_block { require("dyups").interface({ prefix = "/dyups/" }) } }`,
  });
});
after(async () => { await ng?.stop(); });

const detailLine = (addr, o = {}) =>
  `server ${addr} weight=${o.weight ?? 1} max_conns=${o.max_conns ?? 0} max_fails=${o.max_fails ?? 1} fail_timeout=${o.fail_timeout ?? 10} backup=${o.backup ?? 0} down=${o.down ?? 0}\n`;

describe("empty state", () => {
  test("GET /list and /detail are 204 with no body and no Content-Length", async () => {
    for (const p of ["/list", "/detail"]) {
      const r = await ng.get(p);
      assert.equal(r.status, 204);
      assert.equal(r.body, "");
      assert.equal(r.headers["content-length"], undefined);
    }
  });
  test("GET / is nginx's HTML 404 page", async () => {
    const r = await ng.get("/");
    assert.equal(r.status, 404);
    assert.match(r.headers["content-type"], /text\/html/);
    assert.match(r.body, /404 Not Found/);
  });
  test("GET unknown paths and wrong arity are 404 with Content-Length 0", async () => {
    for (const p of ["/upstream", "/upstream/a/b", "/foo", "/upstream/nope"]) {
      const r = await ng.get(p);
      assert.equal(r.status, 404, p);
      assert.equal(r.body, "", p);
      assert.equal(r.headers["content-length"], "0", p);
    }
  });
});

describe("writes", () => {
  test("POST then /detail byte for byte, no Content-Type, exact Content-Length", async () => {
    const [a, b] = ng.backendPorts;
    const r = await ng.post("/upstream/host1", `server 127.0.0.1:${a};`);
    assert.equal(r.status, 200);
    assert.equal(r.body, "success");
    assert.equal(r.headers["content-type"], undefined);
    assert.equal(r.headers["content-length"], "7");
    assert.equal((await ng.post("/upstream/host2", `server 127.0.0.1:${b};`)).status, 200);
    assert.equal((await ng.post("/upstream/dyhost", `server 127.0.0.1:${b};server 127.0.0.1:${a};`)).status, 200);
    const d = await ng.get("/detail");
    assert.equal(d.status, 200);
    assert.equal(d.headers["content-type"], undefined);
    assert.equal(d.body,
      `host1\n${detailLine(`127.0.0.1:${a}`)}\nhost2\n${detailLine(`127.0.0.1:${b}`)}\n` +
      `dyhost\n${detailLine(`127.0.0.1:${b}`)}${detailLine(`127.0.0.1:${a}`)}\n`);
    assert.equal(d.headers["content-length"], String(Buffer.byteLength(d.body)));
    const l = await ng.get("/list");
    assert.equal(l.body, "host1\nhost2\ndyhost\n");
  });

  test("all server parameters are reflected in /detail; port 80 default; names resolved to addresses", async () => {
    const body = `server 127.0.0.1:18081 weight=3 max_fails=5 fail_timeout=30s; server 127.0.0.2 max_conns=10;
      server 127.0.0.3:18083 backup; server 127.0.0.4:18084 down; server localhost:18085;`;
    const r = await ng.post("/upstream/params", body);
    assert.equal(r.status, 200, r.body);
    const d = await ng.get("/detail");
    const block = d.body.split("\n\n").find((b) => b.startsWith("params\n"));
    assert.equal(block + "\n",
      "params\n" + detailLine("127.0.0.1:18081", { weight: 3, max_fails: 5, fail_timeout: 30 }) +
      detailLine("127.0.0.2:80", { max_conns: 10 }) + detailLine("127.0.0.3:18083", { backup: 1 }) +
      detailLine("127.0.0.4:18084", { down: 1 }) + detailLine("127.0.0.1:18085"));
    assert.equal((await ng.del("/upstream/params")).status, 200);
  });

  test("names are case-insensitive", async () => {
    const [a] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/MiXeD", `server 127.0.0.1:${a};`)).status, 200);
    assert.equal((await ng.get("/upstream/mixed")).status, 200);
    assert.equal((await ng.get("/UPSTREAM/MIXED")).status, 200);
    assert.equal((await ng.proxy("MIXED")).body, String(a));
    assert.equal((await ng.del("/upstream/Mixed")).status, 200);
    assert.equal((await ng.get("/upstream/mixed")).status, 404);
  });

  test("keywords are case-insensitive: /LIST", async () => {
    assert.equal((await ng.get("/LIST")).status, 200);
  });

  test("grammar forms are accepted", async () => {
    const [a, b] = ng.backendPorts;
    const bodies = [
      `ip_hash; server 127.0.0.1:${a}; server 127.0.0.1:${b};`,
      `hash $arg_k; server 127.0.0.1:${a}; server 127.0.0.1:${b};`,
      `hash $request_uri consistent; server 127.0.0.1:${a}; server 127.0.0.1:${b};`,
      `least_conn; server 127.0.0.1:${a}; server 127.0.0.1:${b}; keepalive 16;`,
      `server 127.0.0.1:${a}; keepalive 8; keepalive_timeout 30s; keepalive_requests 50;`,
      `random; server 127.0.0.1:${a}; server 127.0.0.1:${b};`,
      `random two least_conn; server 127.0.0.1:${a}; server 127.0.0.1:${b};`,
      `zone dyz 64k; server 127.0.0.1:${a};`,
      `server unix:/tmp/dyups-nonexistent.sock;`,
      `server [::1]:${a};`,
      `# a comment\nserver 127.0.0.1:${a}; # trailing\n\n  server\t127.0.0.1:${b}\n weight=2;\r\n`,
      `server "127.0.0.1:${a}" 'weight=2';`,
      `server 127.0.0.1:${a}; server 127.0.0.1:${a};`,
      `check interval=3000 rise=2 fall=5 timeout=1000 type=http; check_http_send "HEAD / HTTP/1.0\\r\\n\\r\\n"; check_http_expect_alive http_2xx http_3xx; server 127.0.0.1:${a};`,
    ];
    for (const body of bodies) {
      const r = await ng.post("/upstream/forms", body);
      assert.equal(r.status, 200, `${body}: ${r.status} ${r.body}`);
    }
    assert.equal((await ng.del("/upstream/forms")).status, 200);
  });

  test("invalid bodies are 400 'add server failed: reason' and change nothing", async () => {
    const before = (await ng.get("/detail")).body;
    const cases = [
      ["server 127.0.0.1:1 weight=0;", /weight/],
      ["server 127.0.0.1:1 bogus=1;", /bogus=1/],
      ["ip_hash; server 127.0.0.1:1 backup;", /backup/],
      ["server;", /server/],
      ["", /no servers/],
      ["keepalive 4;", /no servers/],
      ["server 127.0.0.1:99999;", /port|invalid/],
      ["server 127.0.0.1:1", /;|unexpected end/],
      ["foo 1; server 127.0.0.1:1;", /unknown directive "foo"/],
      ["server 127.0.0.1:1 max_fails=x;", /max_fails/],
      ["server 127.0.0.1:1 fail_timeout=1q;", /fail_timeout/],
      ["server 127.0.0.1:1; { }", /./],
      ["server no.such.host.invalid:80;", /host not found/],
    ];
    for (const [body, re] of cases) {
      const r = await ng.post("/upstream/host1", body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.status} ${r.body}`);
      assert.match(r.body, /^add server failed: /, body);
      assert.match(r.body, re, body);
    }
    assert.equal((await ng.get("/detail")).body, before);
  });

  test("invalid names are 400 and change nothing", async () => {
    const r = await ng.post("/upstream/" + "x".repeat(200), "server 127.0.0.1:1;");
    assert.equal(r.status, 400);
    assert.match(r.body, /^add server failed: /);
    const r2 = await ng.post("/upstream/bad%20name", "server 127.0.0.1:1;");
    assert.equal(r2.status, 400);
  });

  test("POST with no body at all is 204; Content-Length: 0 is 400", async () => {
    const raw = await rawRequest(ng.apiPort, "POST /upstream/host1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert.match(raw, /^HTTP\/1.1 204 /);
    const r2 = await request(ng.apiPort, "POST", "/upstream/host1", { body: "" });
    assert.equal(r2.status, 400);
    assert.match(r2.body, /^add server failed/);
  });

  test("POST to wrong paths: 404 'not support this interface' / 'not support this api'", async () => {
    for (const p of ["/upstream", "/list", "/upstream/a/b"]) {
      const r = await ng.post(p, "server 127.0.0.1:1;");
      assert.equal(r.status, 404, p);
      assert.equal(r.body, "not support this interface", p);
    }
    const r = await ng.post("/foo/bar", "server 127.0.0.1:1;");
    assert.equal(r.status, 404);
    assert.equal(r.body, "not support this api");
  });

  test("DELETE to wrong paths: 405 (the original's asymmetry)", async () => {
    for (const p of ["/upstream", "/list", "/upstream/a/b"]) {
      const r = await ng.del(p);
      assert.equal(r.status, 405, p);
      assert.equal(r.body, "not support this interface", p);
    }
    const r = await ng.del("/foo/bar");
    assert.equal(r.status, 405);
    assert.equal(r.body, "not support this api");
  });

  test("PUT, PATCH, OPTIONS, HEAD are 405 with an empty body", async () => {
    for (const m of ["PUT", "PATCH", "OPTIONS", "HEAD"]) {
      const r = await ng.api(m, "/upstream/host1", { body: m === "HEAD" ? undefined : "server 127.0.0.1:1;" });
      assert.equal(r.status, 405, m);
      assert.equal(r.body, "", m);
      assert.equal(r.headers["content-length"], "0", m);
    }
  });
});

describe("whole bodies", () => {
  test("a chunked body in 5 chunks gives all 5 servers", async () => {
    const chunks = [1, 2, 3, 4, 5].map((i) => `server 127.0.0.${i}:${18000 + i};\n`);
    const r = await request(ng.apiPort, "POST", "/upstream/chunky", { chunks, chunkDelay: 20 });
    assert.equal(r.status, 200, r.body);
    const u = await ng.get("/upstream/chunky");
    assert.equal(u.body.trim().split("\n").length, 5);
  });

  test("a multi-megabyte body spooled to a temp file gives all its servers", async () => {
    const lines = [];
    for (let i = 0; i < 9000; i++) lines.push(`server 127.${(i >> 8) & 255}.${i & 255}.1:${10000 + (i % 5000)} weight=1 max_fails=3 fail_timeout=10s; # padding padding padding padding padding padding padding padding padding padding padding padding padding padding padding padding\n`);
    const body = lines.join("");
    assert.ok(body.length > 1.5 * 1024 * 1024, `body is ${body.length} bytes`);
    const r = await ng.post("/upstream/big", body);
    assert.equal(r.status, 200, r.body);
    const u = await ng.get("/upstream/big");
    assert.equal(u.body.trim().split("\n").length, 9000);
    assert.equal((await ng.del("/upstream/big")).status, 200);
  });
});

describe("prefix location and extensions", () => {
  test("the interface works under /dyups/", async () => {
    const [a] = ng.backendPorts;
    assert.equal((await ng.post("/dyups/upstream/pfx", `server 127.0.0.1:${a};`)).status, 200);
    const l = await ng.get("/dyups/list");
    assert.match(l.body, /^pfx$/m);
    assert.equal((await ng.get("/dyups/upstream/pfx")).body, `server 127.0.0.1:${a}\n`);
    assert.equal((await ng.proxy("pfx")).body, String(a));
    assert.equal((await ng.del("/dyups/upstream/pfx")).status, 200);
  });

  test("JSON views and /status", async () => {
    const j = await ng.get("/upstream/host1?format=json");
    assert.equal(j.status, 200);
    const rec = JSON.parse(j.body);
    assert.equal(rec.name, "host1");
    assert.equal(rec.servers[0].weight, 1);
    const s = JSON.parse((await ng.get("/status")).body);
    assert.equal(typeof s.version, "number");
    assert.equal(s.workers.length, 2);
  });

  test("If-Match revisions: a stale revision is 412 and changes nothing", async () => {
    const [a, b] = ng.backendPorts;
    const g = await ng.get("/upstream/host1");
    const etag = g.headers.etag;
    assert.match(etag, /^"\d+"$/);
    const ok = await ng.post("/upstream/host1", `server 127.0.0.1:${a};`, { headers: { "if-match": etag } });
    assert.equal(ok.status, 200);
    const stale = await ng.post("/upstream/host1", `server 127.0.0.1:${b};`, { headers: { "if-match": etag } });
    assert.equal(stale.status, 412);
    assert.equal((await ng.get("/upstream/host1")).body, `server 127.0.0.1:${a}\n`);
  });
});
