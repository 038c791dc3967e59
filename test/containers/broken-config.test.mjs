// A broken upstream_conf makes the container fail fast, with a log line that names the file and the line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startDyups } from "./lib.mjs";

const CASES = [
  ["a server without its ';'", "upstream good { server 127.0.0.1:8088; }\n# a comment\nupstream bad { server 127.0.0.1:8089 }\n", 3],
  ["an unknown parameter", "upstream good { server 127.0.0.1:8088; }\n\n\nupstream bad {\n    server 127.0.0.1:8089 bogus=1;\n}\n", 5],
  ["an unterminated block", "upstream good { server 127.0.0.1:8088; }\nupstream bad {\n  server 127.0.0.1:8089;\n", null],
];

for (const [what, conf, line] of CASES) {
  test(`upstream_conf with ${what}: the container exits fast and names file${line ? " and line" : ""}`, async (t) => {
    const t0 = Date.now();
    const d = await startDyups({ workers: 2, upstreamConf: conf, expectFailure: true, startupTimeout: 15_000 });
    const ms = Date.now() - t0;
    const logs = d.logs();
    assert.equal(d.running, false, `the container must have exited; logs:\n${logs}`);
    assert.notEqual(d.exitCode, 0, `non-zero exit; logs:\n${logs}`);
    assert.ok(ms < 10_000, `failed within 10 s (took ${ms} ms)`);
    console.log(`# exited with ${d.exitCode} after ${d.ranMs} ms`);
    const named = logs.split("\n").filter((l) => l.includes("/etc/dyups/upstream.conf"));
    assert.ok(named.length > 0, `a log line names /etc/dyups/upstream.conf; logs:\n${logs}`);
    if (line) {
      const re = new RegExp(`/etc/dyups/upstream\\.conf(:| line |, line | at line |:line )${line}\\b`);
      assert.ok(named.some((l) => re.test(l)), `a log line names /etc/dyups/upstream.conf and line ${line}; logs:\n${logs}`);
    }
  });
}

test("a missing upstream_conf file fails fast too", async () => {
  const d = await startDyups({ workers: 1, env: { UPSTREAM_CONF: "/etc/dyups/nope.conf" }, expectFailure: true });
  assert.equal(d.running, false);
  assert.notEqual(d.exitCode, 0);
  assert.match(d.logs(), /nope\.conf/);
});
