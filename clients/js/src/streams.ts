// Streamed bodies (PROTOCOL §8.5): a key per stream, chunks sealed with a nonce made of
// the chunk counter and the last flag, read incrementally as the bytes arrive.

import { concat, u64, u8, utf8 } from "./bytes.js";
import { EpochKey, aesOpen, aesSeal, expandOneBlock, importAesKey } from "./crypto.js";
import { ProtocolError, SessionCertError, TransportError, Truncated } from "./errors.js";
import { Direction } from "./records.js";

export const MAX_CHUNK_LEN = 65536;
const TAG_LEN = 16;

/** stream_key = HMAC(key[epoch], "sessioncert/1 stream" || type || u64 seq || 0x01). */
export async function streamKey(epochKey: EpochKey, type: number, seq: number): Promise<CryptoKey> {
  return importAesKey(await expandOneBlock(epochKey.mac, concat(utf8.encode("sessioncert/1 stream"), u8(type), u64(seq))));
}

/** Validates a 4-byte chunk header (§8.5) and returns the chunk's plaintext length. */
export function chunkLength(h: Uint8Array): number {
  const len = (h[1]! << 16) | (h[2]! << 8) | h[3]!;
  if (h[0]! > 1 || len > MAX_CHUNK_LEN || (len === 0 && h[0] !== 1)) throw new ProtocolError("malformed", "invalid stream chunk header");
  return len;
}

function chunkNonce(i: number, last: boolean): Uint8Array {
  const n = new Uint8Array(12);
  n.set(u64(i), 3);
  n[11] = last ? 1 : 0;
  return n;
}

/** Seals one stream's chunks in order; `header` goes first on the wire. */
export class StreamSealer {
  private i = 0;
  private done = false;
  readonly header: Uint8Array;
  private constructor(private key: CryptoKey, private ad: Uint8Array, type: number, seq: number) {
    this.header = concat(u8(type), u64(seq));
  }
  /** Refuses a stream in a session that did not negotiate streams; the session checks
   *  the same before it takes a seq, so a refused stream never consumes one (§8.5). */
  static async create(dir: Direction, type: number, seq: number, ad: Uint8Array, negotiated: boolean): Promise<StreamSealer> {
    if (!negotiated) throw new ProtocolError("malformed", "stream in a session without streams");
    const k = await dir.keyForSealing(seq);
    return new StreamSealer(await streamKey(k, type, seq), ad, type, seq);
  }
  /** `pt` at most 64 KiB, empty only in the last chunk. The first tag binds the response. */
  async chunk(pt: Uint8Array, last: boolean): Promise<Uint8Array> {
    if (this.done || pt.length > MAX_CHUNK_LEN || (!pt.length && !last)) throw new ProtocolError("internal", "invalid stream chunk");
    this.done = last;
    const len = Uint8Array.of(last ? 1 : 0, pt.length >> 16, (pt.length >> 8) & 0xff, pt.length & 0xff);
    return concat(len, await aesSeal(this.key, chunkNonce(this.i++, last), this.ad, pt));
  }
}

/** Reads a byte stream in exact amounts as it arrives. The buffer grows geometrically
 *  (appending is amortized O(1), so a large body costs linear time) and is never
 *  compacted in place: views handed out by `take` stay valid. */
export class BodyReader {
  private store: Uint8Array = new Uint8Array(0);
  private start = 0;
  private end = 0;
  private eof = false;
  constructor(private reader: ReadableStreamDefaultReader<Uint8Array>) {}
  static of(body: ReadableStream<Uint8Array> | null): BodyReader {
    return new BodyReader((body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() })).getReader());
  }
  get buffered(): number {
    return this.end - this.start;
  }
  private append(v: Uint8Array): void {
    if (this.start === this.end) {
      this.store = v; // nothing buffered: keep the network's chunk as it is
      this.start = 0;
      this.end = v.length;
      return;
    }
    if (this.end + v.length > this.store.length) {
      const live = this.end - this.start;
      const grown = new Uint8Array(Math.max(2 * live, live + v.length, 4096));
      grown.set(this.store.subarray(this.start, this.end));
      this.store = grown;
      this.start = 0;
      this.end = live;
    }
    this.store.set(v, this.end);
    this.end += v.length;
  }
  /** Whether `n` bytes are (or became) available; false if the body ended first. */
  async need(n: number): Promise<boolean> {
    while (this.buffered < n && !this.eof) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await this.reader.read();
      } catch (e) {
        // fetch's own errors (Node: "TypeError: terminated"; browsers: "network error")
        // say nothing a caller can branch on. The client's own errors (a chunk that did
        // not open, read through an opened stream) and the user's abort pass unchanged.
        if (e instanceof SessionCertError || (e as Error)?.name === "AbortError") throw e;
        throw new TransportError("body read failed", e);
      }
      if (r.done) this.eof = true;
      else if (r.value.length) this.append(r.value);
    }
    return this.buffered >= n;
  }
  peek(n: number): Uint8Array {
    return this.store.subarray(this.start, this.start + Math.min(n, this.buffered));
  }
  take(n: number): Uint8Array {
    const k = Math.min(n, this.buffered);
    const s = this.store.subarray(this.start, this.start + k);
    this.start += k;
    return s;
  }
  /** Everything up to the end (bounded by `max`). */
  async rest(max = Infinity): Promise<Uint8Array> {
    while (!this.eof) {
      if (this.buffered > max) throw new ProtocolError("too_large", "body over the client's limit");
      await this.need(this.buffered + 1);
    }
    if (this.buffered > max) throw new ProtocolError("too_large", "body over the client's limit");
    return this.take(this.buffered);
  }
  cancel(reason?: unknown): void {
    this.reader.cancel(reason).catch(() => {});
  }
}

/** `src.need(n)` on a stream's bytes: a connection that fails before the last chunk is
 *  a stream cut short (§8.5), so the caller gets `Truncated` with the failure as cause. */
export async function needInStream(src: BodyReader, n: number): Promise<boolean> {
  try {
    return await src.need(n);
  } catch (e) {
    if (e instanceof TransportError) throw new Truncated(undefined, e.cause ?? e);
    throw e;
  }
}

/** Opens a stream whose 9-byte header was already read and checked: call `next` until
 *  it returns null. Each chunk is checked as its bytes arrive: a bad chunk header is
 *  `malformed`, a body cut short `Truncated` (code `rejected`), bytes after the last
 *  chunk `malformed`. `onFirst` runs once chunk 0 authenticated (the ratchet commit). */
export class StreamOpener {
  private i = 0;
  private ended = false;
  /** The last chunk as it arrived (sealed), for wire observers. */
  lastSealed: Uint8Array = new Uint8Array(0);
  constructor(
    private src: BodyReader,
    private key: CryptoKey,
    private ad: Uint8Array,
    private onFirst: () => void = () => {},
  ) {}

  async next(): Promise<Uint8Array | null> {
    if (this.ended) {
      // The last chunk authenticated, so the body is whole; a connection that fails after
      // it loses nothing (only the check for trailing bytes, which it cannot carry).
      const more = await this.src.need(1).catch((e) => {
        if (e instanceof TransportError) return false;
        throw e;
      });
      if (more) throw new ProtocolError("malformed", "bytes after the stream's last chunk");
      return null;
    }
    if (!(await needInStream(this.src, 4))) throw new Truncated();
    const last = this.src.peek(1)[0]!;
    const len = chunkLength(this.src.peek(4));
    if (!(await needInStream(this.src, 4 + len + TAG_LEN))) throw new Truncated();
    this.lastSealed = this.src.take(4 + len + TAG_LEN).slice();
    const pt = await aesOpen(this.key, chunkNonce(this.i, last === 1), this.ad, this.lastSealed.subarray(4));
    if (!pt) throw new ProtocolError("rejected", `stream chunk ${this.i} does not authenticate (tampered, reordered, spliced)`);
    if (this.i === 0) this.onFirst();
    this.i++;
    this.ended = last === 1;
    return pt;
  }

  get chunksOpened(): number {
    return this.i;
  }
}
