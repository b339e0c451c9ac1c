// Sealed records (PROTOCOL §8), associated data (§8.2), nonces (§8.1), the per-direction
// epoch keys with re-keying (§10) and refusal tags (§14.1).

import { Reader, bytes32, concat, ctEqual, u64, u8, utf8 } from "./bytes.js";
import { EpochKey, aesOpen, aesSeal, ratchet, sign } from "./crypto.js";
import { ProtocolError } from "./errors.js";

export const T = {
  request: 0x01, fullRequest: 0x02, requestStream: 0x03, fullRequestStream: 0x04,
  response: 0x81, fullResponse: 0x82, responseStream: 0x83, fullResponseStream: 0x84,
} as const;
export const REKEY_INTERVAL = 65536;
export const MAX_MESSAGES = 2 ** 32;
const TAG_LEN = 16;

/** What a header-mode request is bound to (§8.2). */
export interface HeaderBinding {
  method: string;
  target: string;
  path: string;
  query: string;
  contentType: string;
  covered: [string, string][];
}

const str32 = (s: string) => bytes32(utf8.encode(s));

/** The covered values of `names` (§8.2): every field line of a name joined with ", "
 *  (WHATWG Headers.get joins them exactly so), "" when absent; values must be visible
 *  ASCII, spaces and tabs, or the request is refused locally before taking a seq. */
export function coverHeaders(h: Headers, names: string[]): [string, string][] {
  if (names.length > 16) throw new ProtocolError("malformed", "at most 16 headers can be covered");
  return names.map((n) => {
    const v = h.get(n) ?? "";
    if (!/^[\x20-\x7e\t]*$/.test(v)) throw new ProtocolError("malformed", `header ${n} must be visible ASCII to be sealed`);
    return [n, v];
  });
}

export function requestAd(type: number, sessionId: Uint8Array, seq: number, b: HeaderBinding | null): Uint8Array {
  const head = concat(utf8.encode("sessioncert/1 request"), u8(type), sessionId, u64(seq));
  if (!b) return head;
  return concat(
    head, str32(b.method), str32(b.target), str32(b.path), str32(b.query), str32(b.contentType),
    u8(b.covered.length), ...b.covered.flatMap(([n, v]) => [str32(n), str32(v)]),
  );
}

/** `status`/`contentType` only in header mode (null for full mode). */
export function responseAd(
  type: number, sessionId: Uint8Array, seq: number, requestTag: Uint8Array, status: number | null, contentType: string,
): Uint8Array {
  const head = concat(utf8.encode("sessioncert/1 response"), u8(type), sessionId, u64(seq), requestTag);
  return status === null ? head : concat(head, u8(status >> 8), u8(status), str32(contentType));
}

export function nonceFor(iv: Uint8Array, seq: number): Uint8Array {
  const n = iv.slice();
  const s = u64(seq);
  for (let i = 0; i < 8; i++) n[4 + i]! ^= s[i]!;
  return n;
}

/** One direction's keys: the current epoch's, and the previous epoch's once advanced. */
export class Direction {
  private cur: Promise<EpochKey>;
  private prev: Promise<EpochKey> | null = null;
  constructor(readonly iv: Uint8Array, key: EpochKey | Promise<EpochKey>, public epoch = 0, prev?: EpochKey) {
    this.cur = Promise.resolve(key);
    if (prev) this.prev = Promise.resolve(prev);
  }

  /** The key for sealing `seq`; entering the next epoch advances at once (synchronously,
   *  so concurrent seals agree on the epoch). */
  keyForSealing(seq: number): Promise<EpochKey> {
    if (seq >= MAX_MESSAGES) throw new ProtocolError("session_expired", "the session's message budget is spent");
    const e = Math.floor(seq / REKEY_INTERVAL);
    if (e === this.epoch) return this.cur;
    if (e === this.epoch - 1 && this.prev) return this.prev;
    if (e === this.epoch + 1) {
      this.prev = this.cur;
      this.cur = this.cur.then(ratchet);
      this.epoch = e;
      return this.cur;
    }
    throw new ProtocolError("internal", "sequence number outside the key schedule");
  }

  /** The key for opening `seq`, and a commit to call once something authenticated under
   *  it (a receiver advances only then, §10). Unusable epochs are `rejected`. */
  keyForOpening(seq: number): { key: Promise<EpochKey>; commit: () => void } {
    const e = Math.floor(seq / REKEY_INTERVAL);
    const none = () => {};
    if (seq >= MAX_MESSAGES) throw new ProtocolError("rejected", "sequence number past the session's budget");
    if (e === this.epoch) return { key: this.cur, commit: none };
    if (e === this.epoch - 1 && this.prev) return { key: this.prev, commit: none };
    if (e === this.epoch + 1) {
      const from = this.cur;
      const next = from.then(ratchet);
      return {
        key: next,
        commit: () => {
          if (this.epoch === e - 1 && this.cur === from) {
            this.prev = this.cur;
            this.cur = next;
            this.epoch = e;
          }
        },
      };
    }
    throw new ProtocolError("rejected", "sequence number outside the usable epochs");
  }
}

export async function sealRecord(dir: Direction, type: number, seq: number, ad: Uint8Array, pt: Uint8Array): Promise<Uint8Array> {
  const key = await dir.keyForSealing(seq);
  return concat(u8(type), u64(seq), await aesSeal(key.aead, nonceFor(dir.iv, seq), ad, pt));
}

/** The last 16 bytes of a request record (or of a stream's first chunk, §8.5). */
export const tagOf = (rec: Uint8Array) => rec.slice(rec.length - TAG_LEN);

/** Client side of §8.4: parse, check type and seq, select the epoch, open. */
export async function openRecord(
  dir: Direction, rec: Uint8Array, type: number, seq: number, ad: Uint8Array,
): Promise<Uint8Array> {
  if (rec.length < 9 + TAG_LEN || ![1, 2, 0x81, 0x82].includes(rec[0]!))
    throw new ProtocolError("malformed", "sealed record too short or of unknown type");
  const r = new Reader(rec, "record");
  const t = r.u8();
  const s = r.u64();
  if (t !== type || s !== seq) throw new ProtocolError("rejected", "sealed record of another type or request");
  const { key, commit } = dir.keyForOpening(seq);
  const pt = await aesOpen((await key).aead, nonceFor(dir.iv, seq), ad, rec.subarray(9));
  if (!pt) throw new ProtocolError("rejected", "sealed record does not authenticate (tampered, or not this request's answer)");
  commit();
  return pt;
}

/** §14.1: whether `tag` proves the server did not (and never will) run request `seq`. */
export async function verifyRefusalTag(
  refusalKey: CryptoKey, sessionId: Uint8Array, seq: number, code: string, tag: Uint8Array | null,
): Promise<boolean> {
  if (!tag || (code !== "session_expired" && code !== "session_closed")) return false;
  const c = utf8.encode(code);
  const expected = await sign(refusalKey, concat(utf8.encode("sessioncert/1 refusal"), sessionId, u64(seq), u8(c.length), c));
  return ctEqual(expected, tag);
}
