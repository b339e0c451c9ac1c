// WebCrypto wrappers (PROTOCOL §3, §6.3, §6.7, §10, §18). Only the handshake's transient
// values (Noise chaining key, handshake hash, Noise cipher keys) live as bytes in
// JavaScript memory; every session secret is a non-extractable CryptoKey.

import { ProtocolError } from "./errors.js";
import { concat, utf8 } from "./bytes.js";

// crypto.subtle's methods, bound once when the module loads, so replacing them (or
// SubtleCrypto.prototype's) later is not a way to the key material. It is not a boundary:
// script in the same realm can still hook other built-ins the client uses while a
// handshake or re-key runs (TypedArray methods, promise resolution), and script that ran
// before this module can hook anything (PROTOCOL §15).
const S = globalThis.crypto?.subtle;
const BOUND = S && (Object.fromEntries(
  (["digest", "importKey", "exportKey", "sign", "verify", "encrypt", "decrypt", "deriveBits", "deriveKey", "generateKey"] as const)
    .map((m) => [m, (S[m] as (...a: unknown[]) => unknown).bind(S)]),
) as unknown as SubtleCrypto);
const subtle = (): SubtleCrypto => {
  if (!BOUND) throw new ProtocolError("internal", "crypto.subtle is missing (browsers offer it on https:// and localhost only)");
  return BOUND;
};
const bs = (b: Uint8Array): BufferSource => b as unknown as BufferSource;
const HMAC_256 = { name: "HMAC", hash: "SHA-256", length: 256 } as const;

export const randomBytes = (n: number): Uint8Array => globalThis.crypto.getRandomValues(new Uint8Array(n));

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest("SHA-256", bs(data)));
}


export async function sign(key: CryptoKey, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().sign("HMAC", key, bs(data)));
}

/** Noise HKDF2 (§6.3): two 32-byte outputs from the chaining key and input material. */
// Noise's HKDF with two outputs is RFC 5869 HKDF-SHA256 with salt = ck and empty info
// (temp = HMAC(ck, ikm); o1 = HMAC(temp, 0x01); o2 = HMAC(temp, o1 || 0x02)), so WebCrypto
// computes it in one deriveBits: two asynchronous jobs instead of six.
export async function hkdf2(ck: Uint8Array, ikm: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
  const base = await subtle().importKey("raw", bs(ikm), "HKDF", false, ["deriveBits"]);
  const out = new Uint8Array(await subtle().deriveBits({ name: "HKDF", hash: "SHA-256", salt: bs(ck), info: new Uint8Array(0) }, base, 512));
  return [out.slice(0, 32), out.slice(32)];
}

export async function importAesKey(raw: Uint8Array): Promise<CryptoKey> {
  return subtle().importKey("raw", bs(raw), "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** AES-256-GCM; WebCrypto appends the 16-byte tag, which is the record layout. */
export async function aesSeal(key: CryptoKey, nonce: Uint8Array, ad: Uint8Array, pt: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().encrypt({ name: "AES-GCM", iv: bs(nonce), additionalData: bs(ad) }, key, bs(pt)));
}

/** Returns null when the ciphertext does not authenticate. */
export async function aesOpen(key: CryptoKey, nonce: Uint8Array, ad: Uint8Array, ct: Uint8Array): Promise<Uint8Array | null> {
  try {
    return new Uint8Array(await subtle().decrypt({ name: "AES-GCM", iv: bs(nonce), additionalData: bs(ad) }, key, bs(ct)));
  } catch {
    return null;
  }
}

// ---- X25519 -------------------------------------------------------------------------

export interface KeyPair {
  privateKey: CryptoKey;
  publicKey: Uint8Array;
}

export async function x25519Generate(): Promise<KeyPair> {
  // The private half is non-extractable; the public half is always exportable.
  const kp = (await subtle().generateKey({ name: "X25519" }, false, ["deriveBits"])) as CryptoKeyPair;
  return { privateKey: kp.privateKey, publicKey: new Uint8Array(await subtle().exportKey("raw", kp.publicKey)) };
}

/** DH; an all-zero result (a low-order peer point) is refused as §6.3 requires. */
export async function x25519(priv: CryptoKey, peerPublic: Uint8Array): Promise<Uint8Array> {
  let out: Uint8Array;
  try {
    const pub = await subtle().importKey("raw", bs(peerPublic), { name: "X25519" }, true, []);
    out = new Uint8Array(await subtle().deriveBits({ name: "X25519", public: pub } as unknown as AlgorithmIdentifier, priv, 256));
  } catch {
    throw new ProtocolError("handshake_failed", "X25519 failed: invalid or low-order public key");
  }
  if (out.every((b) => b === 0)) throw new ProtocolError("handshake_failed", "X25519 failed: invalid or low-order public key");
  return out;
}

// ---- Ed25519 ------------------------------------------------------------------------

export async function ed25519Verify(pub: Uint8Array, sig: Uint8Array, msg: Uint8Array): Promise<boolean> {
  try {
    const k = await subtle().importKey("raw", bs(pub), { name: "Ed25519" }, false, ["verify"]);
    return await subtle().verify({ name: "Ed25519" }, k, bs(sig), bs(msg));
  } catch {
    return false;
  }
}

// ---- session keys (§6.7, §10, §18) --------------------------------------------------

/** One direction's key for one epoch, held twice from the same bytes: as an AEAD key
 *  for records and as an HMAC key to derive the next epoch's and the streams' keys. */
export interface EpochKey {
  aead: CryptoKey;
  mac: CryptoKey;
}

/** Imports key bytes as a non-extractable epoch key and wipes the bytes. */
export async function epochKeyFromBytes(raw: Uint8Array): Promise<EpochKey> {
  try {
    const [aead, mac] = await Promise.all([
      importAesKey(raw),
      subtle().importKey("raw", bs(raw), HMAC_256, false, ["sign"]),
    ]);
    return { aead, mac };
  } finally {
    raw.fill(0);
  }
}

/** HKDF-Expand with a key as PRK and a one-block output: HMAC(key, info || 0x01). */
export async function expandOneBlock(mac: CryptoKey, info: Uint8Array): Promise<Uint8Array> {
  return sign(mac, concat(info, Uint8Array.of(1)));
}

const REKEY = utf8.encode("sessioncert/1 rekey");
export async function ratchet(k: EpochKey): Promise<EpochKey> {
  return epochKeyFromBytes(await expandOneBlock(k.mac, REKEY));
}

export interface SessionSecrets {
  c2s: EpochKey;
  s2c: EpochKey;
  c2sIv: Uint8Array;
  s2cIv: Uint8Array;
  refusal: CryptoKey;
  clientFinished: Uint8Array;
}

/** §6.7 on WebCrypto: k1 || k2 is imported as an HKDF base key, HKDF (Extract with
 *  salt = h, then Expand with the label) derives non-extractable keys directly. */
export async function deriveSessionSecrets(k1k2: Uint8Array, h: Uint8Array): Promise<SessionSecrets> {
  const s = subtle();
  const base = await s.importKey("raw", bs(k1k2), "HKDF", false, ["deriveKey", "deriveBits"]);
  k1k2.fill(0);
  const p = (label: string) => ({ name: "HKDF", hash: "SHA-256", salt: bs(h), info: bs(utf8.encode("sessioncert/1 " + label)) });
  const aes = { name: "AES-GCM", length: 256 };
  const epoch = async (label: string): Promise<EpochKey> => {
    const [aead, mac] = await Promise.all([
      s.deriveKey(p(label), base, aes, false, ["encrypt", "decrypt"]),
      s.deriveKey(p(label), base, HMAC_256, false, ["sign"]),
    ]);
    return { aead, mac };
  };
  const bits = async (label: string, n: number) => new Uint8Array(await s.deriveBits(p(label), base, n * 8));
  // Independent derivations run concurrently (each is a WebCrypto job).
  const [c2s, s2c, c2sIv, s2cIv, refusal, finished] = await Promise.all([
    epoch("c2s key"), epoch("s2c key"), bits("c2s iv", 12), bits("s2c iv", 12),
    s.deriveKey(p("refusal"), base, HMAC_256, false, ["sign"]),
    s.deriveKey(p("client finished"), base, HMAC_256, false, ["sign"]),
  ]);
  return { c2s, s2c, c2sIv, s2cIv, refusal, clientFinished: await sign(finished, concat(utf8.encode("sessioncert/1 client finished"), h)) };
}

/** Imports a raw HMAC key as non-extractable (tests build sessions from vector keys). */
export async function importHmacKey(raw: Uint8Array): Promise<CryptoKey> {
  return subtle().importKey("raw", bs(raw), HMAC_256, false, ["sign"]);
}
