// The vertical slice with 2 workers: create an upstream through the interface, proxy through it, delete it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startNginx } from "./harness.mjs";

let ng;
before(async () => { ng = await startNginx({ workers: 2, backends: 2 }); });
after(async () => { await ng?.stop(); });

test("unknown upstream is 502 before it exists", async () => {
  const r = await ng.proxy("dyhost");
  assert.equal(r.status, 502);
});

test("POST creates it; every request after the 200 routes by it on both workers, round robin", async () => {
  const [a, b] = ng.backendPorts;
  const r = await ng.post("/upstream/dyhost", `server 127.0.0.1:${a}; server 127.0.0.1:${b};`);
  assert.equal(r.status, 200);
  assert.equal(r.body, "success");
  const seen = { [a]: 0, [b]: 0 };
  for (let i = 0; i < 40; i++) {
    const p = await ng.proxy("dyhost");
    assert.equal(p.status, 200, `request ${i}: ${p.status} ${p.body}`);
    seen[p.body] += 1;
  }
  assert.ok(seen[a] >= 15 && seen[b] >= 15, JSON.stringify(seen));
});

test("GET /upstream/NAME and /list show it", async () => {
  const [a, b] = ng.backendPorts;
  const u = await ng.get("/upstream/dyhost");
  assert.equal(u.status, 200);
  assert.equal(u.body, `server 127.0.0.1:${a}\nserver 127.0.0.1:${b}\n`);
  const l = await ng.get("/list");
  assert.equal(l.body, "dyhost\n");
});

test("DELETE removes it: 200 success, then 502 through the proxy and 404 on a second delete", async () => {
  const d = await ng.del("/upstream/dyhost");
  assert.equal(d.status, 200);
  assert.equal(d.body, "success");
  for (let i = 0; i < 10; i++) assert.equal((await ng.proxy("dyhost")).status, 502);
  const d2 = await ng.del("/upstream/dyhost");
  assert.equal(d2.status, 404);
  assert.equal(d2.body, "not found uptream");
});

test("the Lua API (dyups and ngx.dyups) returns status and message like the original", async () => {
  await ng.stop();
  ng = await startNginx({
    workers: 2,
    serverExtra: `location = /lua { content_by_lua_block {
      local dyups = require "ngx.dyups"
      local d2 = require "dyups"
      ngx.print(tostring(dyups == d2), " ")
      ngx.print(dyups.update("luaup", "server 127.0.0.1:18088;"))
      ngx.print(" ", dyups.update("luaup", "server 127.0.0.1:1 bogus=1;"))
      ngx.print(" ", dyups.delete("luaup"))
      ngx.print(" ", dyups.delete("luaup"))
      ngx.print(" ", pcall(dyups.update, "x"))
    } }`,
  });
  const r = await ng.get("/lua");
  assert.match(r.body, /^true 200success 400add server failed: .*bogus=1.* 200success 404not found uptream false.*exactly 2 arguments expected/);
});
