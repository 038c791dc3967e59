// An interface safe to expose (issue 14), over HTTP against a real nginx:
//   - exactly the original's paths: at `location /` the whole URI is the resource; a prefix location
//     declares its prefix (interface({ prefix = "/dyups/" })) and serves nothing outside it;
//   - the spelling listed is the one of the latest POST;
//   - no tokens: loopback clients only (a non-loopback client is simulated with nginx's realip module and
//     the documentation address 203.0.113.5 in X-Real-IP: nothing is ever sent to it), loopback Host only
//     (DNS rebinding), interface_access = "any";
//   - tokens with roles (file and inline): 401/403 per role and path, the rate limit (429), no token in
//     any log line, the audit line of every accepted write;
//   - cross-site writes refused; link-local/metadata targets refused by default, allowed_targets enforced.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startNginx, startNginxExpectFailure, freePorts, request, rawRequest, eventually } from "./harness.mjs";

const REALIP = "set_real_ip_from 127.0.0.1; real_ip_header X-Real-IP;";
const FAR = "203.0.113.5"; // TEST-NET-3: never routed, only ever written in a header

describe("no tokens (the default: loopback only)", () => {
  let ng, prefixPort;
  before(async () => {
    [prefixPort] = await freePorts(1);
    ng = await startNginx({
      workers: 2,
      backends: 1,
      serverExtra: REALIP,
      httpExtra: `
  server {
    listen 127.0.0.1:${prefixPort};
    location / { content_by_lua_block { require("dyups").interface({ prefix = "/dyups/" }) } }
    location = /lua-update {
      content_by_lua_block { local s, m = require("dyups").update(ngx.var.arg_name, ngx.unescape_uri(ngx.var.arg_body)); ngx.print(s, " ", m) }
    }
  }`,
    });
  });
  after(async () => { await ng?.stop(); });
  const px = (method, p, opts) => request(prefixPort, method, p, opts);
  const listed = async () => (await ng.get("/list")).body.split("\n").filter(Boolean);

  test("at location /, /api/list is 404 and POST /api/upstream/x is 404 'not support this interface', creating nothing", async () => {
    const [a] = ng.backendPorts;
    const g = await ng.get("/api/list");
    assert.equal(g.status, 404);
    assert.equal(g.body, "");
    for (const p of ["/api/upstream/x", "/dyups/upstream/x"]) {
      const r = await ng.post(p, `server 127.0.0.1:${a};`);
      assert.equal(r.status, 404, p);
      assert.equal(r.body, "not support this interface", p);
    }
    assert.equal((await ng.del("/api/upstream/x")).status, 405);
    assert.equal((await ng.get("/upstream/x")).status, 404);
    assert.ok(!(await listed()).includes("x"));
    // a hint for operators whose location has an undeclared prefix (once per worker)
    assert.match(ng.errorLog(), /\[warn\].*is not a resource of an interface at \/; .*declare it: interface\(\{ prefix = "\/(api|dyups)\/" \}\)/);
  });

  test("a prefix location serves its paths and nothing else", async () => {
    const [a] = ng.backendPorts;
    const ok = await px("POST", "/dyups/upstream/pfx", { body: `server 127.0.0.1:${a};` });
    assert.equal(ok.status, 200, ok.body);
    assert.equal(ok.body, "success");
    assert.match((await px("GET", "/dyups/list")).body, /^pfx$/m);
    assert.equal((await px("GET", "/dyups/upstream/pfx")).body, `server 127.0.0.1:${a}\n`);
    assert.equal((await px("GET", "/dyups/LIST")).status, 200);
    assert.equal((await ng.proxy("pfx")).body, String(a));
    // outside the prefix: the original's answers for unknown paths
    for (const p of ["/list", "/detail", "/upstream/pfx", "/status", "/dyupsx/list"]) {
      const r = await px("GET", p);
      assert.equal(r.status, 404, p);
      assert.equal(r.body, "", p);
    }
    const post = await px("POST", "/upstream/outside", { body: `server 127.0.0.1:${a};` });
    assert.equal(post.status, 404);
    assert.equal(post.body, "not support this interface");
    const del = await px("DELETE", "/upstream/pfx");
    assert.equal(del.status, 405);
    assert.equal(del.body, "not support this interface");
    assert.equal((await px("GET", "/dyups/")).status, 404); // the empty resource: nginx's own 404 page
    assert.ok(!(await listed()).includes("outside"));
    assert.ok((await listed()).includes("pfx"));
    assert.equal((await px("DELETE", "/dyups/upstream/pfx")).status, 200);
  });

  test("the spelling listed is the one of the latest POST", async () => {
    const [a] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/CaseHost", `server 127.0.0.1:${a};`)).status, 200);
    let names = await listed();
    assert.ok(names.includes("CaseHost"), names.join(","));
    assert.match((await ng.get("/detail")).body, /^CaseHost\nserver /m);
    assert.equal(JSON.parse((await ng.get("/upstream/casehost?format=json")).body).name, "CaseHost");
    assert.equal((await ng.proxy("casehost")).body, String(a));
    assert.equal((await ng.post("/upstream/casehost", `server 127.0.0.1:${a};`)).status, 200);
    names = await listed();
    assert.ok(names.includes("casehost"), names.join(","));
    assert.ok(!names.includes("CaseHost"), names.join(","));
    assert.equal(names.filter((n) => n.toLowerCase() === "casehost").length, 1);
    assert.equal((await ng.del("/upstream/CASEHOST")).status, 200);
  });

  test("a non-loopback client is refused with 403 naming the options, and nothing is created", async () => {
    const [a] = ng.backendPorts;
    const headers = { "x-real-ip": FAR };
    const g = await ng.get("/list", { headers });
    assert.equal(g.status, 403);
    assert.match(g.body, /admin_tokens_file/);
    assert.match(g.body, /interface_access = "any"/);
    const p = await ng.post("/upstream/far", `server 127.0.0.1:${a};`, { headers });
    assert.equal(p.status, 403);
    assert.equal((await ng.get("/upstream/far")).status, 404);
    // a loopback client (the same connection source without the header) is served
    assert.notEqual((await ng.get("/list")).status, 403);
  });

  test("a foreign Host is refused (DNS rebinding); loopback names are served", async () => {
    const [a] = ng.backendPorts;
    for (const host of ["evil.example", `evil.example:${ng.apiPort}`, "10.1.2.3"]) {
      const r = await ng.get("/list", { headers: { host } });
      assert.equal(r.status, 403, host);
      assert.match(r.body, /interface_hosts/);
    }
    const w = await ng.post("/upstream/rebound", `server 127.0.0.1:${a};`, { headers: { host: "evil.example" } });
    assert.equal(w.status, 403);
    assert.equal((await ng.get("/upstream/rebound")).status, 404);
    for (const host of [`localhost:${ng.apiPort}`, "127.0.0.1", `[::1]:${ng.apiPort}`, "dyups.localhost"]) {
      assert.notEqual((await ng.get("/list", { headers: { host } })).status, 403, host);
    }
    // HTTP/1.0 without Host (scripts): served
    const raw = await rawRequest(ng.apiPort, "GET /list HTTP/1.0\r\n\r\n");
    assert.doesNotMatch(raw, /^HTTP\/1.1 403/);
  });

  test("a cross-site POST is refused and creates nothing; the interface's own Origin and curl are served", async () => {
    const [a] = ng.backendPorts;
    const body = `server 127.0.0.1:${a};`;
    for (const origin of ["http://evil.example", "null", `http://localhost:${ng.apiPort}`]) {
      const r = await ng.post("/upstream/csrf", body, { headers: { origin, "content-type": "application/x-www-form-urlencoded" } });
      assert.equal(r.status, 403, origin);
      assert.match(r.body, /cross-site/);
    }
    const fetchSite = await ng.post("/upstream/csrf", body, { headers: { "sec-fetch-site": "cross-site" } });
    assert.equal(fetchSite.status, 403);
    const del = await ng.del("/upstream/csrf", { headers: { origin: "http://evil.example" } });
    assert.equal(del.status, 403);
    assert.equal((await ng.get("/upstream/csrf")).status, 404);
    // reads are not writes; the interface's own origin may write
    assert.notEqual((await ng.get("/list", { headers: { origin: "http://evil.example" } })).status, 403);
    const own = await ng.post("/upstream/csrf", body, { headers: { origin: `http://127.0.0.1:${ng.apiPort}` } });
    assert.equal(own.status, 200, own.body);
    assert.equal((await ng.del("/upstream/csrf")).status, 200);
  });

  test("link-local and metadata targets are refused by default with 400 and the reason; others allowed", async () => {
    const refused = [
      ["server 169.254.169.254:80;", /169\.254\.169\.254 is a link-local or cloud metadata address/],
      ["server 169.254.10.1;", /link-local/],
      ["server [fe80::1]:80;", /fe80::1/],
      ["server [::ffff:169.254.169.254]:80;", /metadata/],
      ["server [fd00:ec2::254]:80;", /metadata/],
      ["server 100.100.100.200:80;", /metadata/],
      ["server 127.0.0.1:1; server 169.254.169.254 backup;", /server 2/],
    ];
    for (const [body, re] of refused) {
      const r = await ng.post("/upstream/meta", body);
      assert.equal(r.status, 400, `${body}: ${r.status} ${r.body}`);
      assert.match(r.body, /^add server failed: server \d+ \(.*\): target /, body);
      assert.match(r.body, re, body);
    }
    assert.equal((await ng.get("/upstream/meta")).status, 404);
    for (const body of ["server 10.1.2.3:80;", "server unix:/tmp/dyups-any.sock;", "server [2001:db8::1]:80;"]) {
      const r = await ng.post("/upstream/fine", body);
      assert.equal(r.status, 200, `${body}: ${r.body}`);
    }
    assert.equal((await ng.del("/upstream/fine")).status, 200);
  });

  test("the Lua API is subject to the same target rule", async () => {
    const r = await px("GET", `/lua-update?name=luameta&body=${encodeURIComponent("server 169.254.169.254;")}`);
    assert.match(r.body, /^400 add server failed: server 1 .*link-local or cloud metadata/);
    assert.equal((await ng.get("/upstream/luameta")).status, 404);
    const ok = await px("GET", `/lua-update?name=LuaOk&body=${encodeURIComponent("server 127.0.0.1:1;")}`);
    assert.equal(ok.body, "200 success");
  });

  test("every accepted write has an audit line at notice: source, client, upstream, revisions", async () => {
    const log = ng.errorLog();
    assert.match(log, /\[notice\].*dyups audit: op=update upstream=casehost rev_before=0 rev_after=\d+ source=http client=127\.0\.0\.1/);
    assert.match(log, /dyups audit: op=update upstream=casehost rev_before=[1-9]\d* rev_after=\d+ source=http/);
    assert.match(log, /dyups audit: op=delete upstream=casehost rev_before=[1-9]\d* rev_after=\d+ source=http client=127\.0\.0\.1/);
    assert.match(log, /dyups audit: op=update upstream=luaok rev_before=0 rev_after=\d+ source=lua/);
    assert.doesNotMatch(log, /dyups audit: .*upstream=(meta|far|x|outside|rebound|luameta) rev_before=0 rev_after/);
  });
});

describe("tokens with roles", () => {
  const W = "w-3f9a1c7e5b2d48a6b0c9e1f2a3b4c5d6"; // inline write token "ci"
  const R = "r-8e7d6c5b4a3928171615141312111009"; // file read token "viewer"
  const F = "f-0a1b2c3d4e5f60718293a4b5c6d7e8f9"; // file write token (no name: line-3)
  let ng, dir;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "dyups-tokens-"));
    const file = path.join(dir, "tokens");
    writeFileSync(file, `# TOKEN ROLE [NAME]\n${R} read viewer   # the dashboard\n${F} write\n\n`, { mode: 0o600 });
    ng = await startNginx({
      workers: 2,
      backends: 1,
      serverExtra: REALIP,
      init: {
        admin_tokens_file: file,
        admin_tokens: [{ token: W, role: "write", name: "ci" }],
        auth_fail_limit: 5,
        allowed_targets: ["127.0.0.0/8", `unix:${dir}/sockets/`],
      },
    });
  });
  after(async () => { await ng?.stop(); rmSync(dir, { recursive: true, force: true }); });
  const bearer = (t, extra = {}) => ({ headers: { authorization: `Bearer ${t}`, ...extra } });
  const reads = ["/list", "/detail", "/upstream/tok", "/status", "/nothing"];

  test("no token: 401 with WWW-Authenticate on every path and method; nothing created", async () => {
    const [a] = ng.backendPorts;
    for (const p of reads) {
      const r = await ng.get(p);
      assert.equal(r.status, 401, p);
      assert.match(r.headers["www-authenticate"], /^Bearer realm="dyups"/);
      assert.match(r.body, /Authorization: Bearer/);
    }
    assert.equal((await ng.post("/upstream/tok", `server 127.0.0.1:${a};`)).status, 401);
    assert.equal((await ng.del("/upstream/tok")).status, 401);
    assert.equal((await ng.get("/upstream/tok", bearer(W))).status, 404);
  });

  test("a wrong or malformed token: 401 invalid_token", async () => {
    for (const auth of [`Bearer ${W}x`, "Bearer nope", `Basic ${Buffer.from("a:b").toString("base64")}`]) {
      const r = await ng.get("/list", { headers: { authorization: auth, "x-real-ip": "203.0.113.20" } });
      assert.equal(r.status, 401, auth);
      assert.match(r.headers["www-authenticate"], /error="invalid_token"/);
    }
  });

  test("a read token: every GET; 403 on POST and DELETE, nothing changed", async () => {
    const [a] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/tok", `server 127.0.0.1:${a};`, bearer(W))).status, 200);
    for (const p of ["/list", "/detail", "/upstream/tok", "/status"]) {
      assert.equal((await ng.get(p, bearer(R))).status, 200, p);
    }
    assert.equal((await ng.get("/nothing", bearer(R))).status, 404);
    const p = await ng.post("/upstream/tok", `server 127.0.0.1:1;`, bearer(R));
    assert.equal(p.status, 403);
    assert.match(p.body, /token "viewer" has the read role/);
    const d = await ng.del("/upstream/tok", bearer(R));
    assert.equal(d.status, 403);
    assert.equal((await ng.api("PUT", "/upstream/tok", { body: "x", ...bearer(R) })).status, 403);
    assert.equal((await ng.get("/upstream/tok", bearer(R))).body, `server 127.0.0.1:${a}\n`);
  });

  test("write tokens (inline and from the file) do everything, from any address and Host", async () => {
    const [a] = ng.backendPorts;
    const far = bearer(F, { "x-real-ip": FAR, host: "dyups.example" });
    const r = await ng.post("/upstream/remote", `server 127.0.0.1:${a};`, far);
    assert.equal(r.status, 200, r.body);
    assert.equal((await ng.proxy("remote")).body, String(a));
    assert.equal((await ng.get("/list", far)).status, 200);
    assert.equal((await ng.del("/upstream/remote", far)).status, 200);
    // the original's answers behind the gate
    const bad = await ng.post("/api/upstream/x", `server 127.0.0.1:${a};`, bearer(W));
    assert.equal(bad.status, 404);
    assert.equal(bad.body, "not support this interface");
    // tokens do not make cross-site writes possible
    const cs = await ng.post("/upstream/tok", `server 127.0.0.1:${a};`, bearer(W, { origin: "http://evil.example" }));
    assert.equal(cs.status, 403);
  });

  test("allowed_targets: only the listed CIDRs and unix-socket folders", async () => {
    const ok = ["server 127.0.0.1:1;", "server 127.9.9.9:1;", `server unix:${dir}/sockets/app.sock;`];
    for (const body of ok) {
      const r = await ng.post("/upstream/tgt", body, bearer(W));
      assert.equal(r.status, 200, `${body}: ${r.body}`);
    }
    const refused = [
      ["server 10.1.2.3:80;", /10\.1\.2\.3 is not in allowed_targets/],
      ["server 169.254.169.254;", /not in allowed_targets/],
      ["server unix:/var/run/docker.sock;", /not in a unix-socket folder of allowed_targets/],
      [`server unix:${dir}/sockets/../escape.sock;`, /unix-socket folder/],
      ["server [::1]:80;", /not in allowed_targets/],
    ];
    for (const [body, re] of refused) {
      const r = await ng.post("/upstream/tgt", body, bearer(W));
      assert.equal(r.status, 400, `${body}: ${r.status} ${r.body}`);
      assert.match(r.body, re, body);
    }
    assert.equal((await ng.get("/upstream/tgt", bearer(R))).body, `server unix:${dir}/sockets/app.sock\n`);
  });

  test("repeated failures from one address: 429 with Retry-After, logged once; other addresses unaffected", async () => {
    const ip = "203.0.113.7";
    for (let i = 0; i < 5; i++) {
      const r = await ng.get("/list", { headers: { authorization: `Bearer wrong-${i}`, "x-real-ip": ip } });
      assert.equal(r.status, 401, `attempt ${i}`);
    }
    const blocked = await ng.get("/list", bearer(W, { "x-real-ip": ip }));
    assert.equal(blocked.status, 429);
    assert.ok(Number(blocked.headers["retry-after"]) >= 1);
    assert.match(blocked.body, /too many failed authentications from 203\.0\.113\.7/);
    assert.equal((await ng.get("/list", bearer(W, { "x-real-ip": "203.0.113.8" }))).status, 200);
    assert.equal((await ng.get("/list", bearer(W))).status, 200);
    // a missing token is not counted
    for (let i = 0; i < 6; i++) assert.equal((await ng.get("/list", { headers: { "x-real-ip": "203.0.113.9" } })).status, 401);
    assert.equal((await ng.get("/list", bearer(W, { "x-real-ip": "203.0.113.9" }))).status, 200);
    const lines = ng.errorLog().split("\n").filter((l) => /failed authentications at the interface from 203\.0\.113\.7/.test(l));
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0], /\[warn\]/);
  });

  test("audit lines name the token, never its text; no token appears in any log line", async () => {
    const log = ng.errorLog();
    assert.match(log, /dyups audit: op=update upstream=tok rev_before=0 rev_after=\d+ source=http client=127\.0\.0\.1 token=ci/);
    assert.match(log, /dyups audit: op=update upstream=remote rev_before=0 rev_after=\d+ source=http client=203\.0\.113\.5 token=line-3/);
    assert.match(log, /dyups audit: op=delete upstream=remote .* token=line-3/);
    for (const t of [W, R, F, "wrong-0", "nope"]) assert.ok(!log.includes(t), `token ${t} in the error log`);
    assert.ok(!ng.stderr().includes(W));
  });
});

describe("interface_access = \"any\"", () => {
  let ng;
  before(async () => {
    ng = await startNginx({ workers: 1, backends: 1, serverExtra: REALIP, init: { interface_access: "any" } });
  });
  after(async () => { await ng?.stop(); });

  test("any client and Host, unauthenticated, as the original; cross-site writes still refused", async () => {
    const [a] = ng.backendPorts;
    const headers = { "x-real-ip": FAR, host: "dyups.example" };
    const r = await ng.post("/upstream/open", `server 127.0.0.1:${a};`, { headers });
    assert.equal(r.status, 200, r.body);
    assert.equal((await ng.get("/list", { headers })).body, "open\n");
    const cs = await ng.del("/upstream/open", { headers: { ...headers, origin: "http://evil.example" } });
    assert.equal(cs.status, 403);
    assert.equal((await ng.del("/upstream/open", { headers })).status, 200);
    assert.match(ng.errorLog(), /dyups audit: op=delete upstream=open .* source=http client=203\.0\.113\.5,/);
  });
});

describe("start-up checks", () => {
  test("a bad token file or a disallowed upstream_conf target stops nginx with the reason, never the token", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "dyups-tokens-"));
    try {
      const file = path.join(dir, "tokens");
      writeFileSync(file, "s3cr3t-token-value-1234 admin\n");
      const out = await startNginxExpectFailure({ init: { admin_tokens_file: file } });
      assert.match(out, /tokens:1: the role \(second field\) must be "read" or "write"/);
      assert.ok(!out.includes("s3cr3t-token-value-1234"));
      const out2 = await startNginxExpectFailure({ upstreamConf: "upstream meta { server 169.254.169.254; }\n" });
      assert.match(out2, /upstream "meta": server 1 \(169\.254\.169\.254\): target 169\.254\.169\.254 is a link-local/);
      const out3 = await startNginxExpectFailure({ init: { allowed_targets: ["10.0.0.0/33"] } });
      assert.match(out3, /allowed_targets" entry 1 \("10\.0\.0\.0\/33"\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a restart keeps the listed spelling (state file); an entry allowed_targets no longer allows is skipped with an error", async () => {
    const prefix = mkdtempSync(path.join(tmpdir(), "dyups-it-"));
    const stateFile = path.join(prefix, "state", "state.json");
    let ng;
    try {
      ng = await startNginx({ workers: 1, backends: 0, prefix, init: { state_file: stateFile } });
      assert.equal((await ng.post("/upstream/KeepMe", "server 127.0.0.1:1;")).status, 200);
      assert.equal((await ng.post("/upstream/elsewhere", "server 10.1.2.3:80;")).status, 200);
      const saved = await eventually(() => existsSync(stateFile) && JSON.parse(readFileSync(stateFile, "utf8")).upstreams.length === 2, 5000);
      assert.ok(saved, "the state file was not written");
      await ng.stop();
      ng = await startNginx({ workers: 1, backends: 0, prefix, init: { state_file: stateFile, allowed_targets: ["127.0.0.0/8"] } });
      assert.equal((await ng.get("/list")).body, "KeepMe\n");
      assert.match(ng.errorLog(), /state file .*: record 2 \(elsewhere\) not loaded: server 1 \(10\.1\.2\.3:80\): target 10\.1\.2\.3 is not in allowed_targets/);
    } finally {
      await ng?.stop();
      rmSync(prefix, { recursive: true, force: true });
    }
  });
});
