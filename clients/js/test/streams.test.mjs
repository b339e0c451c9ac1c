// test-vectors/streams.json: every streamed scenario sealed chunk by chunk and opened as it
// arrives (header and full mode, both directions, one-chunk streams, record/stream mixes,
// the re-key boundary), every server_open_case through the test-side server and every
// client_open_case through the client's own response reader, with the number of chunks
// that authenticated before the outcome. ChaCha20-Poly1305 is skipped (§18).
import { test } from "node:test";
import assert from "node:assert/strict";
import { load, h, hx, parseExport, directionOf, streamOf, decodeFull } from "./helpers.mjs";
import { TestServer } from "./server-side.mjs";
import { T, requestAd, responseAd, sealRecord, tagOf } from "../build/esm/records.js";
import { StreamSealer, BodyReader } from "../build/esm/streams.js";
import { openResponseBody } from "../build/esm/response.js";
import { encodeRequestHead, contentChunk, INDETERMINATE_END } from "../build/esm/bhttp.js";
import { concat } from "../build/esm/bytes.js";

const v = load("streams.json");
const hb = (b) => (b.mode === "full" ? null : { method: b.method, target: b.target, path: b.path, query: b.query, contentType: b.content_type, covered: b.covered });
const isStream = (t) => [3, 4, 0x83, 0x84].includes(t);

/** Reads a response as the client does; returns { plaintext, chunks } or throws with chunksOpened. */
async function clientOpen(s2c, cx, x, binding, body, piece) {
  let opener = null;
  try {
    const r = await openResponseBody(s2c, BodyReader.of(streamOf(body, piece)), {
      sessionId: cx.sessionId, seq: x.seq, requestTag: h(x.request_tag), full: x.full,
      status: binding.status ?? 0, contentType: binding.content_type ?? "", streams: cx.streams,
    });
    if (!r.streamed) return { plaintext: r.plaintext, chunks: 0 };
    opener = r.opener;
    const parts = [r.chunk0];
    for (let p; (p = await opener.next()) !== null; ) parts.push(p);
    return { plaintext: concat(...parts), chunks: opener.chunksOpened };
  } catch (e) {
    e.chunksOpened = opener?.chunksOpened ?? 0;
    throw e;
  }
}

async function sealBody(dir, sid, msg, ad, negotiated) {
  if (!isStream(msg.record_type)) return sealRecord(dir, msg.record_type, msg.seq, ad, h(msg.plaintext));
  const s = await StreamSealer.create(dir, msg.record_type, msg.seq, ad, negotiated);
  const out = [s.header];
  for (const c of msg.chunks) {
    const sealed = await s.chunk(h(c.plaintext), c.last);
    assert.equal(hx(sealed), c.chunk, `chunk ${c.index}`);
    out.push(sealed);
  }
  return concat(...out);
}

for (const suite of v.suites) {
  if (suite.suite !== 1) {
    test.skip(`streams ${suite.name}: skipped, ChaCha20-Poly1305 is not in WebCrypto (§18)`);
    continue;
  }
  for (const sc of suite.scenarios)
    test(`streams ${suite.name} scenario ${sc.name}`, async () => {
      const cx = parseExport(sc.client_export_start);
      const c2s = await directionOf(cx.c2s);
      const s2c = await directionOf(cx.s2c);
      let nextSeq = cx.nextSeq;
      const bodies = [];
      for (const ex of sc.exchanges) {
        const rq = ex.request;
        assert.equal(rq.seq, nextSeq++);
        const ad = requestAd(rq.record_type, cx.sessionId, rq.seq, hb(rq.binding));
        assert.equal(hx(ad), rq.ad, `${ex.name} request ad`);
        if (rq.full && isStream(rq.record_type)) {
          // The indeterminate-length Binary HTTP the session sends: head, content chunks, end.
          const f = rq.full;
          const head = encodeRequestHead({ method: f.method, scheme: f.scheme, authority: f.authority, path: f.path, headers: f.headers });
          assert.equal(hx(head), rq.chunks[0].plaintext, "Binary HTTP head in chunk 0");
          const content = rq.chunks.slice(1, -1).map((c) => h(c.plaintext));
          const rebuilt = concat(head, ...content, INDETERMINATE_END);
          assert.equal(hx(rebuilt), rq.plaintext);
          const body = Buffer.concat(content.map((c) => c.subarray(1)));
          assert.equal(hx(concat(head, ...content.map((c) => contentChunk(c.subarray(1))), INDETERMINATE_END)), rq.plaintext);
          assert.equal(hx(body), f.body);
        }
        const body = await sealBody(c2s, cx.sessionId, rq, ad, cx.streams);
        assert.equal(hx(body), rq.body, `${ex.name} request body`);
        bodies.push(body);
      }
      const server = await TestServer.of(parseExport(sc.server_export_start));
      for (const i of sc.server_order) {
        const ex = sc.exchanges[i];
        const opened = await server.openBody(streamOf(bodies[i], 11), ex.request.binding);
        assert.equal(hx(opened.plaintext), ex.request.plaintext, `${ex.name} opened by the server`);
        const rs = ex.response;
        const reqTag = isStream(ex.request.record_type) ? tagOf(h(ex.request.chunks[0].chunk)) : tagOf(bodies[i]);
        assert.equal(hx(reqTag), rs.request_tag);
        const full = rs.binding.mode === "full";
        const ad = responseAd(rs.record_type, cx.sessionId, rs.seq, reqTag, full ? null : rs.binding.status, rs.binding.content_type ?? "");
        assert.equal(hx(ad), rs.ad, `${ex.name} response ad`);
        const rbody = await sealBody(server.s2c, cx.sessionId, rs, ad, true);
        assert.equal(hx(rbody), rs.body, `${ex.name} response body`);
        const got = await clientOpen(s2c, cx, { seq: rs.seq, request_tag: rs.request_tag, full }, rs.binding, h(rs.body), 3);
        assert.equal(hx(got.plaintext), rs.plaintext, `${ex.name} response opened by the client`);
        if (rs.full) assert.deepEqual(await decodeFull(got.plaintext), rs.full);
      }
      const cend = parseExport(sc.client_export_end);
      assert.equal(nextSeq, cend.nextSeq);
      assert.equal(c2s.epoch, cend.c2s.epoch);
      assert.equal(s2c.epoch, cend.s2c.epoch);
      const send = parseExport(sc.server_export_end);
      assert.equal(server.c2s.epoch, send.c2s.epoch);
    });

  for (const c of suite.server_open_cases)
    test(`streams ${suite.name} server_open ${c.name}`, async () => {
      const server = await TestServer.of(parseExport(c.server_export));
      for (const [i, st] of c.steps.entries()) {
        const p = server.openBody(streamOf(h(st.body), 5), st.binding);
        if (st.expect.error)
          await assert.rejects(p, (e) => {
            assert.equal(e.code, st.expect.error, `step ${i}: ${e.message}`);
            if ("chunks_opened" in st.expect) assert.equal(e.chunksOpened, st.expect.chunks_opened, `step ${i} chunks opened`);
            return true;
          });
        else {
          const r = await p;
          assert.equal(hx(r.plaintext), st.expect.plaintext, `step ${i}`);
          assert.equal(r.chunks, st.expect.chunks_opened);
        }
      }
    });

  for (const c of suite.client_open_cases)
    for (const piece of [1, 4096])
      test(`streams ${suite.name} client_open ${c.name} (read ${piece === 1 ? "byte by byte" : "at once"}) → ${c.expect.error}`, async () => {
        const cx = parseExport(c.client_export);
        await assert.rejects(clientOpen(await directionOf(cx.s2c), cx, c.expectation, c.binding, h(c.body), piece), (e) => {
          assert.equal(e.code, c.expect.error, e.message);
          assert.equal(e.chunksOpened, c.expect.chunks_opened, "chunks opened before the outcome");
          return true;
        });
      });

  for (const c of suite.client_seal_cases)
    test(`streams ${suite.name} client_seal ${c.name} → ${c.error}`, async () => {
      const cx = parseExport(c.client_export);
      const type = c.binding.mode === "full" ? T.fullRequestStream : T.requestStream;
      await assert.rejects(
        StreamSealer.create(await directionOf(cx.c2s), type, cx.nextSeq, requestAd(type, cx.sessionId, cx.nextSeq, hb(c.binding)), cx.streams),
        (e) => e.code === c.error,
      );
    });
}
