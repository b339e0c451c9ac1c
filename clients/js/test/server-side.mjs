// A minimal server side for the vector tests, written from PROTOCOL §8.4, §8.5 and §9 on
// the client's own primitives: it opens requests (so server_open_cases and the scenarios'
// requests check this package's associated data, nonces, epochs and stream reader) and
// seals responses. It is test code; the package itself is client-only.
import { Direction, T, requestAd, nonceFor } from "../build/esm/records.js";
import { aesOpen } from "../build/esm/crypto.js";
import { ProtocolError, Truncated } from "../build/esm/errors.js";
import { BodyReader, StreamOpener, streamKey, chunkLength } from "../build/esm/streams.js";
import { directionOf } from "./helpers.mjs";

export class ReplayWindow {
  constructor(top = 0n, words = new Array(16).fill(0n)) {
    this.top = BigInt(top);
    this.words = words.map(BigInt);
  }
  bit(s) { const i = Number(s % 1024n); return [i >> 6, 1n << BigInt(i & 63)]; }
  accepts(seq) {
    const s = BigInt(seq);
    if (this.top === 0n || s >= this.top) return true;
    if (s + 1024n < this.top) return false;
    const [w, m] = this.bit(s);
    return (this.words[w] & m) === 0n;
  }
  mark(seq) {
    const s = BigInt(seq);
    if (s >= this.top) {
      if (s - this.top >= 1024n) this.words.fill(0n);
      else for (let n = this.top; n <= s; n++) { const [w, m] = this.bit(n); this.words[w] &= ~m; }
      this.top = s + 1n;
    }
    const [w, m] = this.bit(s);
    this.words[w] |= m;
  }
  encode() {
    const b = Buffer.alloc(8 * 17);
    b.writeBigUInt64BE(this.top, 0);
    this.words.forEach((w, i) => b.writeBigUInt64BE(w, 8 + 8 * i));
    return b.toString("hex");
  }
}

const readSeq = (b) => Number(Buffer.from(b.subarray(1, 9)).readBigUInt64BE()); // lossy above 2^53: only ever "too big"

export class TestServer {
  static async of(ex) {
    const s = new TestServer();
    s.sessionId = ex.sessionId;
    s.streams = ex.streams;
    s.c2s = await directionOf(ex.c2s);
    s.s2c = await directionOf(ex.s2c);
    s.window = new ReplayWindow(ex.windowTop, ex.window);
    return s;
  }
  adFor(type, seq, binding) {
    const hb = binding.mode === "full" ? null : { method: binding.method, target: binding.target, path: binding.path, query: binding.query, contentType: binding.content_type, covered: binding.covered };
    return requestAd(type, this.sessionId, seq, hb);
  }
  /** §8.4 server steps; returns the plaintext. */
  async openRecord(rec, binding) {
    if (rec.length < 25 || ![1, 2, 0x81, 0x82].includes(rec[0])) throw new ProtocolError("malformed", "record");
    const type = binding.mode === "full" ? T.fullRequest : T.request;
    if (rec[0] !== type) throw new ProtocolError("rejected", "mode");
    const seq = readSeq(rec);
    if (!this.window.accepts(seq)) throw new ProtocolError("rejected", "replay");
    const { key, commit } = this.c2s.keyForOpening(seq);
    const pt = await aesOpen((await key).aead, nonceFor(this.c2s.iv, seq), this.adFor(type, seq, binding), rec.subarray(9));
    if (!pt) throw new ProtocolError("rejected", "seal");
    commit();
    this.window.mark(seq);
    return pt;
  }
  /** §8.5 server steps for a body read as it arrives; returns { plaintext } or throws
   *  with `chunksOpened` on the error. */
  async openBody(body, binding) {
    const src = BodyReader.of(body);
    if (!(await src.need(1))) throw new ProtocolError("malformed", "empty");
    const first = src.peek(1)[0];
    if (![3, 4].includes(first) && ![0x83, 0x84].includes(first)) return { plaintext: await this.openRecord(await src.rest(), binding), chunks: 0 };
    let opener = null;
    try {
      if (!(await src.need(13))) throw new Truncated();
      const len0 = chunkLength(src.peek(13).subarray(9));
      if (!(await src.need(13 + len0 + 16))) throw new Truncated();
      if (!this.streams) throw new ProtocolError("malformed", "not negotiated");
      const type = binding.mode === "full" ? T.fullRequestStream : T.requestStream;
      if (first !== type) throw new ProtocolError("rejected", "type");
      const seq = readSeq(src.peek(9));
      if (!this.window.accepts(seq)) throw new ProtocolError("rejected", "replay");
      const { key, commit } = this.c2s.keyForOpening(seq);
      const sk = await streamKey(await key, type, seq);
      src.take(9);
      opener = new StreamOpener(src, sk, this.adFor(type, seq, binding), () => { commit(); this.window.mark(seq); });
      const parts = [];
      for (let p; (p = await opener.next()) !== null; ) parts.push(p);
      return { plaintext: Buffer.concat(parts), chunks: opener.chunksOpened };
    } catch (e) {
      e.chunksOpened = opener?.chunksOpened ?? 0;
      throw e;
    }
  }
}
