// test-vectors/handshake.json, client side: the ClientHello from fixed ephemerals, the
// ServerHello read into the same session keys (checked on the non-extractable keys by
// their outputs), the confirmation, and every read_server_hello case. Server-side cases
// (respond, confirm) and the §12 export cases are skipped with the reason in the name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { load, h, hx, fixedEphemeral, parseExport, assertEpochKey, assertHmacKey } from "./helpers.mjs";
import { parseConfig, currentKey } from "../build/esm/config.js";
import { startHandshake, finishHandshake } from "../build/esm/handshake.js";
import { ratchet } from "../build/esm/crypto.js";
import { b64u } from "../build/esm/bytes.js";

const v = load("handshake.json");
const cases = Object.fromEntries(v.cases.map((c) => [c.name, c]));

async function start(c) {
  const config = parseConfig(h(v.config_encoded));
  const key = currentKey(config, c.now_ms);
  assert.equal(key.keyId, c.key_id);
  const eph = await fixedEphemeral(c.client_ephemeral_secret, c.client_ephemeral_public);
  return startHandshake({ config, key, pin: "" }, { versions: c.offer.versions, suites: c.offer.suites, streams: c.offer.streams }, eph);
}

async function checkSession(est, exportHex, what) {
  const ex = parseExport(exportHex);
  assert.equal(hx(est.sessionId), hx(ex.sessionId), what + " session id");
  assert.equal(est.suite, ex.suite, what + " suite");
  assert.equal(est.streams, ex.streams, what + " streams");
  await assertEpochKey(est.secrets.c2s, ex.c2s.key, what + " c2s key");
  await assertEpochKey(est.secrets.s2c, ex.s2c.key, what + " s2c key");
  assert.equal(hx(est.secrets.c2sIv), hx(ex.c2s.iv), what + " c2s iv");
  assert.equal(hx(est.secrets.s2cIv), hx(ex.s2c.iv), what + " s2c iv");
  await assertHmacKey(est.secrets.refusal, ex.refusal, what + " refusal key");
  return ex;
}

for (const c of v.cases) {
  test(`${c.name}: ClientHello from the fixed ephemeral`, async () => {
    const p = await start(c);
    assert.equal(hx(p.clientHello), c.client_hello);
    assert.equal(hx(p.clientHello.subarray(0, c.client_hello_header.length / 2)), c.client_hello_header);
    assert.equal(hx(p.sym.h), c.noise.h_msg1, "h after msg1");
    assert.equal(hx(p.sym.ck), c.noise.ck_es, "ck after es");
  });

  test(`${c.name}: ServerHello → session keys, client_finished, confirmation`, async () => {
    const p = await start(c);
    const est = await finishHandshake(p, h(c.server_hello));
    assert.equal(hx(est.handshakeHash), c.noise.handshake_hash);
    assert.equal(hx(est.sessionId), c.session_id);
    assert.equal(b64u(est.sessionId), c.session_id_text);
    assert.equal(est.expiresAt, c.server_hello_fields.expires_at_ms);
    assert.equal(est.idleTimeout, c.server_hello_fields.idle_timeout_ms);
    assert.equal(est.streams, c.server_hello_fields.streams);
    assert.equal(est.suite, c.server_hello_fields.suite);
    assert.equal(hx(est.ticket), c.ticket);
    assert.equal(hx(est.secrets.clientFinished), c.client_finished);
    assert.equal(hx(est.confirmation), c.confirmation);
    assert.equal(b64u(est.confirmation), c.confirmation_base64url);
    await assertEpochKey(est.secrets.c2s, h(c.keys.c2s_key), "c2s_key");
    await assertEpochKey(est.secrets.s2c, h(c.keys.s2c_key), "s2c_key");
    assert.equal(hx(est.secrets.c2sIv), c.keys.c2s_iv);
    assert.equal(hx(est.secrets.s2cIv), c.keys.s2c_iv);
    await assertHmacKey(est.secrets.refusal, h(c.keys.refusal_key), "refusal_key");
    // Re-keying from the non-extractable key (HMAC form, §10/§18).
    await assertEpochKey(await ratchet(est.secrets.c2s), h(c.keys.c2s_key_epoch1), "c2s_key_epoch1");
    await assertEpochKey(await ratchet(est.secrets.s2c), h(c.keys.s2c_key_epoch1), "s2c_key_epoch1");
    const ex = await checkSession(est, c.client_export_unconfirmed, "client_export_unconfirmed");
    // §18: every session secret is a non-extractable CryptoKey, re-keyed ones included.
    const next = await ratchet(est.secrets.c2s);
    for (const k of [est.secrets.c2s.aead, est.secrets.c2s.mac, est.secrets.s2c.aead, est.secrets.s2c.mac, est.secrets.refusal, next.aead, next.mac]) {
      assert.equal(k.extractable, false);
      await assert.rejects(crypto.subtle.exportKey("raw", k));
    }
    assert.equal(hx(ex.confirmation), c.confirmation, "unconfirmed export carries the confirmation");
  });
}

for (const c of v.extension_cases) {
  if (c.op !== "read_server_hello") {
    test.skip(`extension case ${c.name} (server side: respond)`);
    continue;
  }
  test(`extension case ${c.name}: unknown extension skipped`, async () => {
    const est = await finishHandshake(await start(cases[c.case]), h(c.input));
    assert.equal(est.streams, c.streams);
    await checkSession(est, c.output, c.name);
  });
}

for (const c of v.negative) {
  if (c.op !== "read_server_hello") {
    test.skip(`negative ${c.name} (server side: ${c.op})`);
    continue;
  }
  test(`negative ${c.name} → ${c.error}`, async () => {
    const p = await start(cases[c.case]);
    await assert.rejects(finishHandshake(p, h(c.input)), (e) => {
      assert.equal(e.code, c.error, e.message);
      return true;
    });
  });
}

for (const c of v.export_cases)
  test.skip(`export case ${c.name} (§18: a non-extractable client has no §12 export)`);
