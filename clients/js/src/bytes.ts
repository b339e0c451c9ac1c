// Byte helpers: big-endian integers, a strict reader, canonical unpadded base64url
// (PROTOCOL §3, §4) and constant-time comparison. No dependency on Node's Buffer, so the
// same code runs in browsers.

import { ProtocolError } from "./errors.js";

export const utf8 = new TextEncoder();
export const fromUtf8 = (b: Uint8Array): string => new TextDecoder("utf-8", { fatal: true }).decode(b);

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export const u8 = (v: number): Uint8Array => Uint8Array.of(v & 0xff);
export const u16 = (v: number): Uint8Array => Uint8Array.of((v >>> 8) & 0xff, v & 0xff);
export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v);
  return b;
}
/** A u64 from a non-negative safe integer (sequence numbers stay below 2^32). */
export function u64(v: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, Math.floor(v / 2 ** 32));
  dv.setUint32(4, v >>> 0);
  return b;
}
export const bytes16 = (x: Uint8Array): Uint8Array => concat(u16(x.length), x);
export const bytes32 = (x: Uint8Array): Uint8Array => concat(u32(x.length), x);
export const u16list = (v: number[]): Uint8Array => concat(u8(v.length), ...v.map(u16));

/** Reads a message exactly; every shortfall is `malformed` (trailing bytes via `end`). */
export class Reader {
  o = 0;
  constructor(readonly b: Uint8Array, readonly what: string) {}
  take(n: number): Uint8Array {
    if (this.o + n > this.b.length) throw new ProtocolError("malformed", `${this.what}: truncated`);
    const s = this.b.subarray(this.o, this.o + n);
    this.o += n;
    return s;
  }
  u8(): number {
    return this.take(1)[0]!;
  }
  u16(): number {
    const s = this.take(2);
    return (s[0]! << 8) | s[1]!;
  }
  u32(): number {
    const s = this.take(4);
    return new DataView(s.buffer, s.byteOffset, 4).getUint32(0);
  }
  /** u64 as a number; values above 2^53 lose precision, which only ever makes them
   *  differ from every sequence number this client uses. */
  u64(): number {
    const hi = this.u32();
    return hi * 2 ** 32 + this.u32();
  }
  bytes16(): Uint8Array {
    return this.take(this.u16());
  }
  u16list(): number[] {
    const n = this.u8();
    const v: number[] = [];
    for (let i = 0; i < n; i++) v.push(this.u16());
    return v;
  }
  get left(): number {
    return this.b.length - this.o;
  }
  end(): void {
    if (this.left) throw new ProtocolError("malformed", `${this.what}: trailing bytes`);
  }
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const LOOKUP = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) LOOKUP[ALPHABET.charCodeAt(i)] = i;

export function b64u(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Canonical unpadded base64url, or null: no padding, no whitespace, no other alphabet,
 *  no impossible length, and the unused low bits of the last character zero. */
export function fromB64u(s: string): Uint8Array | null {
  if (s.length % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? LOOKUP[c]! : -1;
    if (v < 0) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
    acc &= (1 << bits) - 1;
  }
  return acc === 0 ? out : null;
}

/** Compares without an early exit, so timing tells nothing about where bytes differ. */
export function ctEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
