// Unit tests for the parts the vectors do not reach: the SSE parser, Binary HTTP response
// forms (truncated known-length, padding, informational responses), canonical base64url.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseSse } from "../build/esm/sse.js";
import { ResponseDecoder, varint } from "../build/esm/bhttp.js";
import { BodyReader } from "../build/esm/streams.js";
import { b64u, fromB64u } from "../build/esm/bytes.js";
import { streamOf, h, hx } from "./helpers.mjs";

const collect = async (it) => { const out = []; for await (const x of it) out.push(x); return out; };

test("SSE: fields, multi-line data, comments, CRLF/CR line ends split anywhere, unterminated tail dropped", async () => {
  const text = ": hello\r\ndata: a\r\ndata:b\r\n\r\nevent: tick\rid: 7\rdata: {\"i\":1}\r\revent: ignored-no-data\n\ndata\n\ndata: tail-without-blank-line";
  for (const piece of [1, 3, 1000]) {
    const evs = await collect(parseSse(streamOf(new TextEncoder().encode(text), piece)));
    assert.deepEqual(evs, [
      { event: "message", data: "a\nb" },
      { event: "tick", data: "{\"i\":1}", id: "7" },
      { event: "message", data: "", id: "7" },
    ], `pieces of ${piece}`);
  }
});

async function decode(bytes, piece = 2) {
  const d = new ResponseDecoder(BodyReader.of(streamOf(bytes, piece)));
  const head = await d.head();
  const parts = [];
  for (let p; (p = await d.content()) !== null; ) parts.push(p);
  return { ...head, body: Buffer.concat(parts).toString() };
}
const lp = (s) => Buffer.concat([varint(Buffer.byteLength(s)), Buffer.from(s)]);

test("Binary HTTP: known length, truncated after headers, zero padding; indeterminate with 1xx dropped", async () => {
  const fields = Buffer.concat([lp("content-type"), lp("text/plain")]);
  const known = Buffer.concat([varint(1), varint(200), varint(fields.length), fields, lp("hi"), varint(0)]);
  assert.deepEqual(await decode(known), { status: 200, headers: [["content-type", "text/plain"]], body: "hi" });
  assert.deepEqual(await decode(Buffer.concat([known, Buffer.alloc(5)])), { status: 200, headers: [["content-type", "text/plain"]], body: "hi" });
  const truncated = Buffer.concat([varint(1), varint(204), varint(fields.length), fields]);
  assert.deepEqual(await decode(truncated), { status: 204, headers: [["content-type", "text/plain"]], body: "" });
  const indet = Buffer.concat([varint(3), varint(103), lp("link"), lp("</a>"), varint(0), varint(201), lp("x-a"), lp("1"), varint(0), lp("ab"), lp("c"), varint(0), varint(0)]);
  assert.deepEqual(await decode(indet, 1), { status: 201, headers: [["x-a", "1"]], body: "abc" });
  await assert.rejects(decode(indet.subarray(0, indet.length - 1)), (e) => e.code === "malformed", "indeterminate without its trailer terminator");
  await assert.rejects(decode(Buffer.concat([known, Buffer.from([1])])), (e) => e.code === "malformed", "non-zero byte after the message");
});

test("base64url: canonical, unpadded, strict", () => {
  for (const n of [0, 1, 2, 3, 4, 31, 32, 33]) {
    const b = Uint8Array.from({ length: n }, (_, i) => (i * 37 + 250) & 255);
    assert.equal(b64u(b), Buffer.from(b).toString("base64url"));
    assert.equal(hx(fromB64u(b64u(b))), hx(b));
  }
  assert.equal(hx(fromB64u("AQ")), "01");
  for (const bad of ["AR", "AQ==", "A", "A+", "A/", "AQ ", "ä"]) assert.equal(fromB64u(bad), null, bad);
});

test("a connection that fails inside a stream is Truncated with its cause; a single record's body gives TransportError; an abort stays an AbortError", async () => {
  const { StreamOpener } = await import("../build/esm/streams.js");
  const { Truncated, TransportError } = await import("../build/esm/errors.js");
  const failing = (err) => new ReadableStream({ pull(c) { c.error(err); } });
  const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
  const cut = new StreamOpener(BodyReader.of(failing(new TypeError("terminated"))), key, new Uint8Array(0));
  await assert.rejects(cut.next(), (e) => e instanceof Truncated && e.code === "rejected" && e.cause?.message === "terminated");
  await assert.rejects(BodyReader.of(failing(new TypeError("terminated"))).rest(), (e) => e instanceof TransportError);
  const aborted = new StreamOpener(BodyReader.of(failing(new DOMException("stopped", "AbortError"))), key, new Uint8Array(0));
  await assert.rejects(aborted.next(), (e) => e.name === "AbortError");
});
