// The Noise NK handshake (PROTOCOL §6): ClientHello, ServerHello, key schedule and the
// key confirmation. Noise steps follow §6.3 literally; there is no Noise library.

import { Reader, bytes16, concat, u16, u16list, u8, utf8 } from "./bytes.js";
import {
  KeyPair, SessionSecrets, aesOpen, aesSeal, deriveSessionSecrets, hkdf2, importAesKey, sha256, x25519,
} from "./crypto.js";
import { ProtocolError } from "./errors.js";
import type { VerifiedConfig } from "./config.js";

export const MAX_HANDSHAKE_LEN = 4096;
const MAX_TICKET_LEN = 1024;
const EXT_STREAMED_RECORDS = 1;
const PROTOCOL_NAME = "Noise_NK_25519_AESGCM_SHA256";

export interface Offer {
  versions: number[];
  suites: number[];
  streams: boolean;
}

export const SUITE_NAMES: Record<number, string> = { 1: "X25519/AES-256-GCM", 2: "X25519/ChaCha20-Poly1305" };

/** Noise's symmetric state: chaining key, handshake hash, current cipher key. */
class Symmetric {
  h: Uint8Array;
  ck: Uint8Array;
  k: Uint8Array | null = null;
  constructor() {
    this.h = new Uint8Array(32);
    this.h.set(utf8.encode(PROTOCOL_NAME));
    this.ck = this.h.slice();
  }
  async mixHash(x: Uint8Array) {
    this.h = await sha256(concat(this.h, x));
  }
  async mixKey(x: Uint8Array) {
    [this.ck, this.k] = await hkdf2(this.ck, x);
  }
  // Each Noise key in NK encrypts exactly once, so the nonce is always n = 0.
  async encryptAndHash(p: Uint8Array) {
    const c = await aesSeal(await importAesKey(this.k!), new Uint8Array(12), this.h, p);
    await this.mixHash(c);
    return c;
  }
  async decryptAndHash(c: Uint8Array) {
    const p = await aesOpen(await importAesKey(this.k!), new Uint8Array(12), this.h, c);
    if (!p) throw new ProtocolError("handshake_failed", "server hello does not authenticate (not from the signed key's holder)");
    await this.mixHash(c);
    return p;
  }
}

export interface PendingHandshake {
  clientHello: Uint8Array;
  offer: Offer;
  sym: Symmetric;
  eph: KeyPair;
}

/** Builds the ClientHello for the verified configuration's current key (§6.1–6.4). */
export async function startHandshake(cfg: VerifiedConfig, want: Offer, eph: KeyPair): Promise<PendingHandshake> {
  const versions = want.versions;
  if (!versions.some((v) => cfg.config.versions.includes(v)))
    throw new ProtocolError("unsupported_version", "no common protocol version");
  const suites = want.suites.filter((s) => cfg.config.recordSuites.includes(s));
  if (!suites.length) throw new ProtocolError("no_common_suite", "the server does not offer AES-256-GCM");
  const offer = { versions, suites, streams: want.streams };
  const header = concat(u8(1), u16list(versions), u16(1), u8(cfg.key.keyId), u16list(suites));
  const sym = new Symmetric();
  await sym.mixHash(concat(utf8.encode("sessioncert/1 handshake"), header));
  await sym.mixHash(cfg.key.public);
  await sym.mixHash(eph.publicKey);
  await sym.mixKey(await x25519(eph.privateKey, cfg.key.public));
  const payload1 = want.streams ? bytes16(concat(u16(EXT_STREAMED_RECORDS), bytes16(new Uint8Array(0)))) : u16(0);
  const msg1 = concat(eph.publicKey, await sym.encryptAndHash(payload1));
  return { clientHello: concat(header, bytes16(msg1)), offer, sym, eph };
}

export interface Established {
  sessionId: Uint8Array;
  version: number;
  suite: number;
  expiresAt: number;
  idleTimeout: number;
  streams: boolean;
  ticket: Uint8Array;
  secrets: SessionSecrets;
  /** bytes16(ticket) || client_finished (§6.8) */
  confirmation: Uint8Array;
  handshakeHash: Uint8Array;
}

/** Extension list (§6.4): exact framing, no duplicate type, empty streamed_records data. */
function parseExtensions(b: Uint8Array): Set<number> {
  const r = new Reader(b, "extensions");
  const seen = new Set<number>();
  while (r.left) {
    const t = r.u16();
    const data = r.bytes16();
    if (seen.has(t)) throw new ProtocolError("malformed", "extensions: a type appears twice");
    if (t === EXT_STREAMED_RECORDS && data.length) throw new ProtocolError("malformed", "extensions: streamed_records carries data");
    seen.add(t);
  }
  return seen;
}

/** Reads the ServerHello (§6.5, §6.7) and derives the session. */
export async function finishHandshake(p: PendingHandshake, serverHello: Uint8Array): Promise<Established> {
  if (serverHello.length > MAX_HANDSHAKE_LEN) throw new ProtocolError("malformed", "server hello too long");
  const r = new Reader(serverHello, "server hello");
  if (r.u8() !== 2) throw new ProtocolError("malformed", "server hello: wrong message type");
  const msg2 = r.bytes16();
  const ticket = r.bytes16();
  r.end();
  if (!ticket.length || ticket.length > MAX_TICKET_LEN) throw new ProtocolError("malformed", "server hello: ticket of invalid length");
  if (msg2.length < 48) throw new ProtocolError("handshake_failed", "server hello: Noise message too short");
  const { sym } = p;
  const re = msg2.subarray(0, 32);
  await sym.mixHash(re);
  await sym.mixKey(await x25519(p.eph.privateKey, re));
  const payload = new Reader(await sym.decryptAndHash(msg2.subarray(32)), "server hello payload");
  const version = payload.u16();
  const suite = payload.u16();
  if (!SUITE_NAMES[suite]) throw new ProtocolError("malformed", "server hello: unknown record suite");
  const sessionId = payload.take(16);
  const expiresAt = payload.u64();
  const idleTimeout = payload.u64();
  const ext = parseExtensions(payload.bytes16());
  payload.end();
  if (!p.offer.versions.includes(version)) throw new ProtocolError("unsupported_version", "server chose a version not offered");
  if (!p.offer.suites.includes(suite)) throw new ProtocolError("no_common_suite", "server chose a suite not offered");
  const streams = ext.has(EXT_STREAMED_RECORDS);
  if (streams && !p.offer.streams) throw new ProtocolError("malformed", "server accepted streams, which were not offered");
  const [k1, k2] = await hkdf2(sym.ck, new Uint8Array(0));
  const secrets = await deriveSessionSecrets(concat(k1, k2), sym.h);
  k1.fill(0);
  k2.fill(0);
  sym.ck.fill(0);
  return {
    sessionId: sessionId.slice(),
    version,
    suite,
    expiresAt,
    idleTimeout,
    streams,
    ticket: ticket.slice(),
    secrets,
    confirmation: concat(bytes16(ticket), secrets.clientFinished),
    handshakeHash: sym.h,
  };
}

