// test-vectors/records.json: every scenario sealed and opened byte for byte (header mode
// with target and covered headers, HEAD in sessioncert-record, full mode as Binary HTTP,
// out-of-order opening, the re-key boundary), server_open_cases through the test-side
// server, client_open_cases, client_seal_cases and the refusal tags (§14.1).
// ChaCha20-Poly1305 is not in WebCrypto (§18), so that suite is skipped by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { load, h, hx, parseExport, directionOf, decodeFull } from "./helpers.mjs";
import { TestServer } from "./server-side.mjs";
import { T, requestAd, responseAd, nonceFor, sealRecord, openRecord, tagOf, coverHeaders, verifyRefusalTag } from "../build/esm/records.js";
import { encodeRequest } from "../build/esm/bhttp.js";
import { importHmacKey } from "../build/esm/crypto.js";
import { b64u } from "../build/esm/bytes.js";

const v = load("records.json");
const headerBinding = (b) => ({ method: b.method, target: b.target, path: b.path, query: b.query, contentType: b.content_type, covered: b.covered });

for (const suite of v.suites) {
  if (suite.suite !== 1) {
    test.skip(`records ${suite.name}: skipped, ChaCha20-Poly1305 is not in WebCrypto (§18: the client offers AES-256-GCM only)`);
    continue;
  }
  for (const sc of suite.scenarios)
    test(`records ${suite.name} scenario ${sc.name}`, async () => {
      const cx = parseExport(sc.client_export_start);
      const c2s = await directionOf(cx.c2s);
      const s2c = await directionOf(cx.s2c);
      let nextSeq = cx.nextSeq;
      const sealed = [];
      for (const ex of sc.exchanges) {
        const rq = ex.request;
        assert.equal(rq.seq, nextSeq);
        const seq = nextSeq++;
        let type, ad, pt = h(rq.plaintext);
        if (rq.binding.mode === "header") {
          // The binding is rebuilt from the header fields as they travel.
          const hs = new Headers();
          for (const [n, val] of rq.headers) hs.append(n, val);
          assert.equal(hs.get("sessioncert-target"), rq.binding.target);
          assert.equal(hs.get("sessioncert-content-type") ?? "", rq.binding.content_type);
          const names = (hs.get("sessioncert-covered") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
          assert.deepEqual(coverHeaders(hs, names), rq.binding.covered, "covered values from field lines");
          type = T.request;
          ad = requestAd(type, cx.sessionId, seq, headerBinding(rq.binding));
        } else {
          const f = rq.full;
          assert.equal(hx(encodeRequest({ method: f.method, scheme: f.scheme, authority: f.authority, path: f.path, headers: f.headers }, h(f.body))), rq.plaintext, "Binary HTTP request");
          type = T.fullRequest;
          ad = requestAd(type, cx.sessionId, seq, null);
        }
        assert.equal(hx(ad), rq.ad, `${ex.name} request ad`);
        assert.equal(hx(nonceFor(c2s.iv, seq)), rq.nonce);
        assert.equal(Math.floor(seq / v.rekey_interval), rq.epoch);
        const rec = await sealRecord(c2s, type, seq, ad, pt);
        assert.equal(hx(rec), rq.record, `${ex.name} request record`);
        if (rq.record_base64url) assert.equal(b64u(rec), rq.record_base64url);
        sealed.push(rec);
      }
      const server = await TestServer.of(parseExport(sc.server_export_start));
      for (const i of sc.server_order) {
        const ex = sc.exchanges[i];
        assert.equal(hx(await server.openRecord(sealed[i], ex.request.binding)), ex.request.plaintext, `${ex.name} opened by the server`);
        const rs = ex.response;
        const full = rs.binding.mode === "full";
        const type = full ? T.fullResponse : T.response;
        const ad = responseAd(type, cx.sessionId, ex.request.seq, tagOf(sealed[i]), full ? null : rs.binding.status, rs.binding.content_type ?? "");
        assert.equal(hx(ad), rs.ad, `${ex.name} response ad`);
        const rrec = await sealRecord(server.s2c, type, ex.request.seq, ad, h(rs.plaintext));
        assert.equal(hx(rrec), rs.record, `${ex.name} response record`);
        if (rs.record_base64url) assert.equal(b64u(rrec), rs.record_base64url);
        const opened = await openRecord(s2c, h(rs.record), type, ex.request.seq, ad);
        assert.equal(hx(opened), rs.plaintext, `${ex.name} response opened by the client`);
        if (full) assert.deepEqual(await decodeFull(opened), rs.full, "Binary HTTP response");
      }
      const cend = parseExport(sc.client_export_end);
      assert.equal(nextSeq, cend.nextSeq);
      assert.equal(c2s.epoch, cend.c2s.epoch);
      assert.equal(s2c.epoch, cend.s2c.epoch);
      const send = parseExport(sc.server_export_end);
      assert.equal(server.window.encode(), new (server.window.constructor)(send.windowTop, send.window).encode());
      assert.equal(server.c2s.epoch, send.c2s.epoch);
    });

  for (const c of suite.server_open_cases)
    test(`records ${suite.name} server_open ${c.name}`, async () => {
      const server = await TestServer.of(parseExport(c.server_export));
      for (const [i, st] of c.steps.entries()) {
        const r = server.openRecord(h(st.record), st.binding);
        if (st.expect.error) await assert.rejects(r, (e) => { assert.equal(e.code, st.expect.error, `step ${i}: ${e.message}`); return true; });
        else assert.equal(hx(await r), st.expect.plaintext, `step ${i}`);
      }
    });

  for (const c of suite.client_open_cases)
    test(`records ${suite.name} client_open ${c.name} → ${c.error}`, async () => {
      const cx = parseExport(c.client_export);
      const x = c.expectation;
      const type = x.full ? T.fullResponse : T.response;
      const ad = responseAd(type, cx.sessionId, x.seq, h(x.request_tag), c.binding.mode === "full" ? null : c.binding.status, c.binding.content_type ?? "");
      assert.equal(c.binding.mode === "full", x.full);
      const p = openRecord(await directionOf(cx.s2c), h(c.record), type, x.seq, ad);
      await assert.rejects(p, (e) => { assert.equal(e.code, c.error, e.message); return true; });
    });

  for (const c of suite.client_seal_cases)
    test(`records ${suite.name} client_seal ${c.name} → ${c.error}`, async () => {
      const cx = parseExport(c.client_export);
      const c2s = await directionOf(cx.c2s);
      assert.throws(() => c2s.keyForSealing(cx.nextSeq), (e) => e.code === c.error);
    });

  for (const c of suite.refusal_tag_cases) {
    if (c.tag === null) {
      test.skip(`records ${suite.name} refusal_tag ${c.name} (server side: whether a tag may be issued)`);
      continue;
    }
    test(`records ${suite.name} refusal_tag ${c.name}: the client verifies the server's tag`, async () => {
      const sx = parseExport(c.server_export);
      const rec = h(c.record);
      const seq = Number(Buffer.from(rec.subarray(1, 9)).readBigUInt64BE());
      const key = await importHmacKey(sx.refusal);
      assert.equal(b64u(h(c.tag)), c.tag_base64url);
      assert.equal(await verifyRefusalTag(key, sx.sessionId, seq, c.code, h(c.tag)), true);
    });
  }

  for (const c of suite.refusal_verify_cases)
    test(`records ${suite.name} refusal_verify ${c.name} → ${c.verified}`, async () => {
      const cx = parseExport(c.client_export);
      const key = await importHmacKey(cx.refusal);
      assert.equal(await verifyRefusalTag(key, cx.sessionId, c.seq, c.code, h(c.tag)), c.verified);
    });
}
