// Pins and the signed key configuration (PROTOCOL §4, §5).

import { Reader, concat, fromB64u, b64u, utf8 } from "./bytes.js";
import { ed25519Verify } from "./crypto.js";
import { decodeY, strictPrecheck } from "./ed25519.js";
import { ProtocolError, PinMismatch } from "./errors.js";

export const MAX_CLOCK_SKEW = 300_000;
export const MAX_CONFIG_VALIDITY = 604_800_000;
const SIGNING_LABEL = utf8.encode("sessioncert/1 key config\0");

/** Parses "ed25519:<43 base64url chars>" to the 32-byte identity; throws if invalid. */
export function parsePin(text: string): Uint8Array {
  const t = text.trim();
  const key = t.startsWith("ed25519:") ? fromB64u(t.slice(8)) : null;
  if (!key || key.length !== 32 || decodeY(key) === null)
    throw new ProtocolError("malformed", `invalid pin ${JSON.stringify(text)}: expected "ed25519:" and 43 base64url characters, as \`sessioncert fingerprint\` prints`);
  return key;
}

export const pinOf = (identity: Uint8Array): string => "ed25519:" + b64u(identity);

export interface HandshakeKey {
  keyId: number;
  hsSuite: number;
  public: Uint8Array;
  notBefore: number;
  notAfter: number;
}

export interface KeyConfig {
  identity: Uint8Array;
  issuedAt: number;
  expiresAt: number;
  versions: number[];
  recordSuites: number[];
  keys: HandshakeKey[];
}

export function parseConfig(b: Uint8Array): KeyConfig {
  const r = new Reader(b, "key configuration");
  if (String.fromCharCode(...r.take(4)) !== "SCKC" || r.u8() !== 1)
    throw new ProtocolError("malformed", "key configuration: bad magic or format");
  const identity = r.take(32);
  const issuedAt = r.u64();
  const expiresAt = r.u64();
  const versions = r.u16list();
  const recordSuites = r.u16list();
  const keys: HandshakeKey[] = [];
  for (let n = r.u8(); n > 0; n--)
    keys.push({ keyId: r.u8(), hsSuite: r.u16(), public: r.bytes16(), notBefore: r.u64(), notAfter: r.u64() });
  r.end();
  return { identity, issuedAt, expiresAt, versions, recordSuites, keys };
}

/** The current key at `now` (§5.3): suite 1, 32 bytes, valid, largest (not_before, id). */
export function currentKey(c: KeyConfig, now: number): HandshakeKey | null {
  let best: HandshakeKey | null = null;
  for (const k of c.keys)
    if (k.hsSuite === 1 && k.public.length === 32 && k.notBefore <= now && now <= k.notAfter)
      if (!best || k.notBefore > best.notBefore || (k.notBefore === best.notBefore && k.keyId > best.keyId)) best = k;
  return best;
}

export interface VerifiedConfig {
  config: KeyConfig;
  key: HandshakeKey;
  pin: string;
}

/** §5.3, in order. `trust` is the pinned identities (one, or the current and the next
 *  while the server's identity is rotated) or null for trust on first use; `highWater` is
 *  the highest issued_at already accepted from this server, under any of the pins. */
export async function verifyConfig(
  served: Uint8Array,
  trust: Uint8Array | readonly Uint8Array[] | null,
  now: number,
  highWater = -Infinity,
): Promise<VerifiedConfig> {
  if (served.length < 66 || served[0] !== 0 || served[1] !== 1)
    throw new ProtocolError("malformed", "key configuration: unknown signature algorithm or too short");
  const sig = served.subarray(2, 66);
  const config = parseConfig(served.subarray(66));
  const pin = pinOf(config.identity);
  if (trust) {
    const pins = (trust instanceof Uint8Array ? [trust] : trust).map(pinOf);
    if (!pins.includes(pin)) throw new PinMismatch(pins.join(","), pin);
  }
  const ok = strictPrecheck(config.identity, sig) && (await ed25519Verify(config.identity, sig, concat(SIGNING_LABEL, served.subarray(66))));
  const fail = (why: string) => new ProtocolError("handshake_failed", "key configuration: " + why);
  if (!ok) throw fail("signature does not verify under " + pin);
  const { issuedAt: i, expiresAt: e } = config;
  if (!(i < e && e - i <= MAX_CONFIG_VALIDITY && i <= now + MAX_CLOCK_SKEW && now <= e + MAX_CLOCK_SKEW))
    throw fail("stale configuration (check this device's clock)");
  const key = currentKey(config, now);
  if (!key) throw fail("no handshake key is valid now (check this device's clock)");
  if (i < highWater) throw fail("older configuration than one already accepted (rollback refused)");
  return { config, key, pin };
}
