// The client session: connect (key configuration, handshake), session.fetch (seal the
// request, open the response, header or full mode, records or streams), events(),
// close(), and the at-most-once retry rules of the Rust client (PROTOCOL §14.1).

import { b64u, concat, fromB64u, fromUtf8 } from "./bytes.js";
import { currentKey, parsePin, pinOf, verifyConfig, type VerifiedConfig } from "./config.js";
import { x25519Generate } from "./crypto.js";
import { INDETERMINATE_END, ResponseDecoder, contentChunk, encodeRequest, encodeRequestHead, type RequestHead } from "./bhttp.js";
import { OutcomeUnknown, ProtocolError, Rejected, SessionCertError, SessionExpired, TransportError } from "./errors.js";
import { finishHandshake, startHandshake, SUITE_NAMES, type Established } from "./handshake.js";
import { Direction, T, coverHeaders, openRecord, requestAd, responseAd, sealRecord, tagOf, verifyRefusalTag, type HeaderBinding } from "./records.js";
import { openResponseBody, type Expectation } from "./response.js";
import { parseSse, type SseEvent } from "./sse.js";
import { BodyReader, MAX_CHUNK_LEN, StreamSealer } from "./streams.js";

export interface ConnectOptions {
  /** "ed25519:<base64url>", as `sessioncert fingerprint` prints it. Several while the
   *  server's identity is rotated: the current pin and the next one
   *  (`sessioncert identity prepare` prints it); any of them is accepted. */
  pin?: string | readonly string[];
  /** Trust the first identity seen instead of a pin (an attacker on first contact wins). */
  tofu?: boolean;
  /** Full-request mode by default for this session's fetches. */
  full?: boolean;
  /** Transport (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** Observer of what crossed the wire (for demos and debugging; never sees a key). */
  onWire?: (e: WireEvent) => void;
  /** Offer streamed bodies (PROTOCOL §8.5) in the handshake. Default true. */
  streams?: boolean;
  /** Send ReadableStream request bodies as they are produced. Default: true in Node;
   *  false in browsers, where fetch streams uploads only over HTTP/2, so the sealed
   *  chunks are gathered first (still sealed 64 KiB at a time). */
  streamUploads?: boolean;
}

export type WireEvent =
  | { kind: "config"; url: string; status: number; bytes: Uint8Array }
  | { kind: "client-hello"; bytes: Uint8Array }
  | { kind: "server-hello"; status: number; bytes: Uint8Array }
  | { kind: "established"; sessionId: string; suite: string }
  | { kind: "request"; method: string; url: string; headers: Record<string, string>; bytes: Uint8Array; streamed: boolean }
  | { kind: "request-chunk"; bytes: Uint8Array }
  | { kind: "response"; status: number; headers: Record<string, string>; bytes: Uint8Array; streamed: boolean }
  | { kind: "response-chunk"; bytes: Uint8Array }
  | { kind: "closed"; sessionId: string };

export type SealedInit = RequestInit & { full?: boolean; idempotent?: boolean };

export interface Session {
  /** Session id, unpadded base64url (22 characters); an identifier, never a key. */
  readonly id: string;
  /** The server identity pin that was verified. */
  readonly pin: string;
  /** e.g. "X25519/AES-256-GCM" */
  readonly suite: string;
  /** Whether streamed bodies were negotiated. */
  readonly streams: boolean;
  fetch(input: string | URL | Request, init?: SealedInit): Promise<Response>;
  events(input: string, init?: RequestInit): AsyncIterable<SseEvent>;
  close(): Promise<void>;
}

const WK = "/.well-known/sessioncert/";
const SEALED = "application/sessioncert-sealed";
const HANDSHAKE_CT = "application/sessioncert-handshake";
const IDEMPOTENT = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];
const SESSION_REFUSALS = ["unknown_session", "session_expired", "session_closed"];
/** Headers a sealed request never forwards from the caller (they describe the outer
 *  message, are hop-by-hop, or are the protocol's own). */
const NOT_FORWARDED = /^(content-type|content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|trailer|upgrade|host|sessioncert-.*)$/;
/** Credentials are bound to the record (covered) whenever they are set, as the Rust client does. */
const COVER = ["authorization", "proxy-authorization", "cookie"];
/** In a page, fetch silently drops these (Fetch standard's forbidden request headers), so
 *  a request binding them would be refused by the server as tampered after it was sent. */
const BROWSER_FORBIDDEN = ["cookie", "proxy-authorization"];
const IN_BROWSER = typeof (globalThis as { document?: unknown }).document !== "undefined";
/** Renew this long before the session's own limits, so a request is not refused as expired. */
const RENEW_MARGIN_MS = 5_000;
const CONFIG_MAX_AGE_MS = 300_000;

/** One established (or still matching) session's state. Keys are non-extractable. */
interface Live {
  id: Uint8Array;
  idText: string;
  suite: number;
  streams: boolean;
  expiresAt: number;
  idleTimeout: number;
  lastUsed: number;
  c2s: Direction;
  s2c: Direction;
  refusal: CryptoKey;
  nextSeq: number;
  /** sessioncert-confirm value until a response of the session opened (§6.8). */
  confirm: string | null;
  dead: boolean;
}

/** The canonical origin (§8.2), or an error: WHATWG's serialization already lower-cases,
 *  drops default ports and compresses IPv6; what it keeps but the grammar refuses
 *  (trailing dot, empty label, port 0) is refused here. */
function canonicalOrigin(u: URL): string {
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`sessioncert needs an http(s) URL, not ${u.protocol}`);
  const host = u.hostname;
  if (!host || (!host.startsWith("[") && (host.endsWith(".") || host.includes(".."))) || u.port === "0")
    throw new TypeError(`${u.origin} is not a canonical origin`);
  return u.origin;
}

const headersRecord = (h: Headers): Record<string, string> => Object.fromEntries(h.entries());

class SealedSession implements Session {
  private live: Live | null = null;
  private handshaking: Promise<Live> | null = null;
  private closedForGood = false;
  private lastId = "";
  private verifiedPin = "";
  private identity: Uint8Array[] | null;
  private highWater = -Infinity;
  private cfg: { v: VerifiedConfig; at: number } | null = null;
  private readonly origin: string;
  private readonly transport: typeof fetch;

  constructor(private base: URL, private opts: ConnectOptions) {
    this.origin = canonicalOrigin(base);
    this.transport = opts.fetch ?? globalThis.fetch.bind(globalThis);
    const pins = opts.pin === undefined ? [] : typeof opts.pin === "string" ? [opts.pin] : [...opts.pin];
    if (pins.length > 0) this.identity = pins.map(parsePin);
    else if (opts.tofu) {
      this.identity = null;
      console.warn(`sessioncert: trusting ${this.origin} on first use (no pin): an attacker could impersonate it`);
    } else throw new TypeError("connect needs { pin } (from `sessioncert fingerprint`) or { tofu: true }");
  }

  get id() { return this.live?.idText ?? this.lastId; }
  get pin() { return this.verifiedPin; }
  get suite() { return SUITE_NAMES[this.live?.suite ?? 1]!; }
  get streams() { return this.live?.streams ?? false; }

  private wire(e: WireEvent) {
    try { this.opts.onWire?.(e); } catch { /* an observer never breaks the session */ }
  }

  private async send(url: string, init: RequestInit): Promise<Response> {
    try {
      return await this.transport(url, { cache: "no-store", redirect: "manual", ...init });
    } catch (e) {
      if ((e as Error)?.name === "AbortError" || init.signal?.aborted) throw e;
      throw new TransportError(`request to ${url} failed`, e);
    }
  }

  // ---- handshake --------------------------------------------------------------------

  private async config(fresh: boolean): Promise<VerifiedConfig> {
    const now = Date.now();
    if (!fresh && this.cfg && now - this.cfg.at < CONFIG_MAX_AGE_MS && currentKey(this.cfg.v.config, now)) return this.cfg.v;
    const url = this.origin + WK + "config";
    const res = await this.send(url, { method: "GET" });
    const bytes = await readHandshakeAnswer(res);
    this.wire({ kind: "config", url, status: res.status, bytes });
    if (res.status !== 200) throw await refusalOf(res, bytes, "key configuration");
    const v = await verifyConfig(bytes, this.identity, Date.now());
    if (v.config.issuedAt < this.highWater) {
      // Never used. But when the newest accepted is still usable it is kept: an instance
      // that has not yet re-read a rotated key file serves the older one for up to a
      // minute (PROTOCOL §7 rule 7), and the newer one still works.
      const kept = this.cfg?.v, t = Date.now();
      if (kept && kept.config.issuedAt === this.highWater && t <= kept.config.expiresAt && currentKey(kept.config, t)) return kept;
      throw new ProtocolError("handshake_failed", "key configuration: older configuration than one already accepted (rollback refused)");
    }
    this.identity ??= [v.config.identity]; // trust on first use: this identity from now on
    this.highWater = Math.max(this.highWater, v.config.issuedAt);
    this.verifiedPin = v.pin;
    this.cfg = { v, at: now };
    return v;
  }

  private async handshake(): Promise<Live> {
    let refetched = false;
    for (;;) {
      const cfg = await this.config(refetched);
      const pending = await startHandshake(cfg, { versions: [1], suites: [1], streams: this.opts.streams ?? true }, await x25519Generate());
      this.wire({ kind: "client-hello", bytes: pending.clientHello });
      const res = await this.send(this.origin + WK + "handshake", {
        method: "POST", headers: { "content-type": HANDSHAKE_CT }, body: pending.clientHello as BodyInit,
      });
      const bytes = await readHandshakeAnswer(res);
      this.wire({ kind: "server-hello", status: res.status, bytes });
      if (res.status !== 200) {
        const err = await refusalOf(res, bytes, "handshake");
        // unknown_key: the cached configuration is out of date; refetch it once.
        if (err.code === "unknown_key" && !refetched) { refetched = true; continue; }
        throw err;
      }
      const est: Established = await finishHandshake(pending, bytes);
      const s = est.secrets;
      const live: Live = {
        id: est.sessionId, idText: b64u(est.sessionId), suite: est.suite, streams: est.streams,
        expiresAt: est.expiresAt, idleTimeout: est.idleTimeout, lastUsed: Date.now(),
        c2s: new Direction(s.c2sIv, s.c2s), s2c: new Direction(s.s2cIv, s.s2c), refusal: s.refusal,
        nextSeq: 0, confirm: b64u(est.confirmation), dead: false,
      };
      this.wire({ kind: "established", sessionId: live.idText, suite: SUITE_NAMES[live.suite]! });
      return live;
    }
  }

  /** The session to seal the next request in: a fresh handshake when there is none or
   *  when it is (nearly) over by this client's clock. Concurrent callers share one. */
  async acquire(): Promise<Live> {
    if (this.closedForGood) throw new SessionCertError("session_closed", "this session was closed with close(); connect() again");
    const l = this.live;
    const now = Date.now();
    if (l && !l.dead && now < l.expiresAt - RENEW_MARGIN_MS && now < l.lastUsed + l.idleTimeout - RENEW_MARGIN_MS && l.nextSeq < 2 ** 32)
      return l;
    if (l) this.drop(l);
    this.handshaking ??= this.handshake().then(
      (nl) => { this.live = nl; this.lastId = nl.idText; this.handshaking = null; return nl; },
      (e) => { this.handshaking = null; throw e; },
    );
    return this.handshaking;
  }

  private drop(l: Live) {
    l.dead = true;
    if (this.live === l) this.live = null;
  }

  // ---- fetch ------------------------------------------------------------------------

  async fetch(input: string | URL | Request, init: SealedInit = {}): Promise<Response> {
    const url = input instanceof Request ? new URL(input.url) : new URL(input, this.base);
    if (url.origin !== this.origin) throw new TypeError(`this session is for ${this.origin}; ${url.origin} needs its own connect()`);
    let method: string, headers: Headers, signal: AbortSignal | null | undefined, source: Body;
    const b = init.body;
    if (input instanceof Request) {
      const req = new Request(input, init);
      ({ method, headers, signal } = req);
      source = { bytes: new Uint8Array(await req.arrayBuffer()) };
    } else {
      // What fetch() does with init, without building a Request (which costs more than
      // sealing the body): method normalization, headers, the body and its content type.
      method = init.method ?? "GET";
      if (/^(delete|get|head|options|post|put)$/i.test(method)) method = method.toUpperCase();
      headers = new Headers(init.headers);
      signal = init.signal;
      if (b != null && (method === "GET" || method === "HEAD")) throw new TypeError(`a ${method} request cannot have a body`);
      if (b == null) source = { bytes: new Uint8Array(0) };
      else if (b instanceof ReadableStream) source = { stream: b, used: false }; // one-shot: sealed as it is read
      else {
        // Strings, buffers, Blob, FormData, URLSearchParams: serialized exactly as fetch()
        // would (a copy, the multipart boundary and the default content type included).
        const r = new Response(b);
        source = { bytes: new Uint8Array(await r.arrayBuffer()) };
        const ct = r.headers.get("content-type");
        if (ct && !headers.has("content-type")) headers.set("content-type", ct);
      }
    }
    const req = { method, headers };
    // fetch() cannot send a body with GET, and header mode carries the record in the body
    // for every method but HEAD (§13): a GET therefore always travels in full mode.
    const full = method === "GET" || (init.full ?? this.opts.full ?? false);
    const retrySafe = init.idempotent ?? IDEMPOTENT.includes(method);
    let resent = false;
    for (;;) {
      const live = await this.acquire();
      let attempt: Attempt;
      try {
        attempt = await this.seal(live, req, url, source, full);
      } catch (e) {
        if (e instanceof ProtocolError && e.code === "session_expired") { this.drop(live); continue; }
        throw e;
      }
      let err: unknown;
      try {
        return await this.exchange(live, attempt, signal ?? null);
      } catch (e) {
        err = e;
      }
      if ((err as Error)?.name === "AbortError") throw err;
      const notExecuted = (err instanceof Rejected && err.authenticated) || (err instanceof TransportError && notSent(err));
      const mayResend = retrySafe || notExecuted;
      if (err instanceof Rejected && SESSION_REFUSALS.includes(err.code)) {
        if (!mayResend) throw await this.outcomeUnknown(live, method, url, err);
        this.drop(live);
        const replayable = !("stream" in source);
        if (resent || !replayable)
          throw new SessionExpired(err.code, err.status, err.authenticated,
            err.message + (replayable ? " (again, after one fresh handshake)" : "; the request body was a one-shot stream, so it was not re-sent"));
        resent = true;
        continue;
      }
      if (!mayResend)
        throw await this.outcomeUnknown(live, method, url, err);
      throw err;
    }
  }

  /** The sealed close that settles an unknown outcome (§14.1), then the error. */
  private async outcomeUnknown(live: Live, method: string, url: URL, cause: unknown): Promise<OutcomeUnknown> {
    let settled = false;
    if (!live.dead) {
      try {
        settled = await this.closeLive(live, AbortSignal.timeout(10_000));
      } catch { settled = false; }
    }
    this.drop(live);
    return new OutcomeUnknown(method, url.pathname + url.search, settled, cause);
  }

  /** Seals the request in `live` (takes its seq synchronously after all local checks). */
  private async seal(live: Live, req: { method: string; headers: Headers }, url: URL, source: Body, full: boolean): Promise<Attempt> {
    const method = req.method;
    const innerType = req.headers.get("content-type") ?? "";
    const headers = new Headers();
    const sendUrl = full ? this.origin + WK + "full" : url.href;
    let binding: HeaderBinding | null = null;
    let head: RequestHead | null = null;
    if (full) {
      const h: [string, string][] = [];
      req.headers.forEach((v, k) => { if (!NOT_FORWARDED.test(k) || k === "content-type") h.push([k, v]); });
      head = { method, scheme: url.protocol.slice(0, -1), authority: url.host, path: url.pathname + url.search, headers: h };
    } else {
      if (IN_BROWSER)
        for (const n of BROWSER_FORBIDDEN) if (req.headers.has(n))
          throw new TypeError(`browsers drop a ${n} header, so it cannot be sealed`);
      const covered = coverHeaders(req.headers, COVER.filter((n) => req.headers.has(n)));
      req.headers.forEach((v, k) => { if (!NOT_FORWARDED.test(k)) headers.set(k, v); });
      binding = { method, target: this.origin, path: url.pathname, query: url.search.slice(1), contentType: innerType, covered };
      headers.set("sessioncert-target", this.origin);
      if (innerType) headers.set("sessioncert-content-type", innerType);
      if (covered.length) headers.set("sessioncert-covered", covered.map((c) => c[0]).join(", "));
    }
    headers.set("content-type", SEALED);
    headers.set("sessioncert-id", live.idText);
    if (live.confirm) headers.set("sessioncert-confirm", live.confirm);

    const isHead = !full && method === "HEAD";
    const bytes = "bytes" in source ? source.bytes : null;
    const stream = live.streams && !isHead && (bytes === null || (full ? bytes.length + 512 : bytes.length) > MAX_CHUNK_LEN);
    // Everything local is checked: take the sequence number now, synchronously.
    if (live.nextSeq >= 2 ** 32) throw new ProtocolError("session_expired", "message budget spent");
    const seq = live.nextSeq++;
    const reqType = full ? (stream ? T.fullRequestStream : T.fullRequest) : stream ? T.requestStream : T.request;
    const ad = requestAd(reqType, live.id, seq, binding);
    const wireHeaders = headersRecord(headers);

    if (!stream) {
      const plain = bytes ?? new Uint8Array(await new Response((source as { stream: ReadableStream }).stream).arrayBuffer());
      const record = await sealRecord(live.c2s, reqType, seq, ad, full ? encodeRequest(head!, plain) : plain);
      let body: BodyInit | null = record as BodyInit;
      if (isHead) { headers.set("sessioncert-record", b64u(record)); body = null; }
      this.wire({ kind: "request", method: full ? "POST" : method, url: sendUrl, headers: headersRecord(headers), bytes: record, streamed: false });
      return { seq, full, headers, body, sendUrl, method: full ? "POST" : method, requestTag: Promise.resolve(tagOf(record)) };
    }

    const sealer = await StreamSealer.create(live.c2s, reqType, seq, ad, live.streams);
    let resolveTag!: (t: Uint8Array) => void;
    let rejectTag!: (e: unknown) => void;
    const requestTag = new Promise<Uint8Array>((res, rej) => { resolveTag = res; rejectTag = rej; });
    requestTag.catch(() => {});
    const plainParts = plaintextPieces(source, full ? head : null);
    const wire = (e: WireEvent) => this.wire(e);
    const emit = async (pt: Uint8Array, last: boolean, first: boolean) => {
      const c = await sealer.chunk(pt, last);
      if (!first) {
        wire({ kind: "request-chunk", bytes: c });
        return c;
      }
      resolveTag(tagOf(c));
      const out = concat(sealer.header, c);
      wire({ kind: "request", method: full ? "POST" : method, url: sendUrl, headers: wireHeaders, bytes: out, streamed: true });
      return out;
    };
    const gen = (async function* () {
      // Hold one piece back: only at the end is it known which chunk is the last.
      let held: Uint8Array | null = null;
      let n = 0;
      try {
        for await (const piece of plainParts) {
          if (held) yield await emit(held, false, !n++);
          held = piece;
        }
        yield await emit(held ?? new Uint8Array(0), true, !n);
      } catch (e) {
        rejectTag(e);
        throw e;
      }
    })();
    let body: BodyInit;
    if (this.opts.streamUploads ?? isNode()) {
      body = new ReadableStream<Uint8Array>({
        async pull(c) {
          const n = await gen.next();
          if (n.done) c.close(); else c.enqueue(n.value);
        },
        cancel(r) { void gen.return(r); },
      }) as BodyInit;
    } else {
      const parts: Uint8Array[] = [];
      for await (const p of gen) parts.push(p);
      body = new Blob(parts as BlobPart[]);
    }
    return { seq, full, headers, body, sendUrl, method: full ? "POST" : method, requestTag };
  }

  /** Sends a sealed attempt and opens its answer as a standard Response. */
  private async exchange(live: Live, a: Attempt, signal: AbortSignal | null): Promise<Response> {
    const res = await this.send(a.sendUrl, {
      method: a.method, headers: a.headers, body: a.body, signal: signal ?? null,
      ...(a.body instanceof ReadableStream ? { duplex: "half" } : {}),
    } as RequestInit);
    if (res.headers.has("sessioncert-error")) {
      const bytes = await readBounded(res, MAX_REFUSAL_BODY, true);
      const code = res.headers.get("sessioncert-error")!;
      const tagText = res.headers.get("sessioncert-refusal");
      const tag = tagText ? fromB64u(tagText) : null;
      const authenticated = await verifyRefusalTag(live.refusal, live.id, a.seq, code, tag);
      this.wire({ kind: "response", status: res.status, headers: headersRecord(res.headers), bytes, streamed: false });
      // The session is dropped by the caller: an unknown outcome first tries a sealed
      // close in it (a forged refusal leaves the session alive on the server).
      throw refusalFrom(res, bytes, code, authenticated);
    }
    const ct = (res.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    if (ct !== SEALED) throw new ProtocolError("malformed", `answer to ${a.method} ${a.sendUrl} is not sealed (HTTP ${res.status}): a route without sessioncert, or not from the server`);

    // §13: 204/205/304 travel as 200 + sessioncert-status; the seal binds the real status.
    let status = res.status;
    const st = res.headers.get("sessioncert-status");
    if (st !== null) {
      if (res.status !== 200 || !/^(204|205|304)$/.test(st)) throw new ProtocolError("malformed", "invalid sessioncert-status on a sealed response");
      status = Number(st);
    }
    const innerType = res.headers.get("sessioncert-content-type") ?? "";
    const x: Expectation = {
      sessionId: live.id, seq: a.seq, requestTag: await a.requestTag, full: a.full, status, contentType: innerType, streams: live.streams,
    };
    const opened = () => { live.confirm = null; live.lastUsed = Date.now(); };
    const info = (bytes: Uint8Array, streamed: boolean) =>
      this.wire({ kind: "response", status: res.status, headers: headersRecord(res.headers), bytes, streamed });

    // The opened plaintext as a stream: one piece for a record, chunk by chunk for a stream.
    let plain: ReadableStream<Uint8Array>;
    if (!a.full && a.method === "HEAD") {
      // HEAD: the record travels in the sessioncert-record header (§13).
      const rec = fromB64u(res.headers.get("sessioncert-record") ?? "");
      if (!rec) throw new ProtocolError("malformed", "HEAD response without a valid sessioncert-record");
      info(rec, false);
      await openRecord(live.s2c, rec, T.response, a.seq, responseAd(T.response, live.id, a.seq, x.requestTag, status, innerType));
      opened();
      plain = new ReadableStream({ start: (c) => c.close() });
    } else {
      const src = BodyReader.of(res.body);
      const body = await openResponseBody(live.s2c, src, x);
      info(body.sealed, body.streamed);
      opened();
      if (!body.streamed) {
        const pt = body.plaintext;
        if (!a.full) return new Response(nullBody(status) ? null : (pt as BodyInit), { status, headers: responseHeaders(res.headers, innerType) });
        plain = new ReadableStream({ start: (c) => { if (pt.length) c.enqueue(pt); c.close(); } });
      } else {
        const { opener, chunk0 } = body;
        plain = new ReadableStream<Uint8Array>({
          start: (c) => { if (chunk0.length) c.enqueue(chunk0); },
          pull: async (c) => {
            try {
              const n = await opener.next();
              if (n === null) return c.close();
              this.wire({ kind: "response-chunk", bytes: opener.lastSealed });
              if (n.length) c.enqueue(n);
            } catch (e) {
              src.cancel(e);
              c.error(e);
            }
          },
          cancel: (r) => src.cancel(r),
        });
      }
    }

    if (a.full) {
      const dec = new ResponseDecoder(BodyReader.of(plain));
      const head = await dec.head();
      const h = new Headers();
      for (const [k, v] of head.headers) try { h.append(k, v); } catch { /* forbidden in this environment */ }
      const body = nullBody(head.status) ? null : new ReadableStream<Uint8Array>({
        async pull(c) {
          try {
            const p = await dec.content();
            if (p === null) c.close(); else if (p.length) c.enqueue(p);
          } catch (e) { c.error(e); }
        },
      });
      return new Response(body, { status: head.status, headers: h });
    }
    return new Response(nullBody(status) ? null : plain, { status, headers: responseHeaders(res.headers, innerType) });
  }

  events(input: string, init: RequestInit = {}): AsyncIterable<SseEvent> {
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        const headers = new Headers(init.headers);
        if (!headers.has("accept")) headers.set("accept", "text/event-stream");
        const res = await self.fetch(input, { ...init, headers });
        if (!res.ok || !res.body) throw new SessionCertError("http_status", `events: ${input} answered HTTP ${res.status}`);
        yield* parseSse(res.body);
      },
    };
  }

  /** Sealed close of `live`; true when the server's sealed answer opened (§7). */
  private async closeLive(live: Live, signal?: AbortSignal): Promise<boolean> {
    const url = new URL(WK + "close", this.origin);
    const a = await this.seal(live, { method: "POST", headers: new Headers() }, url, { bytes: new Uint8Array(0) }, false);
    const res = await this.exchange(live, a, signal ?? null);
    await res.arrayBuffer();
    this.drop(live);
    this.wire({ kind: "closed", sessionId: live.idText });
    return res.status === 200;
  }

  async close(): Promise<void> {
    this.closedForGood = true;
    const l = this.live ?? (this.handshaking ? await this.handshaking.catch(() => null) : null);
    if (l && !l.dead) await this.closeLive(l);
  }
}

type Body = { bytes: Uint8Array } | { stream: ReadableStream<Uint8Array>; used: boolean };

interface Attempt {
  seq: number;
  full: boolean;
  method: string;
  sendUrl: string;
  headers: Headers;
  body: BodyInit | null;
  requestTag: Promise<Uint8Array>;
}

/** Header mode: the outer headers minus the protocol's, with the inner content type. */
function responseHeaders(outer: Headers, innerType: string): Headers {
  const h = new Headers();
  outer.forEach((v, k) => { if (!/^(content-type|content-length|transfer-encoding|sessioncert-.*)$/.test(k)) h.append(k, v); });
  if (innerType) h.set("content-type", innerType);
  return h;
}

const nullBody = (s: number) => s === 204 || s === 205 || s === 304;
const isNode = () => typeof process !== "undefined" && !!(globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
declare const process: unknown;

/** A transport failure where the connection was never made (nothing was sent). */
function notSent(e: TransportError): boolean {
  const c = (e.cause as { cause?: { code?: string } })?.cause?.code;
  return c === "ECONNREFUSED" || c === "ENOTFOUND" || c === "EAI_AGAIN";
}

/** Plaintext pieces of at most 64 KiB: the body, wrapped as indeterminate-length Binary
 *  HTTP in full mode. */
async function* plaintextPieces(source: Body, head: RequestHead | null): AsyncGenerator<Uint8Array> {
  const slice = function* (b: Uint8Array) {
    for (let o = 0; o < b.length; o += MAX_CHUNK_LEN) yield b.subarray(o, Math.min(b.length, o + MAX_CHUNK_LEN));
  };
  let pending: Uint8Array = head ? encodeRequestHead(head) : new Uint8Array(0);
  const flush = function* (more: Uint8Array, force: boolean) {
    pending = pending.length ? concat(pending, more) : more;
    while (pending.length >= MAX_CHUNK_LEN || (force && pending.length)) {
      const n = Math.min(pending.length, MAX_CHUNK_LEN);
      yield pending.subarray(0, n);
      pending = pending.subarray(n);
    }
  };
  const content = (b: Uint8Array) => (head ? contentChunk(b) : b);
  if ("bytes" in source) {
    for (const p of slice(source.bytes)) yield* flush(content(p), false);
  } else {
    if (source.used) throw new SessionCertError("local", "the request body stream was already consumed");
    source.used = true;
    const r = source.stream.getReader();
    for (;;) {
      const { value, done } = await r.read();
      if (done) break;
      const v = value instanceof Uint8Array ? value : new Uint8Array(value as ArrayBuffer);
      for (const p of slice(v)) if (p.length) yield* flush(content(p), false);
    }
  }
  yield* flush(head ? INDETERMINATE_END : new Uint8Array(0), true);
}

/** Largest key configuration or ServerHello read (an honest one is a few hundred bytes). */
const MAX_HANDSHAKE_BODY = 64 * 1024;
/** Largest refusal body read; only its message is used, cut to 512 characters. */
const MAX_REFUSAL_BODY = 16 * 1024;
/** §14's codes; anything else in sessioncert-error is not a refusal this client knows. */
const ERROR_CODES = ["malformed", "too_large", "rate_limited", "unsupported_version", "no_common_suite", "unknown_key",
  "handshake_failed", "unknown_session", "session_expired", "session_closed", "rejected", "internal", "misdirected", "unavailable"];

/** A key configuration or ServerHello (refused past its bound), or a refusal (cut). */
const readHandshakeAnswer = (res: Response) =>
  res.headers.has("sessioncert-error") ? readBounded(res, MAX_REFUSAL_BODY, true) : readBounded(res, MAX_HANDSHAKE_BODY, false);

/** A plain body of at most `max` bytes, the rest cancelled, so a huge or endless answer
 *  from the path cannot fill memory: cut to `max` (`cut`) or refused. */
async function readBounded(res: Response, max: number, cut: boolean): Promise<Uint8Array> {
  const src = BodyReader.of(res.body);
  const over = await src.need(max + 1);
  const bytes = src.take(max).slice();
  if (over) {
    src.cancel();
    if (!cut) throw new ProtocolError("too_large", `answer of more than ${max} bytes from the server`);
  }
  return bytes;
}

async function refusalOf(res: Response, bytes: Uint8Array, what: string): Promise<SessionCertError> {
  const code = res.headers.get("sessioncert-error");
  if (code) return refusalFrom(res, bytes, code, false);
  return new ProtocolError("malformed", `${what}: unexpected HTTP ${res.status} from the server`);
}

function refusalFrom(res: Response, bytes: Uint8Array, code: string, authenticated: boolean): Rejected {
  if (!ERROR_CODES.includes(code)) throw new ProtocolError("malformed", `unknown sessioncert-error code ${JSON.stringify(code.slice(0, 40))}`);
  let detail = "";
  try { detail = String(JSON.parse(fromUtf8(bytes)).message ?? "").slice(0, 512); } catch { /* body is informational */ }
  let ra: number | undefined = Number(res.headers.get("retry-after"));
  if (!(ra > 0)) ra = undefined;
  // The code's meaning and the authentication verdict are the client's; the server's
  // message is quoted as unauthenticated text, so it cannot pass for either.
  const msg = `server refused the request: ${code} (HTTP ${res.status})` +
    (authenticated ? ", authenticated: the request was not executed" : "") +
    (detail ? `; its message (unauthenticated): ${JSON.stringify(detail)}` : "");
  return SESSION_REFUSALS.includes(code)
    ? new SessionExpired(code, res.status, authenticated, msg, ra)
    : new Rejected(code, res.status, authenticated, msg, ra);
}

/** Connects to a sessioncert server: verifies its signed key configuration against the
 *  pin (or trusts it on first use) and runs the handshake. The key confirmation rides on
 *  the first request, so this costs two requests (configuration, handshake). */
export async function connect(baseUrl: string | URL, opts: ConnectOptions = {}): Promise<Session> {
  const s = new SealedSession(new URL(baseUrl, (globalThis as { location?: { href: string } }).location?.href), opts);
  await s.acquire();
  // What the caller gets holds the session only in closures: no property of it leads to
  // the session's state, so page script cannot walk to its keys (TypeScript's `private`
  // is not enforced at run time; PROTOCOL §15).
  return Object.freeze({
    get id() { return s.id; },
    get pin() { return s.pin; },
    get suite() { return s.suite; },
    get streams() { return s.streams; },
    fetch: (input: string | URL | Request, init?: SealedInit) => s.fetch(input, init),
    events: (input: string, init?: RequestInit) => s.events(input, init),
    close: () => s.close(),
  });
}

