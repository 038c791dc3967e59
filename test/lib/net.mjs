// Network helpers shared by the integration suite (test/integration/harness.mjs) and the container suite
// (test/containers/lib.mjs): free loopback ports below the ephemeral range, one HTTP request over a fresh
// connection, waiting for a condition. Loopback (127.0.0.1) only.
import net from "node:net";
import http from "node:http";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** true when nothing listens on 127.0.0.1:port and we can bind it */
export function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

// 20000..31999: below the kernel's ephemeral range (32768+). Each test file runs in its own process and
// starts at a pid-dependent place, so files that run side by side rarely probe the same ports.
const LOW = 20000;
const HIGH = 32000;
let nextPort = LOW + ((process.pid * 37) % 590) * 20;

/** n consecutive free loopback ports below 32768 (containers on the host network share them). */
export async function freePorts(n) {
  for (let tries = 0; tries < 500; tries++) {
    if (nextPort + n >= HIGH) nextPort = LOW;
    const base = nextPort;
    nextPort += n + 1;
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await portFree(base + i);
    if (ok) return Array.from({ length: n }, (_, i) => base + i);
  }
  throw new Error("no free ports below 32768");
}

/**
 * One HTTP request to 127.0.0.1:port over a fresh connection. Resolves { status, headers, body, sentAt,
 * doneAt } (performance.now() ms: orders requests against each other within this process); never rejects on
 * an HTTP status. A connection error rejects, unless opts.allowError (then status 0 and the message as body).
 * opts: headers, body, chunks (sent chunked, opts.chunkDelay ms apart), timeout (10 s).
 */
export function request(port, method, urlPath, opts = {}) {
  return new Promise((resolve, reject) => {
    const headers = { ...(opts.headers || {}) };
    const body = opts.body;
    if (body !== undefined && !opts.chunks && headers["content-length"] === undefined) headers["content-length"] = Buffer.byteLength(body);
    if (opts.chunks) headers["transfer-encoding"] = "chunked";
    const sentAt = performance.now();
    const done = (status, text, h = {}) => resolve({ status, headers: h, body: text, sentAt, doneAt: performance.now() });
    const fail = (e) => (opts.allowError ? done(0, String(e.message)) : reject(e));
    const req = http.request({ host: "127.0.0.1", port, method, path: urlPath, headers, agent: false }, (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("end", () => done(res.statusCode, Buffer.concat(parts).toString(), res.headers));
      res.on("error", fail);
    });
    req.setTimeout(opts.timeout ?? 10000, () => req.destroy(new Error("timeout")));
    req.on("error", fail);
    if (opts.chunks) {
      (async () => {
        for (const c of opts.chunks) { req.write(c); if (opts.chunkDelay) await sleep(opts.chunkDelay); }
        req.end();
      })();
    } else {
      if (body !== undefined) req.write(body);
      req.end();
    }
  });
}

/** Polls fn() until it returns a truthy value or ms pass; returns the last value. */
export async function eventually(fn, ms = 5000, step = 20) {
  const end = Date.now() + ms;
  let v;
  while (Date.now() < end) { v = await fn(); if (v) return v; await sleep(step); }
  return v;
}

/**
 * n GET requests to 127.0.0.1:port, pipelined over keep-alive connections, `conns` at a time, in batches of
 * `batch` (a connection sends a batch, reads its answers, sends the next): a hundred thousand requests in
 * seconds without a load tool. A connection carries at most `perConn` requests (below nginx's default
 * keepalive_requests 1000, after which nginx closes it). Resolves { count, statuses: { code: n } }. Answers are read by their Content-Length (the
 * location must send one: `return 200 "..."`, a proxied backend that sets it).
 */
export async function pipelined(port, urlPath, host, n, { conns = 8, batch = 100, perConn = 900 } = {}) {
  const statuses = {};
  let count = 0;
  const one = (share) => new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    let left = share, waiting = 0, buf = Buffer.alloc(0);
    const send = () => {
      const k = Math.min(batch, left);
      left -= k;
      waiting = k;
      s.write(`GET ${urlPath} HTTP/1.1\r\nHost: ${host}\r\n\r\n`.repeat(k));
    };
    s.on("connect", send);
    s.on("error", reject);
    s.on("data", (d) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString("latin1");
        const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        const code = head.slice(9, 12);
        statuses[code] = (statuses[code] ?? 0) + 1;
        count++;
        buf = buf.subarray(end + 4 + len);
        if (--waiting === 0) {
          if (left > 0) send();
          else { s.end(); resolve(); }
        }
      }
    });
  });
  let left = n;
  await Promise.all(Array.from({ length: conns }, async () => {
    while (left > 0) {
      const share = Math.min(perConn, left);
      left -= share;
      await one(share);
    }
  }));
  return { count, statuses };
}
