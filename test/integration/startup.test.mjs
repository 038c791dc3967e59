// Start-up: upstream_conf loaded, listed, replaced and deleted like the others; a broken file, a bad option
// or a missing shared dict stop nginx with a clear message; the Lua API works from init_worker.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { startNginx, startNginxExpectFailure } from "./harness.mjs";

const started = [];
after(async () => { for (const ng of started) await ng.stop(); });

test("upstream_conf: listed in file order, proxied, replaceable and deletable", async () => {
  const ng = await startNginx({ workers: 2, backends: 2, upstreamConf: "upstream seed { server 127.0.0.1:1; }" });
  started.push(ng);
  const [a, b] = ng.backendPorts;
  await ng.stop();
  const conf = `upstream host1 { server 127.0.0.1:${a}; }\nupstream host2 {\n  server 127.0.0.1:${b} weight=2;\n}\n`;
  // same backends ports are free again only by chance; use the harness's own backends via a fixed prefix
  const ng2 = await startNginx({ workers: 2, backends: 0, upstreamConf: conf,
    httpExtra: `server { listen 127.0.0.1:${a}; return 200 "${a}"; } server { listen 127.0.0.1:${b}; return 200 "${b}"; }` });
  started.push(ng2);
  assert.equal((await ng2.get("/list")).body, "host1\nhost2\n");
  assert.equal((await ng2.proxy("host1")).body, String(a));
  assert.equal((await ng2.proxy("host2")).body, String(b));
  assert.equal((await ng2.post("/upstream/host1", `server 127.0.0.1:${b};`)).status, 200);
  assert.equal((await ng2.proxy("host1")).body, String(b));
  assert.equal((await ng2.del("/upstream/host2")).status, 200);
  assert.equal((await ng2.get("/list")).body, "host1\n");
});

test("a broken upstream_conf stops nginx with the file and line", async () => {
  const out = await startNginxExpectFailure({ upstreamConf: "upstream ok { server 127.0.0.1:1; }\n\nupstream bad {\n  server 127.0.0.1:1 bogus=1;\n}\n" });
  assert.match(out, /upstream\.conf:4: invalid parameter "bogus=1"/);
});

test("a bad option stops nginx with the reason", async () => {
  const out = await startNginxExpectFailure({ init: { sync_interval: "fast" } });
  assert.match(out, /dyups: bad option: option "sync_interval" must be a number/);
  const out2 = await startNginxExpectFailure({ init: { no_such_option: 1 } });
  assert.match(out2, /unknown option "no_such_option"/);
});

test("a missing shared dict stops nginx with a clear message", async () => {
  const out = await startNginxExpectFailure({ init: { dict: "absent" } });
  assert.match(out, /lua_shared_dict "absent" is not declared/);
});

test("the Lua API works from init_worker_by_lua", async () => {
  const ng = await startNginx({ workers: 2, backends: 1,
    initWorkerExtra: `if ngx.worker.id() == 0 then local s, m = require("ngx.dyups").update("fromiw", "server 127.0.0.1:1;"); ngx.log(ngx.NOTICE, "iw update: ", s, " ", m) end` });
  started.push(ng);
  assert.match(ng.errorLog(), /iw update: 200 success/);
  assert.equal((await ng.get("/upstream/fromiw")).body, "server 127.0.0.1:1\n");
});
