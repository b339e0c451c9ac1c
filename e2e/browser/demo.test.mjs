// The demo page and the served browser client (/sessioncert.js) in real headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core) against the release
// `sessioncert serve`. Run: `npm ci && node --test` in this folder, after
// `cargo build --release` at the repository root (see README.md for the variables).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../..");
const BIN =
  process.env.SESSIONCERT_BIN ||
  join(process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target"), "release", "sessioncert");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT = process.env.SESSIONCERT_SCREENSHOT || join(tmpdir(), "sessioncert-demo-page.png");
const BASE64URL_ID = /^[A-Za-z0-9_-]{22}$/;

// ------------------------------------------------------------------ servers

const servers = [];

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Starts `sessioncert serve` on 127.0.0.1 (port 0: any free one); resolves when it serves. */
async function startServer(extra = [], port = 0) {
  const dir = mkdtempSync(join(tmpdir(), "sessioncert-e2e-"));
  const data = join(dir, "data");
  const child = spawn(BIN, ["serve", "--memory", "--addr", `127.0.0.1:${port}`, "--data", data, ...extra], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SESSIONCERT_"))), NO_COLOR: "1", RUST_LOG: "warn" },
  });
  const server = { child, dir, data, log: "" };
  servers.push(server);
  const addr = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("server did not start:\n" + server.log)), 15000);
    child.stderr.on("data", (b) => {
      server.log += b;
      const m = /sessioncert serving.* addr=(\S+)/.exec(server.log);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.on("exit", (code) => fail(new Error(`server exited (${code}):\n${server.log}`)));
  });
  server.port = Number(addr.split(":").pop());
  server.url = `http://127.0.0.1:${server.port}`;
  server.pin = execFileSync(BIN, ["fingerprint", "--data", data], { encoding: "utf8" }).trim();
  return server;
}

// ------------------------------------------------------------------ browser

let browser;
let main; // the server most tests use

before(async () => {
  assert.ok(existsSync(BIN), `no sessioncert binary at ${BIN}: run \`cargo build --release\` first (or set SESSIONCERT_BIN)`);
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium`);
  main = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  for (const s of servers) {
    s.child.kill("SIGTERM");
    rmSync(s.dir, { recursive: true, force: true });
  }
});

/** Collects the keys WebCrypto hands out in the page, wrapping SubtleCrypto before any
 *  page script runs. Test-only: it lives here, the product exposes nothing for it. */
function collectKeys() {
  const keys = [];
  const P = SubtleCrypto.prototype;
  const keep = (v) => {
    if (v instanceof CryptoKey) keys.push(v);
    else if (v && v.privateKey instanceof CryptoKey) keys.push(v.privateKey, v.publicKey);
    return v;
  };
  for (const name of ["importKey", "deriveKey", "generateKey", "unwrapKey"]) {
    const orig = P[name];
    Object.defineProperty(P, name, {
      configurable: true,
      writable: true,
      value: function (...args) {
        return orig.apply(this, args).then(keep);
      },
    });
  }
  Object.defineProperty(window, "__e2eKeys", { value: keys });
}

/** A new page on `url` with every console error and page error recorded. */
async function openPage(url, { keys = false } = {}) {
  const context = await browser.newContext();
  if (keys) await context.addInitScript(collectKeys);
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e}`));
  const resp = await page.goto(url, { waitUntil: "networkidle" });
  assert.equal(resp.status(), 200, `GET ${url}`);
  await page.waitForSelector("html[data-ready=true]");
  return { page, context, problems };
}

async function connectInPage(page) {
  await page.click("#connect");
  await page.waitForFunction(() => document.getElementById("close").disabled === false, null, { timeout: 10000 });
}

// ------------------------------------------------------------------ tests

test("the demo page loads cleanly and the handshake completes, step by step", async () => {
  const { page, context, problems } = await openPage(main.url + "/");
  assert.equal(await page.textContent("#pin"), main.pin);
  await connectInPage(page);
  const id = (await page.textContent("#session-id")).trim();
  assert.match(id, BASE64URL_ID);
  assert.match(await page.textContent("#handshake-status"), /Connected in/);
  assert.equal(await page.textContent("#suite"), "X25519/AES-256-GCM");
  const steps = await page.$$eval("#steps > li .what", (l) => l.map((e) => e.textContent));
  assert.deepEqual(steps, ["1. Key configuration", "2. ClientHello", "3. ServerHello", "4. Session established"]);
  // The byte views hold what was served: the key configuration as GET returns it.
  const served = await (await fetch(main.url + "/.well-known/sessioncert/config")).arrayBuffer();
  const len = await page.textContent("#steps > li:first-child .len");
  assert.equal(len, `1. Key configuration: ${served.byteLength} bytes`);
  // Keyboard and landmarks: every form control has a label, the page has its landmarks.
  const unlabeled = await page.$$eval("input, textarea, select", (els) =>
    els.filter((e) => e.labels.length === 0 && !e.getAttribute("aria-label")).map((e) => e.outerHTML),
  );
  assert.deepEqual(unlabeled, []);
  for (const sel of ["header", "main", "footer", "h1"]) assert.equal(await page.locator(sel).count(), 1, sel);
  // No secret in web storage or cookies.
  const stored = await page.evaluate(() => [localStorage.length, sessionStorage.length, document.cookie]);
  assert.deepEqual(stored, [0, 0, ""]);
  assert.deepEqual(problems, []);
  await context.close();
});

test("step mode pauses before each handshake request until the user goes on", async () => {
  const { page, context, problems } = await openPage(main.url + "/");
  await page.check("#step-mode");
  await page.click("#connect");
  await page.waitForSelector("#next-step:not([hidden])");
  assert.match(await page.textContent("#handshake-status"), /Next request: GET \/\.well-known\/sessioncert\/config/);
  assert.equal(await page.locator("#steps > li").count(), 0);
  await page.keyboard.press("Enter"); // the button has the focus
  await page.waitForFunction(() => /handshake/.test(document.getElementById("handshake-status").textContent));
  // The configuration came back; the ClientHello is built and shown, not yet sent.
  assert.deepEqual(await page.$$eval("#steps > li .what", (l) => l.map((e) => e.textContent)), ["1. Key configuration", "2. ClientHello"]);
  assert.match(await page.textContent("#handshake-status"), /Next request: POST \/\.well-known\/sessioncert\/handshake/);
  await page.click("#next-step");
  await page.waitForFunction(() => document.getElementById("close").disabled === false);
  assert.equal(await page.locator("#steps > li").count(), 4);
  assert.deepEqual(problems, []);
  await context.close();
});

test("a sealed echo round-trips, and the body on the wire is ciphertext", async () => {
  const { page, context, problems } = await openPage(main.url + "/");
  const marker = "marker-" + Math.random().toString(36).slice(2);
  const onWire = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/apiTest")) onWire.push({ headers: r.headers(), body: r.postDataBuffer() });
  });
  await page.fill("#api-body", JSON.stringify({ marker, n: 42 }));
  await page.click("#api-send"); // connects first
  await page.waitForFunction(() => document.getElementById("api-opened-body") !== null, null, { timeout: 10000 });
  const opened = JSON.parse(await page.textContent("#api-opened-body"));
  assert.deepEqual(opened.requestData, { marker, n: 42 });
  assert.equal(onWire.length, 1);
  const sent = onWire[0];
  assert.equal(sent.headers["content-type"], "application/sessioncert-sealed");
  assert.equal(sent.headers["sessioncert-content-type"], "application/json");
  assert.ok(!sent.body.includes(Buffer.from(marker)), "the marker travelled in clear");
  // What the page shows as sent is what the browser sent.
  assert.match(await page.textContent("#api-sent .len"), new RegExp(`: ${sent.body.length} bytes$`));
  assert.match(await page.textContent("#api-status"), /^Sealed round trip/);
  // Full-request mode: method and path are sealed too; the wire shows the full endpoint.
  await page.check("#api-full");
  await page.click("#api-send");
  await page.waitForFunction(() => /\/\.well-known\/sessioncert\/full/.test(document.getElementById("api-sent").textContent));
  assert.deepEqual(JSON.parse(await page.textContent("#api-opened-body")).requestData, { marker, n: 42 });
  assert.deepEqual(problems, []);
  await context.close();
});

test("a wrong pin is refused", async () => {
  const { page, context, problems } = await openPage(main.url + "/");
  await page.click("#wrong-pin");
  await page.waitForFunction(() => /Refused|accepted/.test(document.getElementById("wrong-pin-result").textContent));
  assert.match(await page.textContent("#wrong-pin-result"), /^Refused, as it must be\. PinMismatch/);
  // And through the module directly, as an app would call it.
  const name = await page.evaluate(async () => {
    const m = await import("/sessioncert.js");
    const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    const pin = "ed25519:" + btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    try {
      await m.connect(location.origin, { pin });
      return "accepted";
    } catch (e) {
      return e instanceof m.PinMismatch ? "PinMismatch" : `${e.name}: ${e.message}`;
    }
  });
  assert.equal(name, "PinMismatch");
  assert.deepEqual(problems, []);
  await context.close();
});

test("the session's keys cannot be exported", async () => {
  const { page, context, problems } = await openPage(main.url + "/", { keys: true });
  await page.click("#api-send");
  await page.waitForFunction(() => document.getElementById("api-opened-body") !== null, null, { timeout: 10000 });
  const report = await page.evaluate(async () => {
    const out = { total: window.__e2eKeys.length, checked: 0, aesGcm: 0, hmac: 0, x25519: 0, exported: [], extractable: [] };
    for (const k of window.__e2eKeys) {
      if (k.type === "public") continue; // public keys are public by definition
      out.checked += 1;
      if (k.algorithm.name === "AES-GCM") out.aesGcm += 1;
      if (k.algorithm.name === "HMAC") out.hmac += 1;
      if (k.algorithm.name === "X25519") out.x25519 += 1;
      if (k.extractable) out.extractable.push(k.algorithm.name);
      for (const format of k.type === "private" ? ["pkcs8", "jwk"] : ["raw", "jwk"]) {
        try {
          await crypto.subtle.exportKey(format, k);
          out.exported.push(`${k.algorithm.name}/${format}`);
        } catch (e) {
          // InvalidAccessError: not extractable; NotSupportedError: HKDF keys never are.
          if (e.name !== "InvalidAccessError" && e.name !== "NotSupportedError") {
            out.exported.push(`${k.algorithm.name}/${format}: unexpected ${e.name}`);
          }
        }
      }
    }
    return out;
  });
  // Both directions' AES-GCM record keys, the HMAC keys (re-keying, refusal tags, key
  // confirmation) and the ephemeral X25519 private key were all seen and none exported.
  assert.ok(report.aesGcm >= 2, JSON.stringify(report));
  assert.ok(report.hmac >= 1, JSON.stringify(report));
  assert.ok(report.x25519 >= 1, JSON.stringify(report));
  assert.deepEqual(report.extractable, [], JSON.stringify(report));
  assert.deepEqual(report.exported, [], JSON.stringify(report));
  assert.deepEqual(problems, []);
  await context.close();
});

test("sealed server-sent events arrive one by one", async () => {
  const { page, context, problems } = await openPage(main.url + "/");
  const n = 5;
  const interval = 300;
  await page.fill("#events-n", String(n));
  await page.fill("#events-interval", String(interval));
  await page.click("#events-start");
  // While the stream runs, events show up before it ends.
  await page.waitForFunction(() => document.querySelectorAll('#events-list li[data-kind="event"]').length >= 2, null, { timeout: 10000 });
  const midway = await page.locator('#events-list li[data-kind="event"]').count();
  assert.ok(midway < n, `all ${n} events at once`);
  await page.waitForFunction((n) => new RegExp(`^${n} events in`).test(document.getElementById("events-status").textContent), n, { timeout: 15000 });
  const rows = await page.$$eval("#events-list li", (l) => l.map((e) => ({ kind: e.dataset.kind, at: Number(e.dataset.at), text: e.textContent })));
  const events = rows.filter((r) => r.kind === "event");
  assert.equal(events.length, n);
  events.forEach((e, i) => assert.match(e.text, new RegExp(`data: \\{"i":${i}\\}`)));
  const gaps = events.slice(1).map((e, i) => e.at - events[i].at);
  for (const g of gaps) assert.ok(g >= interval * 0.5, `events bunched: gaps ${gaps}`);
  assert.ok(events[n - 1].at - events[0].at >= (n - 1) * interval * 0.8, `spread ${gaps}`);
  // Each event was opened from a sealed chunk that arrived before it.
  let chunks = 0;
  for (const r of rows) {
    if (r.kind === "chunk") chunks += 1;
    else assert.ok(chunks >= 1, "an event before any sealed chunk");
  }
  assert.ok(chunks >= n, `${chunks} chunks for ${n} events`);
  assert.deepEqual(problems, []);
  await context.close();
});

test("notes: create, list and delete through the sealed resource", async () => {
  const { page, context, problems } = await openPage(main.url + "/");
  const title = "note-" + Math.random().toString(36).slice(2);
  await page.fill("#note-title", title);
  await page.fill("#note-body", "<b>not markup</b>");
  await page.click("#note-add");
  await page.waitForFunction((t) => document.getElementById("notes-list").textContent.includes(t), title, { timeout: 10000 });
  assert.equal(await page.locator("#notes-list b").count(), 0, "note text was rendered as HTML");
  assert.match(await page.textContent("#notes-wire"), /GET \/notes|POST \/notes/);
  await page.click(`#notes-list button[aria-label="Delete note “${title}”"]`);
  await page.waitForFunction((t) => !document.getElementById("notes-list").textContent.includes(t), title, { timeout: 10000 });
  assert.match(await page.textContent("#notes-status"), /DELETE \/notes\/\d+: done/);
  assert.deepEqual(problems, []);
  await context.close();
});

test("an app on another origin imports the module and connects with --cors-origin, and cannot without it", async () => {
  // A third-party app: a page without the demo's CSP served from another origin (a
  // port of this test's own), importing the served module cross-origin and calling the
  // server: module fetch, configuration, handshake and sealed request all go through
  // CORS, with real preflights.
  const app = createHttpServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>app</title><p>another origin</p>");
  });
  await new Promise((ok) => app.listen(0, "127.0.0.1", ok));
  const appOrigin = `http://127.0.0.1:${app.address().port}`;
  const cors = await startServer(["--cors-origin", appOrigin]);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(appOrigin + "/");
  const call = (moduleFrom, server) =>
    page.evaluate(
      async ({ moduleUrl, base, pin }) => {
        let m;
        try {
          m = await import(moduleUrl);
        } catch (e) {
          return { ok: false, error: `import: ${e.name}: ${e.message}` };
        }
        try {
          const s = await m.connect(base, { pin });
          // An app's own headers (authorization is bound by the client) pass the preflight.
          const r = await s.fetch("/apiTest", {
            method: "POST",
            headers: { "content-type": "application/json", authorization: "Bearer app-token", "x-app-version": "7" },
            body: '{"cross":true}',
          });
          const notFound = await s.fetch("/no/such/route"); // a sealed 404 (GET: full mode)
          const text = await r.text();
          await s.close();
          return { ok: true, status: r.status, text, notFound: notFound.status };
        } catch (e) {
          return { ok: false, error: `${e.name}: ${e.message}` };
        }
      },
      { moduleUrl: moduleFrom.url + "/sessioncert.js", base: server.url, pin: server.pin },
    );
  try {
    const ok = await call(cors, cors);
    assert.ok(ok.ok, JSON.stringify(ok));
    assert.equal(ok.status, 200);
    assert.match(ok.text, /"cross":true/);
    assert.equal(ok.notFound, 404);
    const noModule = await call(main, main); // no --cors-origin: not even the module
    assert.match(noModule.error, /^import: TypeError/);
    const refused = await call(cors, main);
    assert.equal(refused.ok, false, JSON.stringify(refused));
    assert.match(refused.error, /^TransportError/);
  } finally {
    await context.close();
    app.close();
  }
});

test("screenshot of the live demo page", async () => {
  const { page, context, problems } = await openPage(main.url + "/");
  await page.click("#api-send");
  await page.waitForFunction(() => document.getElementById("api-opened-body") !== null, null, { timeout: 10000 });
  await page.fill("#note-title", "Shopping list");
  await page.fill("#note-body", "sealed on the wire");
  await page.click("#note-add");
  await page.waitForFunction(() => document.getElementById("notes-list").textContent.includes("Shopping list"));
  await page.fill("#events-n", "3");
  await page.fill("#events-interval", "200");
  await page.click("#events-start");
  await page.waitForFunction(() => /^3 events in/.test(document.getElementById("events-status").textContent), null, { timeout: 10000 });
  await page.click("#wrong-pin");
  await page.waitForFunction(() => /Refused/.test(document.getElementById("wrong-pin-result").textContent));
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(existsSync(SCREENSHOT));
  console.log(`screenshot: ${SCREENSHOT}`);
  assert.deepEqual(problems, []);
  await context.close();
});
