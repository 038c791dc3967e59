// The product image itself: the rendered nginx config (ports, loopback-only interface, modules for the runtime found),
// `nginx -t` on it, what the image contains, and the entrypoint's runtime detection on an OpenResty layout.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { productImage, freePorts } from "./lib.mjs";

/** docker run --rm on the host network; returns { code, out } (stdout + stderr) */
async function run(args, env = {}) {
  const image = await productImage();
  const e = Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
  const r = spawnSync("docker", ["run", "--rm", "--network", "host", "--label", "org.dyups.test-run=" + (process.env.DYUPS_TEST_RUN ?? ""), ...e, ...args.pre ?? [], image, ...args.cmd ?? []], { encoding: "utf8" });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** the config without comments and trailing blanks */
const code = (out) => out.split("\n").map((l) => l.replace(/#.*$/, "").trimEnd()).filter(Boolean).join("\n");

test("the rendered config: ports from the environment, interface on 127.0.0.1 only, demo backends, init options", async () => {
  const [proxy, api, b1, b2] = await freePorts(4);
  const r = await run({ cmd: ["render"] }, { PROXY_PORT: proxy, API_PORT: api, DEMO_BACKENDS: `${b1} ${b2}`, WORKERS: 3 });
  assert.equal(r.code, 0, r.out);
  const out = code(r.out);
  assert.match(out, new RegExp(`listen 127\\.0\\.0\\.1:${proxy};`));
  assert.match(out, new RegExp(`listen 127\\.0\\.0\\.1:${api};\\s+client_max_body_size`));
  assert.match(out, new RegExp(`server \\{ listen 127\\.0\\.0\\.1:${b1}; location / \\{ return 200 "${b1}"; \\} \\}`));
  assert.match(out, new RegExp(`server \\{ listen 127\\.0\\.0\\.1:${b2}; location / \\{ return 200 "${b2}"; \\} \\}`));
  assert.match(out, /^worker_processes 3;$/m);
  assert.match(out, /^daemon off;$/m);
  assert.match(out, /^error_log stderr /m);
  assert.match(out, /require\("dyups"\)\.init\(\{ upstream_conf = "[^"]+upstream\.conf", state_file = "\/var\/lib\/dyups\/state\.json" \}\)/);
  assert.match(out, /include \/usr\/local\/share\/dyups\/dyups\.conf;/);
  // every listen is on loopback
  const listens = [...out.matchAll(/\blisten\s+([^;]+);/g)].map((m) => m[1]);
  assert.ok(listens.length >= 4);
  for (const l of listens) assert.match(l, /^127\.0\.0\.1:\d+$/);
  assert.doesNotMatch(out, /\$\{[A-Z_]+\}/, "every ${NAME} was replaced");
});

test("STATE_FILE and UPSTREAM_CONF empty: init() gets neither option; no demo backends", async () => {
  const r = await run({ cmd: ["render"] }, { STATE_FILE: "", UPSTREAM_CONF: "", DEMO_BACKENDS: "" });
  assert.equal(r.code, 0, r.out);
  const out = code(r.out);
  assert.match(out, /require\("dyups"\)\.init\(\{ \}\)/);
  assert.doesNotMatch(out, /return 200/);
});

test("nginx -t passes on the rendered config of this image's runtime", async () => {
  const [proxy, api, b1, b2] = await freePorts(4);
  const { code, out } = await run({ cmd: ["-t"] }, { PROXY_PORT: proxy, API_PORT: api, DEMO_BACKENDS: `${b1} ${b2}` });
  assert.equal(code, 0, out);
  assert.match(out, /test is successful/);
});

test("the runtime's Lua module: load_module lines exactly when the image has Debian's dynamic module", async () => {
  const probe = await run({ pre: ["--entrypoint", "sh"], cmd: ["-c", "test -f /usr/lib/nginx/modules/ngx_http_lua_module.so && ! test -x /usr/local/openresty/bin/openresty && echo debian || echo openresty"] });
  const out = code((await run({ cmd: ["render"] })).out);
  if (probe.out.trim() === "debian") {
    assert.match(out, /^load_module \/usr\/lib\/nginx\/modules\/ndk_http_module\.so;$/m);
    assert.match(out, /^load_module \/usr\/lib\/nginx\/modules\/ngx_http_lua_module\.so;$/m);
  } else {
    assert.doesNotMatch(out, /^load_module/m);
  }
});

test("on an OpenResty layout the entrypoint uses openresty and adds no load_module", async () => {
  // a stand-in /usr/local/openresty/bin/openresty that answers -v/-V like OpenResty's (ngx_lua built in)
  const fake = [
    "mkdir -p /usr/local/openresty/bin",
    "printf '#!/bin/sh\\necho \"nginx version: openresty/1.25.3.2\" >&2\\n[ \"$1\" = -V ] && echo \"configure arguments: --prefix=/usr/local/openresty/nginx --add-module=../ngx_lua-0.10.26\" >&2\\nexit 0\\n' > /usr/local/openresty/bin/openresty",
    "chmod +x /usr/local/openresty/bin/openresty",
    "dyups-entrypoint render >/tmp/conf && grep -c '^load_module' /tmp/conf; dyups-entrypoint -t",
  ].join(" && ");
  const { out } = await run({ pre: ["--entrypoint", "sh"], cmd: ["-c", fake] });
  assert.match(out, /^0$/m, `no load_module line: ${out}`);
  assert.match(out, /openresty\/1\.25\.3\.2, proxy 127\.0\.0\.1:8080/, out); // the banner of the exec'd openresty
});

test("the image holds the compiled Lua and no Node", async () => {
  const { code, out } = await run({ pre: ["--entrypoint", "sh"], cmd: ["-c", "test -f /usr/local/share/lua/5.1/dyups/init.lua && test -f /usr/local/share/lua/5.1/ngx/dyups.lua && test -f /usr/local/share/dyups/dyups.conf && ! command -v node && ! command -v npm && ! find / -xdev \\( -name node_modules -o -name '*.ts' -o -name 'node' -type f \\) -print | grep -q . && echo fine"] });
  assert.equal(code, 0, out);
  assert.match(out, /^fine$/m);
});
