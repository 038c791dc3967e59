// Fuzz of the JSON API over HTTP (issue 17) against a real nginx: malformed JSON, wrong types, unknown fields,
// huge numbers, deep nesting and bad UTF-8 sent to every write (PUT, add server, PATCH, rollback) plus bad
// query arguments, headers and paths. Every input is invalid by construction (a mutation that happens to stay
// valid is skipped), so every answer must be a 4xx with a JSON reason; afterwards the state is exactly what it
// was and the error log holds no Lua error. Seeded: the same inputs every run (FUZZ_SEED to change them).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startNginx, request } from "./harness.mjs";

const W = "f".repeat(24);
const AUTH = { authorization: `Bearer ${W}` };
let ng, a, b;
let seed = Number(process.env.FUZZ_SEED ?? 1717);
function rand() { // mulberry32
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (xs) => xs[Math.floor(rand() * xs.length)];

before(async () => {
  ng = await startNginx({ workers: 2, backends: 2, init: { admin_tokens: [{ token: W, role: "write", name: "fuzz" }] } });
  [a, b] = ng.backendPorts;
});
after(async () => { await ng?.stop(); });

async function send(method, p, body, headers = {}) {
  return request(ng.apiPort, method, p, { headers: { ...AUTH, ...headers }, body: body === undefined ? undefined : Buffer.from(body, "latin1") });
}

async function state() {
  const st = JSON.parse((await send("GET", "/status")).body);
  const hist = JSON.parse((await send("GET", "/history")).body);
  const v1 = JSON.parse((await send("GET", "/v1/upstreams")).body);
  for (const u of v1.upstreams) for (const sv of u.servers) { delete sv.health; delete sv.active; } // run-time figures
  return { version: st.version, detail: (await send("GET", "/detail")).body, v1, kept: hist.kept };
}

// ---- what a valid document looks like (the fuzz breaks it)
const FIELDS = {
  upstream: {
    method: "enum", hash_key: "string?", hash_consistent: "bool", random_two: "bool", keepalive: [0, 2147483647],
    keepalive_timeout: "seconds", keepalive_requests: [0, 2147483647], zone: "string?", check: "object?", servers: "array",
  },
  server: {
    server: "string", weight: [1, 2147483647], max_fails: [0, 2147483647], fail_timeout: "seconds", max_conns: [0, 2147483647],
    backup: "bool", down: "bool", drain: "bool", resolve: "bool", service: "string?",
  },
  check: {
    type: "enum", interval: [1, 2147483647], rise: [1, 2147483647], fall: [1, 2147483647], timeout: [1, 2147483647],
    default_down: "bool", port: [0, 65535], http_send: "string", expect_alive: "array", keepalive_requests: [1, 2147483647],
  },
};
const baseServer = () => ({ server: `127.0.0.1:${a}`, weight: 2, max_fails: 1, fail_timeout: 10, max_conns: 0, backup: false, down: false, drain: false, resolve: false });
const baseCheck = () => ({ type: "tcp", interval: 3000, rise: 2, fall: 5, timeout: 1000, default_down: false, port: 0 });
const baseUpstream = () => ({ method: "round_robin", keepalive: 0, keepalive_timeout: 60, keepalive_requests: 1000, check: baseCheck(), servers: [baseServer(), { server: `127.0.0.1:${b}` }] });

/** Wrong-typed values for a field of kind `k` (every one invalid for it). */
function wrongValues(k) {
  const all = [null, true, false, "x", "", 1, -1, 1.5, [], {}, [1], { a: 1 }, "127.0.0.1:1"];
  const ok = {
    enum: (v) => false, // an enum field takes its names only: no value below is one
    "string?": (v) => v === null || typeof v === "string", string: (v) => typeof v === "string",
    bool: (v) => typeof v === "boolean", seconds: (v) => typeof v === "number" && v >= 0,
    "object?": (v) => v === null || (typeof v === "object" && !Array.isArray(v) && v !== null),
    array: (v) => false, // [] and {} are empty lists: refused as no servers / no values; others are not arrays of the right thing
  }[Array.isArray(k) ? "int" : k] ?? ((v) => Number.isInteger(v) && v >= k[0] && v <= k[1]);
  return all.filter((v) => !ok(v));
}

/** Number literals out of range for `k` (text, so 1e309 stays 1e309). */
function badNumbers(k) {
  const texts = ["-1", "1.5", "0.0001", "2147483648", "9007199254740993", "1e309", "-1e309", "1e400", "-0.5", "123456789012345678901234567890", "1e-400"];
  return texts.filter((t) => {
    const v = Number(t);
    if (Array.isArray(k)) return !(Number.isInteger(v) && v >= k[0] && v <= k[1] && Number.isFinite(v));
    if (k === "seconds") return !(Number.isFinite(v) && v >= 0 && v <= 2147483647 && Math.abs(Math.round(v * 1000) - v * 1000) < 1e-6);
    return true;
  });
}

const BAD_UTF8 = ["\xff", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82", "\xf5\x80\x80\x80", "a\x80b", "\xf0\x8f\xbf\xbf"];

function cases() {
  const out = []; // [method, path, body text (latin1 bytes), headers?]
  const put = (body) => out.push(["PUT", "/v1/upstreams/fz", body]);
  const putNew = (body) => out.push(["PUT", "/v1/upstreams/fznew", body]);
  const add = (body) => out.push(["POST", "/v1/upstreams/fz/servers", body]);
  const patch = (body) => out.push(["PATCH", `/v1/upstreams/fz/servers/127.0.0.1:${a}`, body]);
  const rollback = (body) => out.push(["POST", "/v1/upstreams/fz/rollback", body]);
  const writers = [put, putNew, add, patch, rollback];
  const J = JSON.stringify;

  // 1. malformed JSON: mutations of valid documents that no longer parse
  const valid = [J(baseUpstream()), J(baseServer()), J({ weight: 3 }), J({ revision: 1 })];
  const junk = ["{", "}", "[", "]", '"', ",", ":", "\\", "0", "e", "-", "n", "t", " ", "\x00", "\x7f"];
  for (let i = 0; i < 300; i++) {
    let s = pick(valid);
    for (let m = 0; m < 1 + Math.floor(rand() * 3); m++) {
      const at = Math.floor(rand() * (s.length + 1));
      const r = rand();
      if (r < 0.3) s = s.slice(0, at) + pick(junk) + s.slice(at);
      else if (r < 0.6) s = s.slice(0, at) + s.slice(at + 1);
      else if (r < 0.8) s = s.slice(0, at);
      else s = s.slice(0, at) + pick(junk) + s.slice(at + 1);
    }
    try { JSON.parse(s); continue; } catch { /* malformed: keep it */ }
    pick(writers)(s);
  }
  for (const s of ["", " ", "null", "true", "1", '"x"', "[]", "{}", "[{}]", "NaN", "Infinity", "0x10", "{'a':1}", '{"a":1}{"b":2}', "\x00"]) {
    for (const w of writers) w(s);
  }

  // 2. wrong types, field by field, at every level
  for (const [f, k] of Object.entries(FIELDS.upstream)) for (const v of wrongValues(k)) { const d = baseUpstream(); d[f] = v; put(J(d)); putNew(J(d)); }
  for (const [f, k] of Object.entries(FIELDS.server)) {
    for (const v of wrongValues(k)) {
      const d = baseUpstream(); d.servers[0][f] = v; put(J(d));
      const s = baseServer(); s.server = "127.0.0.1:9"; s[f] = v; add(J(s));
      if (f !== "server") patch(J({ [f]: v }));
    }
  }
  for (const [f, k] of Object.entries(FIELDS.check)) for (const v of wrongValues(k)) { const d = baseUpstream(); d.check[f] = v; put(J(d)); }
  for (const v of [null, true, "1", 1.5, [], {}, -1, 0]) rollback(J({ revision: v }));
  for (const v of [["http_6xx"], [1], ["http_2xx", null], []]) { const d = baseUpstream(); d.check.type = "http"; d.check.expect_alive = v; put(J(d)); }
  for (const m of ["RR", "round robin", "LEAST_CONN", "hash "]) { const d = baseUpstream(); d.method = m; put(J(d)); }

  // 3. unknown fields at every level (and names that are close to real ones)
  put('{"__proto__":1,' + J(baseUpstream()).slice(1)); // a JS object cannot hold it as a key: written as text
  for (const name of ["bogus", "Weight", "servers ", "", "\u00e9t\u00e9", "constructor", "slow_start", "id"]) {
    const d1 = baseUpstream(); d1[name] = 1; put(J(d1));
    const d2 = baseUpstream(); d2.servers[0][name] = 1; put(J(d2));
    const d3 = baseUpstream(); d3.check[name] = 1; put(J(d3));
    add(J({ ...baseServer(), server: "127.0.0.1:9", [name]: 1 }));
    patch(J({ weight: 3, [name]: 1 }));
    rollback(J({ revision: 1, [name]: 1 }));
  }

  // 4. huge and out-of-range numbers (as literals)
  for (const [lvl, fields] of Object.entries(FIELDS)) {
    for (const [f, k] of Object.entries(fields)) {
      if (!Array.isArray(k) && k !== "seconds") continue;
      for (const t of badNumbers(k)) {
        if (lvl === "upstream") put(J({ ...baseUpstream(), [f]: "@N@" }).replace('"@N@"', t));
        if (lvl === "server") {
          const d = baseUpstream(); d.servers[1][f] = "@N@"; put(J(d).replace('"@N@"', t));
          patch(J({ [f]: "@N@" }).replace('"@N@"', t));
        }
        if (lvl === "check") { const d = baseUpstream(); d.check[f] = "@N@"; put(J(d).replace('"@N@"', t)); }
      }
    }
  }

  // 5. deep nesting: beyond the decoder's limit, and shallow enough to decode but the wrong shape
  for (const depth of [17, 64, 1000, 100000]) {
    put("[".repeat(depth) + "]".repeat(depth));
    put('{"servers":' + "[".repeat(depth) + "]".repeat(depth) + "}");
    patch('{"weight":' + '{"a":'.repeat(depth) + "1" + "}".repeat(depth) + "}");
  }
  put('{"servers":[[[[[[{"server":"127.0.0.1:1"}]]]]]]}');
  put(`{"servers":[{"server":"127.0.0.1:${a}","weight":[[[[1]]]]}]}`);

  // 6. bad UTF-8 in values, keys and around the document
  for (const bad of BAD_UTF8) {
    put(J({ ...baseUpstream(), zone: "@S@" }).replace("@S@", bad));
    put(J(baseUpstream()).replace(`127.0.0.1:${b}`, `127.0.0.1:${b}${bad}`));
    put(J(baseUpstream()).replace('"method"', `"meth${bad}od"`));
    add(J({ server: "@S@" }).replace("@S@", `host${bad}.test:80`));
    patch(J({ service: "@S@", resolve: true }).replace("@S@", bad));
    rollback(bad + J({ revision: 1 }));
    put(J({ ...baseUpstream(), method: "hash", hash_key: "@S@" }).replace("@S@", `$uri${bad}`));
  }

  // 7. values that pass the JSON checks but not the body's validation (the parser is the authority)
  for (const addr of ["127.0.0.1:0", "127.0.0.1:65536", "999.1.1.1:80", "[::1", "unix:", "a b:80", "-x-.test:80", "169.254.169.254:80", "h".repeat(300) + ":80"]) {
    put(J({ servers: [{ server: addr }] }));
    add(J({ server: addr }));
  }
  put(J({ method: "ip_hash", servers: [{ server: `127.0.0.1:${a}` }, { server: `127.0.0.1:${b}`, backup: true }] }));
  put(J({ method: "hash", servers: [{ server: `127.0.0.1:${a}` }] }));
  put(J({ method: "hash", hash_key: "$", servers: [{ server: `127.0.0.1:${a}` }] }));
  put(J({ random_two: true, servers: [{ server: `127.0.0.1:${a}` }] }));
  put(J({ servers: [{ server: `127.0.0.1:${a}`, service: "http" }] }));
  put(J({ servers: [{ server: `127.0.0.1:${a}`, backup: true }] }));
  put(J({ servers: [] }));
  put(J({ name: "other", servers: [{ server: `127.0.0.1:${a}` }] }));
  put(J({ check: { type: "tcp", http_send: "GET /" }, servers: [{ server: `127.0.0.1:${a}` }] }));
  add(J({ server: `127.0.0.1:${a}` })); // already there: 409
  patch(J({ backup: true, down: "yes" }));

  // 8. bad paths, query arguments and headers
  const body = J(baseUpstream());
  // (%00 in a path is refused by nginx itself, with its own 400 page, before any Lua runs)
  for (const name of ["a%2Fb", "%ff", "a%20b", "x".repeat(129), "..", "a%0d%0ab", "%25"]) {
    out.push(["PUT", `/v1/upstreams/${name}`, body]);
    out.push(["GET", `/v1/upstreams/${name}`]);
    out.push(["PATCH", `/v1/upstreams/fz/servers/${name}`, J({ weight: 3 })]);
    out.push(["GET", `/v1/history/${name}`]);
  }
  for (const q of ["dry_run=2", "dry_run=%ff", "dry_run=yesplease"]) out.push(["PUT", `/v1/upstreams/fz?${q}`, body]);
  for (const q of ["revision=x", "revision=-1", "revision=1e3", "revision=99999999999", "revision=999999"]) out.push(["POST", `/v1/upstreams/fz/rollback?${q}`, ""]);
  for (const q of ["limit=x", "limit=-1", "limit=1e2"]) out.push(["GET", `/v1/history?${q}`]);
  for (const h of [{ "if-match": "abc" }, { "if-match": '"999999"' }, { "if-match": "W/abc" }, { "if-match": '"99999999999999999999"' }, { "if-none-match": "*" }, { "if-none-match": '"1"' }]) {
    out.push(["PUT", "/v1/upstreams/fz", body, h]);
    out.push(["PATCH", `/v1/upstreams/fz/servers/127.0.0.1:${a}`, J({ weight: 3 }), h]);
  }
  for (const [m, p] of [["POST", "/v1/upstreams"], ["PUT", "/v1/upstreams/fz/servers"], ["POST", `/v1/upstreams/fz/servers/127.0.0.1:${a}`],
    ["GET", "/v1/upstreams/fz/rollback"], ["DELETE", "/v1/history"], ["PUT", "/v1/openapi.json"], ["GET", "/v1/upstreams/fz/servers/x/y"], ["OPTIONS", "/v1/upstreams/fz"]]) {
    out.push([m, p, ""]);
  }
  return out;
}

test("every malformed input answers 4xx with a JSON reason, the state is unchanged, no Lua error is logged", async () => {
  const put = await send("PUT", "/v1/upstreams/fz", JSON.stringify(baseUpstream()));
  assert.equal(put.status, 201, put.body);
  assert.equal((await send("POST", "/upstream/fz2", `server 127.0.0.1:${a};`)).status, 200);
  const before = await state();
  const all = cases();
  assert.ok(all.length > 800, `${all.length} cases`);
  const statuses = {};
  // 8 at a time: the workers also see concurrent bad input
  for (let i = 0; i < all.length; i += 8) {
    await Promise.all(all.slice(i, i + 8).map(async ([method, p, body, headers]) => {
      const r = await send(method, p, body, headers);
      const what = `${method} ${p} ${JSON.stringify(body)?.slice(0, 1500)} -> ${r.status} ${r.body.slice(0, 200)}`;
      assert.ok(r.status >= 400 && r.status < 500, what);
      assert.match(r.headers["content-type"] ?? "", /^application\/json/, what);
      const j = JSON.parse(r.body);
      assert.equal(j.status, r.status, what);
      assert.ok(typeof j.reason === "string" && j.reason.length > 0, what);
      statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    }));
  }
  console.log(`# ${all.length} inputs: ${JSON.stringify(statuses)}`);
  assert.deepEqual(await state(), before, "the state is unchanged");
  // the plain protocol's rollback with bad arguments: 4xx, a reason, nothing changed
  for (const q of ["x", "-1", "", "99999999", "1.5"]) {
    const r = await send("POST", `/upstream/fz?rollback=${q}`);
    assert.ok(r.status >= 400 && r.status < 500 && r.body.length > 0, `rollback=${q}: ${r.status} ${r.body}`);
  }
  assert.deepEqual(await state(), before, "the state is unchanged");
  const log = ng.errorLog();
  assert.doesNotMatch(log, /runtime error|lua entry thread aborted|stack traceback|\[alert\]|\[crit\]|\[emerg\]/);
});
