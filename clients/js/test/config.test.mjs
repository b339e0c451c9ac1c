// test-vectors/key-config.json: pins, configuration parsing, current key, verification
// (every verify_ok and verify_fail case with its code), plus the strict-Ed25519 tables.
import { test } from "node:test";
import assert from "node:assert/strict";
import { load, h, hx } from "./helpers.mjs";
import { parsePin, parseConfig, currentKey, verifyConfig, pinOf } from "../build/esm/config.js";
import { decodeY, isStrictPoint } from "../build/esm/ed25519.js";
import { PinMismatch } from "../build/esm/errors.js";

const v = load("key-config.json");
const trustOf = (t) => (t === "first_use" ? null : t.split(",").map(parsePin));

test("pin of the identity and pin parsing", () => {
  assert.equal(pinOf(h(v.identity.public)), v.identity.pin);
  assert.equal(hx(parsePin(v.identity.pin)), v.identity.public);
  assert.equal(hx(parsePin(`  ${v.other_identity.pin}\n`)), v.other_identity.public, "surrounding whitespace is trimmed");
});

for (const c of v.invalid_pins)
  test(`invalid pin refused: ${c.reason}`, () => assert.throws(() => parsePin(c.text), (e) => e.code === "malformed"));

test("pin whose key is not a curve point is refused", () => {
  // y = 2 is not on edwards25519 (x^2 would have no root).
  const bad = "ed25519:" + Buffer.from(Uint8Array.of(2, ...new Uint8Array(31))).toString("base64url");
  assert.equal(decodeY(h("02" + "00".repeat(31))), null);
  assert.throws(() => parsePin(bad), (e) => e.code === "malformed");
});

test("config encoding parses to the vector's fields", () => {
  const c = parseConfig(h(v.config_encoded));
  assert.equal(hx(c.identity), v.config.identity);
  assert.equal(c.issuedAt, v.config.issued_at_ms);
  assert.equal(c.expiresAt, v.config.expires_at_ms);
  assert.deepEqual(c.versions, v.config.versions);
  assert.deepEqual(c.recordSuites, v.config.record_suites);
  assert.deepEqual(
    c.keys.map((k) => ({ key_id: k.keyId, hs_suite: k.hsSuite, public: hx(k.public), not_before_ms: k.notBefore, not_after_ms: k.notAfter })),
    v.config.keys,
  );
  assert.equal(hx(h(v.signed_config).subarray(66)), v.config_encoded);
});

for (const c of v.current_key)
  test(`current key at ${c.now_ms} is ${c.key_id}`, () => {
    assert.equal(currentKey(parseConfig(h(v.config_encoded)), c.now_ms)?.keyId ?? null, c.key_id);
  });

for (const c of v.verify_ok)
  test(`verify_ok ${c.name}`, async () => {
    const r = await verifyConfig(h(c.signed_config), trustOf(c.trust), c.now_ms);
    assert.equal(hx(h(c.signed_config).subarray(66)), c.config_encoded);
    assert.equal(r.pin, pinOf(parseConfig(h(c.config_encoded)).identity));
  });

for (const c of v.verify_fail)
  test(`verify_fail ${c.name} → ${c.error}`, async () => {
    await assert.rejects(verifyConfig(h(c.signed_config), trustOf(c.trust), c.now_ms), (e) => {
      assert.equal(e.code, c.error, e.message);
      return true;
    });
  });

test("wrong pin is a PinMismatch naming both identities", async () => {
  const c = v.verify_fail.find((x) => x.name === "wrong_pin");
  await assert.rejects(verifyConfig(h(c.signed_config), trustOf(c.trust), c.now_ms), (e) =>
    e instanceof PinMismatch && e.expected === c.trust && e.actual === v.identity.pin);
});

test("an older configuration than one accepted is refused (§5.3 rule 7)", async () => {
  const ok = v.verify_ok.find((x) => x.name === "pinned");
  const trust = trustOf(ok.trust);
  const cfg = parseConfig(h(ok.config_encoded));
  await verifyConfig(h(ok.signed_config), trust, ok.now_ms, cfg.issuedAt); // same: fine
  await assert.rejects(verifyConfig(h(ok.signed_config), trust, ok.now_ms, cfg.issuedAt + 1), (e) => e.code === "handshake_failed");
});

// Strict Ed25519 (§5.3): the small-order table must be exactly the 8 torsion points.
const P = 2n ** 255n - 19n;
const D = (((-121665n * modPow(121666n, P - 2n)) % P) + P) % P;
function modPow(b, e) { let r = 1n; b %= P; for (; e > 0n; e >>= 1n, b = (b * b) % P) if (e & 1n) r = (r * b) % P; return r; }
function add([x1, y1], [x2, y2]) {
  const t = (D * x1 * x2 * y1 * y2) % P;
  return [((x1 * y2 + x2 * y1) * modPow(1n + t, P - 2n)) % P, ((((y1 * y2 + x1 * x2) % P) * modPow((1n - t + P) % P, P - 2n)) % P + P) % P];
}
function pointFromEncoding(hex) {
  const b = h(hex);
  const y = BigInt("0x" + Buffer.from(b).reverse().toString("hex")) & ((1n << 255n) - 1n);
  const u = (y * y - 1n + P) % P, w = (D * y * y + 1n) % P;
  let x = modPow((u * modPow(w, P - 2n)) % P, (P + 3n) / 8n);
  if ((x * x - u * modPow(w, P - 2n)) % P !== 0n) x = (x * modPow(2n, (P - 1n) / 4n)) % P;
  return [x, y];
}
test("small-order encodings are refused, and the order-8 constant has order 8", () => {
  const y8 = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a";
  let p = pointFromEncoding(y8);
  let q = p;
  for (let i = 1; i < 8; i++) { q = add(q, p); if (i < 7) assert.notDeepEqual(q, [0n, 1n]); }
  assert.deepEqual(q.map((c) => (c + P) % P), [0n, 1n], "8·P is the identity");
  for (const enc of [
    "01" + "00".repeat(31), // identity
    "ec" + "ff".repeat(30) + "7f", // y = -1 (order 2)
    "00".repeat(32), // y = 0 (order 4)
    y8,
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // -y8
    "ee" + "ff".repeat(30) + "7f", // y = p + 1 ≡ 1, non-canonical identity
  ]) assert.equal(isStrictPoint(h(enc)), false, enc);
  assert.equal(isStrictPoint(h(v.identity.public)), true);
});
