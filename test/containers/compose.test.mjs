// `make compose` as the README shows it (section "Containers"): the one command that brings the docker-compose
// example up with no registry (engine, local base image, release tarball, image, up), then the README's curl lines
// right after it, run as written (with this run's ports), then the README's `docker-compose down -v`.
// Its own project name, ports and image tag, so it cannot collide with another run or with a user's compose.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, RUN, freePorts } from "./lib.mjs";

const PROJECT = `dyups-ct-${RUN}-compose`.toLowerCase().replace(/[^a-z0-9_-]/g, "");
const TAG = `${process.env.DYUPS_IMAGE ?? process.env.DYUPS_IMAGE_TAG ?? "dyups:containers-test"}-compose`;
const BASE = process.env.DYUPS_BASE_IMAGE ?? "dyups-base:bookworm";
let env, ports, up = false;
/** the token file's folder for this run (docker-compose.yml mounts $DYUPS_SECRETS) */
const secrets = mkdtempSync(path.join(tmpdir(), "dyups-ct-secrets-"));
// the Dockerfile's dist stage images left untagged (dangling) by builds; those that appear during this test are ours
const distStages = () => new Set(spawnSync("docker", ["images", "-q", "--no-trunc", "--filter", "dangling=true",
  "--filter", "label=org.dyups.stage=dist"], { encoding: "utf8" }).stdout.split(/\s+/).filter(Boolean));
let stagesBefore = new Set();

function run(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { cwd: ROOT, env, encoding: "utf8", maxBuffer: 64 << 20, ...opts });
}
const compose = () => (spawnSync("docker-compose", ["version"]).status === 0 ? ["docker-compose"] : ["docker", "compose"]);

/** the README's fenced block that starts with `make compose`: its curl lines and its last (down) line */
function readmeBlock() {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  const block = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]).find((b) => /^make compose\b/m.test(b));
  assert.ok(block, "README.md has a ```sh block with `make compose`");
  const lines = block.split("\n").map((l) => l.replace(/\s+#.*$/, "").trim()).filter(Boolean);
  return { lines, auth: lines.find((l) => l.startsWith("AUTH=")), curls: lines.filter((l) => l.startsWith("curl ")) };
}
/** the README's example ports -> this run's */
function localize(line) {
  const [proxy, api, b1, b2] = ports;
  return line.replace(/\bsecrets\/admin-tokens\b/g, path.join(secrets, "admin-tokens")).replace(/127\.0\.0\.1:8080\b/g, `127.0.0.1:${proxy}`).replace(/127\.0\.0\.1:8081\b/g, `127.0.0.1:${api}`)
    .replace(/127\.0\.0\.1:8088\b/g, `127.0.0.1:${b1}`).replace(/127\.0\.0\.1:8089\b/g, `127.0.0.1:${b2}`);
}

before(async () => {
  stagesBefore = distStages();
  ports = await freePorts(4);
  const [proxy, api, b1, b2] = ports;
  env = {
    ...process.env, COMPOSE_PROJECT_NAME: PROJECT, DYUPS_IMAGE: TAG, BASE_IMAGE: BASE,
    PROXY_PORT: String(proxy), API_PORT: String(api), DEMO_BACKENDS: `${b1} ${b2}`, WORKERS: "2",
    DYUPS_SECRETS: secrets,
  };
});

after(() => {
  if (up) run(compose()[0], [...compose().slice(1), "down", "-v", "--timeout", "5"]);
  run("docker", ["rmi", TAG]); // the tag (and the image, unless the product image has the same id)
  for (const id of distStages()) if (!stagesBefore.has(id)) run("docker", ["rmi", id]);
  rmSync(secrets, { recursive: true, force: true });
});

test("make compose brings the example up; the README's curl lines work against it; docker-compose down -v removes it", () => {
  const { lines, auth, curls } = readmeBlock();
  assert.equal(curls.length, 5, `the README's curl lines: ${curls.join(" | ")}`);
  assert.ok(auth, "the README's block reads the admin token into AUTH");
  const t0 = Date.now();
  const r = run("make", ["-s", "compose"], { timeout: 600_000 });
  up = true;
  assert.equal(r.status, 0, `make compose failed:\n${r.stdout}\n${r.stderr}`);
  console.log(`# make compose: up in ${Date.now() - t0} ms`);

  const [proxy, , b1, b2] = ports;
  const out = curls.map((line) => {
    const c = run("sh", ["-c", `${localize(auth)}; ${localize(line)}`], { timeout: 20_000 });
    assert.equal(c.status, 0, `${localize(line)}: ${c.stderr}`);
    return [line, c.stdout];
  });
  for (const [line, body] of out) {
    if (/\/list$/.test(line)) assert.equal(body, "host1\nhost2\n", line);
    else if (/-H "Host: dyhost"/i.test(line)) assert.ok([String(b1), String(b2)].includes(body), `${line}: ${body}`);
    else if (/ -d "/.test(line)) assert.equal(body, "success", line);
    else if (/-X DELETE/.test(line)) assert.equal(body, "success", line);
    else if (/\/status$/.test(line)) assert.match(JSON.parse(body).dyups_version, /^\d+\.\d+\.\d+$/, line);
    else assert.fail(`a curl line the test does not know: ${line}`);
  }
  // after the DELETE the proxy answers 502 again
  const gone = run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: dyhost", `127.0.0.1:${proxy}`]);
  assert.equal(gone.stdout, "502");

  // the runtime image: what dyups adds to the base, and no Node (its layers are a few hundred KB)
  const size = (img) => Number(run("docker", ["image", "inspect", "-f", "{{.Size}}", img]).stdout.trim());
  const [img, base] = [size(TAG), size(BASE)];
  console.log(`# image ${TAG}: ${(img / 1e6).toFixed(1)} MB, base ${BASE}: ${(base / 1e6).toFixed(1)} MB, dyups adds ${((img - base) / 1e3).toFixed(0)} KB`);
  assert.ok(img - base < 2e6, `dyups adds ${img - base} bytes to the base image`);

  const down = lines.find((l) => /^docker-compose down\b/.test(l));
  assert.ok(down, "the README's block ends with docker-compose down");
  const d = run("sh", ["-c", down.replace(/^docker-compose/, compose().join(" "))], { timeout: 60_000 });
  assert.equal(d.status, 0, d.stderr);
  up = false;
  const left = run("docker", ["ps", "-aq", "--filter", `label=com.docker.compose.project=${PROJECT}`]).stdout.trim();
  assert.equal(left, "", "no container of the project is left");
  const vols = run("docker", ["volume", "ls", "-q", "--filter", `name=${PROJECT}_`]).stdout.trim();
  assert.equal(vols, "", "its state volume is removed");
});
