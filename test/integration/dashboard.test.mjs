// The status page GET /dashboard (issue 18) in a real browser: Debian's Chromium, headless, driven by
// puppeteer-core (never a browser download), with a fresh profile. It loads with nothing from outside (every
// request the page makes is to the interface), shows each worker's applied version, shows an upstream a POST
// created within 2 s, shows a dead peer as failing and the traffic's rates, finds one upstream among 2 000 by
// name, and, with tokens configured, asks for them (Basic, the token as password) and is read-only for a read
// token. A write token gets the per-server actions of the JSON API on each peer row: drain (traffic stops going
// to the peer), weight (typed text survives the refresh), down; a refused write (400, 403 behind a proxy that
// rewrites Host) shows the API's status and reason. The run saves screenshots to artifacts/dashboard.png and
// artifacts/dashboard-actions.png (ignored by git).
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import http from "node:http";
import { startNginx, freePorts, sleep, request, ROOT } from "./harness.mjs";
import { launchChromium } from "../lib/chromium.mjs";

/**
 * A page, in a browser context of its own, that records what it requested and every error it reported.
 * close() closes the context, and with it the browser's connections (nginx then stops at once: it waits for
 * open connections).
 */
async function openPage(browser, url, credentials) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const requests = [];
  const writes = [];
  const errors = [];
  page.on("request", (r) => {
    requests.push(r.url());
    if (r.method() !== "GET") writes.push({ method: r.method(), url: r.url(), headers: r.headers(), body: r.postData() });
  });
  // "mark down" and "drain" ask first: accepted unless the test says dismissNext
  const dialogs = [];
  const out = { dismissNext: false };
  page.on("dialog", async (d) => {
    dialogs.push(d.message());
    if (out.dismissNext) { out.dismissNext = false; await d.dismiss(); } else await d.accept();
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  if (credentials) await page.authenticate(credentials);
  const res = await page.goto(url, { waitUntil: "domcontentloaded" });
  return Object.assign(out, { page, requests, writes, errors, dialogs, res, close: () => context.close() });
}

let ng, chromium, deadPort, view;

before(async () => { chromium = await launchChromium(); });
after(async () => { await chromium?.close(); });

describe("GET /dashboard in Chromium", () => {
  before(async () => {
    [deadPort] = await freePorts(1);
    ng = await startNginx({ workers: 2 });
    const [b1, b2] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/web", `server 127.0.0.1:${b1} weight=2; server 127.0.0.1:${b2}; server 127.0.0.1:${b2} backup;`)).status, 200);
    view = await openPage(chromium.browser, `http://127.0.0.1:${ng.apiPort}/dashboard`);
  });
  after(async () => {
    await view?.close();
    await ng?.stop();
  });

  test("loads with nothing from outside and shows each worker's applied version", async () => {
    const { page, requests, errors, res } = view;
    assert.equal(res.status(), 200);
    assert.match(res.headers()["content-security-policy"], /default-src 'none'/);
    await page.waitForFunction(() => document.querySelectorAll("tr[data-worker]").length === 2, { timeout: 5000 });
    const status = JSON.parse((await ng.get("/status")).body);
    const applied = await page.$$eval("tr[data-worker] td:nth-child(3)", (tds) => tds.map((td) => Number(td.textContent)));
    assert.deepEqual(applied, [status.version, status.version]);
    assert.equal(await page.$eval("#version", (e) => e.textContent), String(status.version));
    const origin = `http://127.0.0.1:${ng.apiPort}/`;
    assert.deepEqual(requests.filter((u) => !u.startsWith(origin)), [], "every request goes to the interface");
    assert.ok(requests.some((u) => u.startsWith(`${origin}stats?`)), "it polls /stats");
    assert.deepEqual(errors, []);
  });

  test("an upstream created by a POST appears within 2 s", async () => {
    const { page } = view;
    const [, b2] = ng.backendPorts;
    const t0 = Date.now();
    assert.equal((await ng.post("/upstream/Added-Later", `server 127.0.0.1:${b2};`)).status, 200);
    await page.waitForSelector('tr[data-upstream="added-later"].upstream', { timeout: 2000 });
    const ms = Date.now() - t0;
    assert.ok(ms < 2000, `${ms} ms`);
    assert.match(await page.$eval('tr[data-upstream="added-later"].upstream', (tr) => tr.textContent), /Added-Later/);
  });

  test("a dead peer is shown as failing; traffic shows up as rates; backups and weights as configured", async () => {
    const { page } = view;
    const [b1] = ng.backendPorts;
    assert.equal((await ng.post("/upstream/flaky", `server 127.0.0.1:${b1}; server 127.0.0.1:${deadPort};`)).status, 200);
    let traffic = true;
    const load = (async () => {
      while (traffic) {
        await Promise.all([ng.proxy("flaky"), ng.proxy("web"), ng.proxy("web")]);
        await sleep(10);
      }
    })();
    try {
      const dead = `tr[data-upstream="flaky"][data-peer="127.0.0.1:${deadPort}"]`;
      await page.waitForSelector(`${dead}[data-state="failing"]`, { timeout: 3000 });
      assert.equal(await page.$eval(`tr[data-upstream="flaky"][data-peer="127.0.0.1:${b1}"]`, (tr) => tr.dataset.state), "up");
      // rates need two polls after the counters were published (about a second each)
      await page.waitForFunction(() => {
        const cell = document.querySelector('tr.upstream[data-upstream="web"] td:nth-child(4)');
        return cell && Number(cell.textContent) > 0;
      }, { timeout: 5000 });
      const states = await page.$$eval('tr.peer[data-upstream="web"]', (trs) => trs.map((tr) => [tr.dataset.peer, tr.dataset.state, tr.children[1].textContent]));
      const [, b2] = ng.backendPorts;
      // the address listed twice (primary and backup) is one peer: weights summed, not a backup
      assert.deepEqual(states, [[`127.0.0.1:${b1}`, "up", "2"], [`127.0.0.1:${b2}`, "up", "2"]]);
      mkdirSync(path.join(ROOT, "artifacts"), { recursive: true });
      await page.screenshot({ path: path.join(ROOT, "artifacts/dashboard.png") });
    } finally {
      traffic = false;
      await load;
    }
  });

  test("search by name finds one upstream among 2 000", async () => {
    const { page } = view;
    const [b1] = ng.backendPorts;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < 2000) {
        const i = next++;
        const status = await new Promise((resolve, reject) => {
          const body = `server 127.0.0.1:${b1};`;
          const r = http.request({ host: "127.0.0.1", port: ng.apiPort, method: "POST", path: `/upstream/bulk-${i}`, agent,
            headers: { "content-length": Buffer.byteLength(body) } }, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)); });
          r.on("error", reject);
          r.end(body);
        });
        assert.equal(status, 200);
      }
    }));
    agent.destroy();
    await page.waitForFunction(() => /of 20\d\d$/.test(document.getElementById("range").textContent), { timeout: 5000 });
    assert.equal(await page.$$eval("tr.upstream", (trs) => trs.length), 100); // one page
    await page.type("#search", "bulk-1234");
    await page.waitForFunction(() => document.getElementById("range").textContent.startsWith("1-1 of 1 "), { timeout: 3000 });
    assert.deepEqual(await page.$$eval("tr.upstream", (trs) => trs.map((tr) => tr.dataset.upstream)), ["bulk-1234"]);
    await page.$eval("#search", (e) => { e.value = ""; e.dispatchEvent(new Event("input")); });
  });
});

describe("GET /dashboard with tokens", () => {
  const READ = "read-token-0123456789abcdef";
  let tng;
  before(async () => {
    tng = await startNginx({
      workers: 1, init: { admin_tokens: [{ token: READ, role: "read", name: "viewer" }, { token: "write-token-0123456789abcdef", role: "write", name: "ops" }] },
      serverExtra: `location /dyups/ { content_by_lua_block { require("dyups").interface({ prefix = "/dyups/" }) } }`,
    });
  });
  after(async () => { await tng?.stop(); });

  test("without credentials: 401 with a Basic challenge (browsers ask); a read token as the password: the read-only page", async () => {
    const r = await request(tng.apiPort, "GET", "/dashboard");
    assert.equal(r.status, 401);
    assert.equal(r.headers["www-authenticate"], 'Basic realm="dyups", charset="UTF-8"');
    // other resources keep the Bearer challenge alone
    assert.equal((await request(tng.apiPort, "GET", "/list")).headers["www-authenticate"], 'Bearer realm="dyups"');
    const { page, errors, res, close } = await openPage(chromium.browser, `http://127.0.0.1:${tng.apiPort}/dashboard`, { username: "viewer", password: READ });
    assert.equal(res.status(), 200);
    await page.waitForFunction(() => document.querySelectorAll("tr[data-worker]").length === 1, { timeout: 5000 });
    assert.equal(await page.$eval("#role", (e) => e.dataset.role), "read");
    assert.equal(await page.$eval("#role", (e) => e.textContent), "read-only");
    // no control at all, and no actions column
    assert.equal(await page.$$eval("main button[data-action]", (b) => b.length), 0);
    assert.equal(await page.$$eval("main td.act input, main td.act button", (b) => b.length), 0);
    assert.equal(await page.$eval("#ups th.act", (th) => getComputedStyle(th).display), "none");
    assert.deepEqual(errors, []);
    await close();
    // the same credentials work for scripts (curl -u viewer:TOKEN)
    const basic = `Basic ${Buffer.from(`viewer:${READ}`).toString("base64")}`;
    assert.equal((await request(tng.apiPort, "GET", "/stats", { headers: { authorization: basic } })).status, 200);
    assert.equal((await request(tng.apiPort, "POST", "/upstream/x", { headers: { authorization: basic }, body: "server 127.0.0.1:1;" })).status, 403);
    const wrong = `Basic ${Buffer.from("viewer:nope").toString("base64")}`;
    assert.equal((await request(tng.apiPort, "GET", "/stats", { headers: { authorization: wrong } })).status, 401);
  });

  test("under a prefix location the page reads the stats next to it (/dyups/dashboard -> /dyups/stats)", async () => {
    const { page, requests, errors, close } = await openPage(chromium.browser, `http://127.0.0.1:${tng.apiPort}/dyups/dashboard`, { username: "viewer", password: READ });
    try {
      await page.waitForFunction(() => document.getElementById("conn").className === "ok", { timeout: 5000 });
      assert.ok(requests.some((u) => u.startsWith(`http://127.0.0.1:${tng.apiPort}/dyups/stats?`)));
      assert.deepEqual(errors, []);
    } finally { await close(); }
  });
});

describe("per-server actions from the page (a write token)", () => {
  const READ = "read-token-0123456789abcdef";
  const WRITE = "write-token-0123456789abcdef";
  const bearer = (t) => ({ headers: { authorization: `Bearer ${t}` } });
  let wng, b1, b2, view;
  const row = (peer) => `tr.peer[data-upstream="shop"][data-peer="127.0.0.1:${peer}"]`;
  const server = async (peer) => JSON.parse((await wng.get(`/v1/upstreams/shop/servers/127.0.0.1:${peer}`, bearer(READ))).body);
  /** the backends that answered n requests to shop (each answers its own port) */
  const answers = async (n) => {
    const out = new Set();
    for (let i = 0; i < n; i++) out.add((await wng.proxy("shop")).body);
    return [...out].sort();
  };

  before(async () => {
    wng = await startNginx({
      workers: 2, init: { admin_tokens: [{ token: READ, role: "read", name: "viewer" }, { token: WRITE, role: "write", name: "ops" }] },
      // a reverse proxy that rewrites Host: the interface cannot tell the page's Origin is its own
      serverExtra: "location /behind-proxy/ { rewrite ^/behind-proxy(/.*)$ $1 break; proxy_pass http://127.0.0.1:$server_port; proxy_set_header Host dyups.internal; }",
    });
    [b1, b2] = wng.backendPorts;
    assert.equal((await wng.post("/upstream/shop", `server 127.0.0.1:${b1}; server 127.0.0.1:${b2};`, bearer(WRITE))).status, 200);
    view = await openPage(chromium.browser, `http://127.0.0.1:${wng.apiPort}/dashboard`, { username: "ops", password: WRITE });
    await view.page.waitForSelector(`${row(b2)} button[data-action="drain"]`, { timeout: 5000 });
  });
  after(async () => {
    await view?.close();
    await wng?.stop();
  });

  test("drain from the page: the API shows drain true, traffic stops going to the peer, the history names the token; undrain", async () => {
    const { page, errors, writes } = view;
    assert.equal(await page.$eval("#role", (e) => e.dataset.role), "write");
    assert.deepEqual(await answers(20), [String(b1), String(b2)]);
    const etag = (await wng.get("/v1/upstreams/shop", bearer(READ))).headers.etag;
    await page.click(`${row(b2)} button[data-action="drain"]`);
    await page.waitForSelector(`${row(b2)}[data-state="drained"] button[data-action="undrain"]`, { timeout: 3000 });
    // it asked first (accepted here), then sent one PATCH of the JSON API, If-Match the revision the page showed
    assert.match(view.dialogs.at(-1), new RegExp(`^Drain 127\\.0\\.0\\.1:${b2} in shop\\? It gets no new requests`));
    assert.equal(writes.length, 1);
    assert.equal(writes[0].method, "PATCH");
    assert.equal(writes[0].url, `http://127.0.0.1:${wng.apiPort}/v1/upstreams/shop/servers/127.0.0.1%3A${b2}`);
    assert.equal(writes[0].headers["if-match"], etag);
    assert.deepEqual(JSON.parse(writes[0].body), { drain: true });
    assert.equal(await page.$eval(`${row(b2)} .msg`, (e) => e.textContent), "drained");
    assert.equal((await server(b2)).drain, true);
    assert.deepEqual(await answers(20), [String(b1)], "no new request goes to the drained peer");
    assert.match(await page.$eval('tr.upstream[data-upstream="shop"]', (tr) => tr.children[2].textContent), /^1\/2 up$/);
    // the page's write went through the gate with the browser's credentials: the write token
    const hist = JSON.parse((await wng.get("/v1/history/shop?limit=1", bearer(READ))).body).history[0];
    assert.equal(hist.source.token, "ops");
    mkdirSync(path.join(ROOT, "artifacts"), { recursive: true });
    await page.screenshot({ path: path.join(ROOT, "artifacts/dashboard-actions.png") });
    await page.click(`${row(b2)} button[data-action="undrain"]`);
    await page.waitForSelector(`${row(b2)}[data-state="up"] button[data-action="drain"]`, { timeout: 3000 });
    assert.equal((await server(b2)).drain, false);
    assert.deepEqual(await answers(20), [String(b1), String(b2)]);
    assert.deepEqual(errors, []);
  });

  test("set a weight: what is typed survives the refresh, Enter sets it", async () => {
    const { page } = view;
    const input = `${row(b1)} input.weight`;
    assert.equal(await page.$eval(input, (e) => e.value), "1");
    await page.click(input, { clickCount: 3 });
    await page.type(input, "5");
    await sleep(2300); // two refreshes
    assert.deepEqual(await page.$eval(input, (e) => [e.value, document.activeElement === e]), ["5", true]);
    await page.keyboard.press("Enter");
    await page.waitForFunction((sel) => document.querySelector(sel).children[1].textContent === "5", { timeout: 3000 }, row(b1));
    assert.equal((await server(b1)).weight, 5);
    assert.equal(await page.$eval(`${row(b1)} .msg`, (e) => e.textContent), "weight set to 5");
  });

  test("mark down asks first: dismissed, nothing is sent; accepted, the server is down; up asks nothing", async () => {
    const { page, writes, dialogs } = view;
    const w0 = writes.length, d0 = dialogs.length;
    view.dismissNext = true;
    await page.click(`${row(b1)} button[data-action="down"]`);
    await sleep(300);
    assert.equal(dialogs.length, d0 + 1);
    assert.match(dialogs[d0], new RegExp(`^Mark 127\\.0\\.0\\.1:${b1} down in shop\\?`));
    assert.equal(writes.length, w0, "a dismissed confirmation sends nothing");
    assert.equal((await server(b1)).down, false);
    await page.click(`${row(b1)} button[data-action="down"]`);
    await page.waitForSelector(`${row(b1)}[data-state="down"] button[data-action="up"]`, { timeout: 3000 });
    assert.equal((await server(b1)).down, true);
    assert.deepEqual(await answers(10), [String(b2)]);
    assert.equal(dialogs.length, d0 + 2);
    await page.click(`${row(b1)} button[data-action="up"]`);
    await page.waitForSelector(`${row(b1)}[data-state="up"] button[data-action="down"]`, { timeout: 3000 });
    assert.equal((await server(b1)).down, false);
    assert.equal(dialogs.length, d0 + 2, "mark up does not ask");
  });

  test("a refused write shows the API's status and reason, and changes nothing", async () => {
    const { page } = view;
    const before = await server(b1);
    const input = `${row(b1)} input.weight`;
    await page.click(input, { clickCount: 3 });
    await page.type(input, "0");
    await page.click(`${row(b1)} button[data-action="weight"]`);
    await page.waitForFunction((sel) => document.querySelector(sel).textContent.startsWith("400 "), { timeout: 3000 }, `${row(b1)} .msg`);
    assert.match(await page.$eval(`${row(b1)} .msg`, (e) => e.textContent), /^400 "weight" must be an integer in \[1, \d+\]/);
    assert.match(await page.$eval("#notice", (e) => e.textContent), new RegExp(`^shop 127\\.0\\.0\\.1:${b1}: 400 `));
    assert.deepEqual(await server(b1), before);
    await page.$eval(input, (e) => e.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape" })));
  });

  test("a write against a revision the page no longer shows: 412 with the reason; nothing changes", async () => {
    const { page } = view;
    // hold the page's refresh, change the upstream behind its back, then drain from the stale page
    let hold = true;
    await page.setRequestInterception(true);
    const onRequest = (r) => (hold && r.url().includes("/stats?") ? r.abort() : r.continue());
    page.on("request", onRequest);
    try {
      await page.waitForFunction(() => document.getElementById("conn").className === "bad", { timeout: 3000 });
      assert.equal((await wng.api("PATCH", `/v1/upstreams/shop/servers/127.0.0.1:${b1}`, { ...bearer(WRITE), body: '{"max_fails": 3}' })).status, 200);
      const rev = JSON.parse((await wng.get("/v1/upstreams/shop", bearer(READ))).body).revision;
      await page.click(`${row(b2)} button[data-action="drain"]`);
      await page.waitForFunction((sel) => document.querySelector(sel).textContent.startsWith("412 "), { timeout: 3000 }, `${row(b2)} .msg`);
      const msg = await page.$eval(`${row(b2)} .msg`, (e) => e.textContent);
      assert.ok(msg.startsWith(`412 revision mismatch: upstream is at revision ${rev} (changed since the page showed it`), msg);
      assert.equal((await server(b2)).drain, false);
    } finally {
      hold = false;
      page.off("request", onRequest);
      await page.setRequestInterception(false);
    }
    // the page shows the current revision again: the same click now works
    await page.waitForFunction(() => document.getElementById("conn").className === "ok", { timeout: 3000 });
    await page.click(`${row(b2)} button[data-action="drain"]`);
    await page.waitForSelector(`${row(b2)}[data-state="drained"]`, { timeout: 3000 });
    await page.click(`${row(b2)} button[data-action="undrain"]`);
    await page.waitForSelector(`${row(b2)}[data-state="up"]`, { timeout: 3000 });
  });

  test("behind a proxy that rewrites Host, the interface refuses the page's write as cross-site (403): the page says why", async () => {
    const { page, errors, close } = await openPage(chromium.browser, `http://127.0.0.1:${wng.apiPort}/behind-proxy/dashboard`, { username: "ops", password: WRITE });
    try {
      await page.waitForSelector(`${row(b2)} button[data-action="drain"]`, { timeout: 5000 });
      await page.click(`${row(b2)} button[data-action="drain"]`);
      await page.waitForFunction((sel) => document.querySelector(sel).textContent !== "", { timeout: 3000 }, `${row(b2)} .msg`);
      assert.match(await page.$eval(`${row(b2)} .msg`, (e) => e.textContent), /^403 forbidden: cross-site request refused \(its Origin is not this interface\)/);
      assert.equal((await server(b2)).drain, false);
      assert.deepEqual(errors.filter((e) => !/status of 403/.test(e)), []);
    } finally { await close(); }
  });

  test("a read token on the same nginx: the same rows, no controls", async () => {
    const { page, close } = await openPage(chromium.browser, `http://127.0.0.1:${wng.apiPort}/dashboard`, { username: "viewer", password: READ });
    try {
      await page.waitForSelector(`${row(b2)}`, { timeout: 5000 });
      assert.equal(await page.$$eval("main td.act button, main td.act input", (b) => b.length), 0);
    } finally { await close(); }
  });
});
