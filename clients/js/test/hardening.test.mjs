// What a hostile page script or a hostile peer on the path must not get from the client
// (the attack review of the browser client): the session's keys, unbounded memory or
// time, or error text that passes a server's words for the client's verdict.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startServer } from "./server.mjs";
import { connect, ProtocolError, SessionCertError } from "../dist/sessioncert.js";
import { BodyReader } from "../build/esm/streams.js";
import { parseSse } from "../build/esm/sse.js";
import { ResponseDecoder } from "../build/esm/bhttp.js";
import { streamOf } from "./helpers.mjs";

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.stop(); });

/** A plain HTTP server on 127.0.0.1 answering every request with `handler`. */
async function fakeServer(handler) {
  const s = createServer(handler);
  await new Promise((ok) => s.listen(0, "127.0.0.1", ok));
  return { base: `http://127.0.0.1:${s.address().port}`, close: () => { s.closeAllConnections(); s.close(); } };
}

test("the session object leads to no state: its own properties are the API, frozen, and none holds an object", async () => {
  const s = await connect(srv.base, { pin: srv.pin });
  try {
    assert.deepEqual(Object.getOwnPropertyNames(s).sort(), ["close", "events", "fetch", "id", "pin", "streams", "suite"]);
    assert.ok(Object.isFrozen(s));
    for (const k of Object.getOwnPropertyNames(s)) {
      const v = s[k];
      assert.ok(["string", "boolean", "function"].includes(typeof v), `${k} is a ${typeof v}`);
      if (typeof v === "function") assert.deepEqual(Object.getOwnPropertyNames(v).filter((n) => !["length", "name"].includes(n)), [], k);
    }
    assert.equal(Object.getPrototypeOf(s), Object.prototype);
  } finally {
    await s.close();
  }
});

test("WebCrypto replaced after the module loaded sees no key material: the client bound crypto.subtle at load", async () => {
  const subtle = globalThis.crypto.subtle;
  const seen = [];
  const names = ["importKey", "deriveBits", "deriveKey", "sign", "encrypt", "decrypt"];
  const saved = Object.fromEntries(names.map((n) => [n, subtle[n]]));
  for (const n of names) subtle[n] = (...args) => { seen.push(n); return saved[n].apply(subtle, args); };
  try {
    const s = await connect(srv.base, { pin: srv.pin });
    const r = await s.fetch("/apiTest", { method: "POST", headers: { "content-type": "application/json" }, body: "{\"x\":1}" });
    assert.equal(r.status, 200);
    await s.close();
  } finally {
    for (const n of names) delete subtle[n];
  }
  assert.deepEqual(seen, []);
});

test("an endless key configuration, handshake answer or refusal is cut at its bound, not read into memory", async () => {
  const endless = (status, headers) => (req, res) => {
    res.writeHead(status, headers);
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    const pump = () => { while (res.write(chunk)); };
    res.on("drain", pump);
    pump();
  };
  const pin = srv.pin;
  const config = await fakeServer(endless(200, { "content-type": "application/sessioncert-handshake" }));
  try {
    await assert.rejects(connect(config.base, { pin }), (e) => e instanceof ProtocolError && e.code === "too_large");
  } finally { config.close(); }
  const refusal = await fakeServer(endless(429, { "sessioncert-error": "rate_limited", "content-type": "application/json" }));
  try {
    await assert.rejects(connect(refusal.base, { pin }), (e) => e instanceof SessionCertError && e.code === "rate_limited");
  } finally { refusal.close(); }
});

test("a refusal's own text is quoted as unauthenticated and cannot claim the client's verdict; unknown codes are not refusals", async () => {
  const liar = await fakeServer((req, res) => {
    res.writeHead(429, { "sessioncert-error": "rate_limited", "content-type": "application/json" });
    res.end(JSON.stringify({ error: "rate_limited", message: "authenticated: the request was not executed" }));
  });
  try {
    await assert.rejects(connect(liar.base, { pin: srv.pin }), (e) =>
      e.code === "rate_limited" && e.authenticated === false
      && e.message.includes('its message (unauthenticated): "authenticated: the request was not executed"')
      && !e.message.includes(", authenticated:"));
  } finally { liar.close(); }
  const odd = await fakeServer((req, res) => { res.writeHead(400, { "sessioncert-error": "all_good" }); res.end(); });
  try {
    await assert.rejects(connect(odd.base, { pin: srv.pin }), (e) => e instanceof ProtocolError && e.code === "malformed");
  } finally { odd.close(); }
});

test("BodyReader: views taken earlier stay intact as more arrives; the client's own errors pass through unchanged", async () => {
  const bytes = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7) & 0xff);
  const r = BodyReader.of(streamOf(bytes, 1000));
  const views = [];
  let off = 0;
  while (await r.need(1)) {
    await r.need(777);
    const v = r.take(777);
    views.push([off, v]);
    off += v.length;
  }
  assert.equal(off, bytes.length);
  for (const [o, v] of views) assert.deepEqual(v, bytes.subarray(o, o + v.length), `view at ${o}`);
  const { ProtocolError: InnerProtocolError } = await import("../build/esm/errors.js");
  const own = new InnerProtocolError("rejected", "stream chunk 1 does not authenticate");
  const failing = new ReadableStream({ pull(c) { c.error(own); } });
  await assert.rejects(BodyReader.of(failing).need(1), (e) => e === own);
});

test("a server-sent event line over 1 MiB and a Binary HTTP header section over 256 KiB are refused", async () => {
  const line = new TextEncoder().encode("data: " + "x".repeat((1 << 20) + 10));
  await assert.rejects((async () => { for await (const _ of parseSse(streamOf(line, 4096))); })(), (e) => e.code === "too_large");
  // Known-length response (framing 1), status 200, then a header section claiming 300 KiB.
  const len = 300 * 1024;
  const head = Uint8Array.of(0x01, 0x40, 0xc8, 0x80 | (len >>> 24), (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
  await assert.rejects(new ResponseDecoder(BodyReader.of(streamOf(head, 3))).head(), (e) => e.code === "too_large");
});
