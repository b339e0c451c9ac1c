// Shared test helpers: hex, vector files, the §12 export layout (parsed here, on the test
// side: a non-extractable client produces no exports), and key-equality checks that work
// on non-extractable keys (same output under the vector's raw key and under ours).
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import { epochKeyFromBytes, importAesKey, aesSeal, sign, importHmacKey } from "../build/esm/crypto.js";
import { createHmac } from "node:crypto";

/** HMAC-SHA256 with raw key bytes, computed outside the client (Node's crypto). */
const hmacRaw = async (key, data) => new Uint8Array(createHmac("sha256", key).update(data).digest());
import { Direction } from "../build/esm/records.js";
import { ResponseDecoder } from "../build/esm/bhttp.js";
import { BodyReader } from "../build/esm/streams.js";

export const VECTORS = new URL("../../../test-vectors/", import.meta.url);
export const load = (name) => JSON.parse(readFileSync(new URL(name, VECTORS), "utf8"));
export const h = (s) => Uint8Array.from(Buffer.from(s ?? "", "hex"));
export const hx = (b) => Buffer.from(b).toString("hex");

const PKCS8_X25519 = h("302e020100300506032b656e04220420");
/** A fixed X25519 ephemeral for reproducing vectors (never done outside tests). */
export async function fixedEphemeral(secretHex, publicHex) {
  const privateKey = await crypto.subtle.importKey("pkcs8", Buffer.concat([PKCS8_X25519, h(secretHex)]), { name: "X25519" }, false, ["deriveBits"]);
  return { privateKey, publicKey: h(publicHex) };
}

export function parseExport(hex) {
  const b = h(hex);
  let o = 0;
  const take = (n) => b.subarray(o, (o += n));
  const u8 = () => take(1)[0];
  const u16 = () => (u8() << 8) | u8();
  const u64 = () => { const v = Buffer.from(take(8)).readBigUInt64BE(); return Number(v); };
  assert.equal(Buffer.from(take(4)).toString(), "SCSX");
  const format = u8();
  const role = u8();
  const version = u16();
  const suite = u16();
  const flags = format >= 2 ? u8() : 0;
  const sessionId = take(16).slice();
  const dir = () => {
    const epoch = u64();
    const key = take(32).slice();
    const prev = u8() ? take(32).slice() : null;
    return { epoch, key, prev, iv: take(12).slice() };
  };
  const c2s = dir();
  const s2c = dir();
  const refusal = take(32).slice();
  const out = { role, version, suite, streams: (flags & 1) === 1, sessionId, c2s, s2c, refusal };
  if (role === 1) {
    out.nextSeq = u64();
    out.confirmation = take(u16()).slice();
  } else {
    out.windowTop = u64();
    out.window = [];
    for (let i = 0; i < 16; i++) out.window.push(Buffer.from(take(8)).readBigUInt64BE());
  }
  assert.equal(o, b.length, "export parsed exactly");
  return out;
}

/** A Direction holding the export's keys as non-extractable CryptoKeys. */
export async function directionOf(d) {
  return new Direction(d.iv, await epochKeyFromBytes(d.key.slice()), d.epoch, d.prev ? await epochKeyFromBytes(d.prev.slice()) : undefined);
}

/** Whether a non-extractable epoch key holds `raw`: both its AEAD and HMAC halves give the
 *  same outputs as keys imported from `raw`. */
export async function assertEpochKey(k, raw, what) {
  const n = new Uint8Array(12), ad = new Uint8Array(3), pt = new TextEncoder().encode("probe");
  assert.equal(hx(await aesSeal(k.aead, n, ad, pt)), hx(await aesSeal(await importAesKey(raw), n, ad, pt)), what + " (AEAD)");
  assert.equal(hx(await sign(k.mac, pt)), hx(await hmacRaw(raw, pt)), what + " (HMAC)");
}
export async function assertHmacKey(k, raw, what) {
  const pt = new TextEncoder().encode("probe");
  assert.equal(hx(await sign(k, pt)), hx(await hmacRaw(raw, pt)), what);
}
export { importHmacKey };

/** Reads bytes as a stream in small pieces, so incremental parsing is exercised. */
export function streamOf(bytes, piece = 7) {
  let o = 0;
  return new ReadableStream({
    pull(c) {
      if (o >= bytes.length) return c.close();
      c.enqueue(bytes.slice(o, (o += piece)));
    },
  });
}

/** Expects `p` to reject with a SessionCertError of `code`; returns the error. */
export async function rejectsWith(p, code, what) {
  try {
    await p;
  } catch (e) {
    assert.equal(e?.code, code, `${what}: expected ${code}, got ${e?.code} (${e?.message})`);
    return e;
  }
  assert.fail(`${what}: expected ${code}, but it succeeded`);
}

/** Decodes a Binary HTTP response with the client's incremental decoder. */
export async function decodeFull(plaintext) {
  const d = new ResponseDecoder(BodyReader.of(streamOf(plaintext, 5)));
  const head = await d.head();
  const parts = [];
  for (let p; (p = await d.content()) !== null; ) parts.push(p);
  return { status: head.status, headers: head.headers, body: hx(Buffer.concat(parts)) };
}

