// Binary HTTP (RFC 9292) for full-request mode (PROTOCOL §11): known-length requests,
// indeterminate-length requests for streamed bodies, and an incremental response decoder
// that accepts both forms (and known-length truncation), so a streamed full-mode
// response yields its content as it opens.

import { concat, fromUtf8, utf8 } from "./bytes.js";
import { ProtocolError } from "./errors.js";
import { BodyReader } from "./streams.js";

export function varint(v: number): Uint8Array {
  if (v < 64) return Uint8Array.of(v);
  if (v < 16384) return Uint8Array.of(0x40 | (v >> 8), v & 0xff);
  if (v < 2 ** 30) return Uint8Array.of(0x80 | (v >>> 24), (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, Math.floor(v / 2 ** 32));
  dv.setUint32(4, v >>> 0);
  b[0]! |= 0xc0;
  return b;
}

const lp = (b: Uint8Array) => concat(varint(b.length), b);
const lpStr = (s: string) => lp(utf8.encode(s));
const fieldLines = (h: [string, string][]) => concat(...h.map(([n, v]) => concat(lpStr(n.toLowerCase()), lpStr(v))));

export interface RequestHead {
  method: string;
  scheme: string;
  authority: string;
  /** path with "?query" */
  path: string;
  headers: [string, string][];
}

const control = (r: RequestHead) => concat(lpStr(r.method), lpStr(r.scheme), lpStr(r.authority), lpStr(r.path));

/** Known-length request (framing indicator 0) with an empty trailer section. */
export function encodeRequest(r: RequestHead, body: Uint8Array): Uint8Array {
  return concat(varint(0), control(r), lp(fieldLines(r.headers)), lp(body), varint(0));
}

/** Indeterminate-length request (indicator 2): the head, then `contentChunk`s, then `END`. */
export const encodeRequestHead = (r: RequestHead) => concat(varint(2), control(r), fieldLines(r.headers), varint(0));
export const contentChunk = (b: Uint8Array) => lp(b);
/** Content terminator and an empty trailer section. */
export const INDETERMINATE_END = Uint8Array.of(0, 0);

const bad = (why: string) => new ProtocolError("malformed", "Binary HTTP response: " + why);

/** Largest field section (names and values) accepted from the server. */
const MAX_SECTION = 256 * 1024;
const tooLarge = () => new ProtocolError("too_large", "binary http header section over 256 KiB");

/** Decodes a Binary HTTP response as its bytes arrive from `src` (the opened plaintext). */
export class ResponseDecoder {
  private known = false;
  private contentLeft = 0;
  private state: "content" | "done" = "content";
  constructor(private src: BodyReader) {}

  /** A varint, or null if the message ended exactly here. */
  private async varint(allowEnd: boolean): Promise<number | null> {
    if (!(await this.src.need(1))) {
      if (allowEnd) return null;
      throw bad("cut short");
    }
    const len = 1 << (this.src.peek(1)[0]! >> 6);
    if (!(await this.src.need(len))) throw bad("cut short");
    const b = this.src.take(len);
    let v = b[0]! & 0x3f;
    for (let i = 1; i < len; i++) v = v * 256 + b[i]!;
    return v;
  }
  private async bytes(n: number): Promise<Uint8Array> {
    if (!(await this.src.need(n))) throw bad("cut short");
    return this.src.take(n).slice();
  }
  /** A field section: length-prefixed (known length; absent = empty, RFC 9292 §3.8) or
   *  field lines up to a zero-length name (indeterminate length). */
  private async fields(): Promise<[string, string][]> {
    let src: ResponseDecoder = this;
    if (this.known) {
      const len = await this.varint(true);
      if (len === null) return [];
      if (len > MAX_SECTION) throw tooLarge();
      const section = await this.bytes(len);
      src = new ResponseDecoder(BodyReader.of(new Blob([section as BlobPart]).stream()));
    }
    const out: [string, string][] = [];
    let total = 0;
    for (;;) {
      const n = await src.varint(this.known);
      if (n === null) return out; // the end of a known-length section
      if (n === 0) {
        if (this.known) throw bad("empty field name");
        return out; // a zero-length name ends an indeterminate-length section
      }
      // A section's names and values together, as the Rust client bounds a response head.
      if ((total += n) > MAX_SECTION) throw tooLarge();
      const name = fromUtf8(await src.bytes(n)).toLowerCase();
      const v = (await src.varint(false))!;
      if ((total += v) > MAX_SECTION) throw tooLarge();
      out.push([name, fromUtf8(await src.bytes(v))]);
    }
  }

  /** Framing, informational responses (dropped), final status and header section. */
  async head(): Promise<{ status: number; headers: [string, string][] }> {
    const framing = await this.varint(false);
    if (framing !== 1 && framing !== 3) throw bad("not a response");
    this.known = framing === 1;
    for (;;) {
      const status = (await this.varint(false))!;
      if (status < 100 || status > 999) throw bad("invalid status");
      const headers = await this.fields();
      if (status >= 200) {
        if (this.known) {
          const len = await this.varint(true);
          this.contentLeft = len ?? 0;
        }
        return { status, headers };
      }
    }
  }

  /** The next piece of content, or null once the message (trailers, padding) ended. */
  async content(): Promise<Uint8Array | null> {
    if (this.state === "done") return null;
    if (this.known) {
      if (this.contentLeft > 0) {
        const avail = Math.max(1, Math.min(this.contentLeft, this.src.buffered || 1));
        if (!(await this.src.need(avail))) throw bad("content cut short");
        const n = Math.min(this.contentLeft, this.src.buffered);
        this.contentLeft -= n;
        return this.src.take(n).slice();
      }
      await this.fields(); // trailers (may be truncated away)
    } else {
      const len = (await this.varint(false))!;
      if (len > 0) return this.bytes(len);
      await this.fields();
    }
    // Only zero padding may follow (RFC 9292 §3.8).
    while (await this.src.need(1)) if (this.src.take(1)[0] !== 0) throw bad("bytes after the message");
    this.state = "done";
    return null;
  }
}
