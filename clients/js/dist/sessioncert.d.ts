// sessioncert client: type declarations (generated from src/*.ts by scripts/build.mjs)

// ---- errors.ts
export declare class SessionCertError extends Error {
    readonly code: string;
    name: string;
    constructor(code: string, message: string, options?: {
        cause?: unknown;
    });
}
/** The server's signed identity is not the pinned one (or its configuration does not
 *  verify under it): possibly an impostor on the path. Never retried. */
export declare class PinMismatch extends SessionCertError {
    readonly expected: string;
    readonly actual: string;
    name: string;
    constructor(expected: string, actual: string);
}
/** A plain (unsealed) refusal from the server, with its §14 code and HTTP status.
 *  `authenticated` is true only when the refusal carried a valid §14.1 tag, which proves
 *  that the request was not executed. */
export declare class Rejected extends SessionCertError {
    readonly status: number;
    readonly authenticated: boolean;
    readonly retryAfter?: number | undefined;
    name: string;
    constructor(code: string, status: number, authenticated: boolean, message: string, retryAfter?: number | undefined);
}
/** The session ended (expired, closed or unknown to the server) and one fresh handshake
 *  did not get the request through, or the client's own message budget ran out. */
export declare class SessionExpired extends Rejected {
    name: string;
}
/** The request was sent and may or may not have been executed: it was not re-sent,
 *  because doing so could execute it twice. `settled` says whether a sealed close was
 *  confirmed afterwards, i.e. no copy of the request held on the path can still run. */
export declare class OutcomeUnknown extends SessionCertError {
    readonly method: string;
    readonly url: string;
    readonly settled: boolean;
    name: string;
    constructor(method: string, url: string, settled: boolean, cause: unknown);
}
/** A streamed body ended before its last chunk: the data received so far is incomplete
 *  and must not be used as if it were the whole body. */
export declare class Truncated extends SessionCertError {
    name: string;
    constructor(message?: string, cause?: unknown);
}
/** A message that did not parse, authenticate or follow the protocol (local checks). */
export declare class ProtocolError extends SessionCertError {
    name: string;
}
/** The network request failed (fetch threw, or the connection broke). */
export declare class TransportError extends SessionCertError {
    name: string;
    constructor(message: string, cause?: unknown);
}

// ---- sse.ts
export interface SseEvent {
    event: string;
    data: string;
    id?: string;
}

// ---- session.ts
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
export type WireEvent = {
    kind: "config";
    url: string;
    status: number;
    bytes: Uint8Array;
} | {
    kind: "client-hello";
    bytes: Uint8Array;
} | {
    kind: "server-hello";
    status: number;
    bytes: Uint8Array;
} | {
    kind: "established";
    sessionId: string;
    suite: string;
} | {
    kind: "request";
    method: string;
    url: string;
    headers: Record<string, string>;
    bytes: Uint8Array;
    streamed: boolean;
} | {
    kind: "request-chunk";
    bytes: Uint8Array;
} | {
    kind: "response";
    status: number;
    headers: Record<string, string>;
    bytes: Uint8Array;
    streamed: boolean;
} | {
    kind: "response-chunk";
    bytes: Uint8Array;
} | {
    kind: "closed";
    sessionId: string;
};
export type SealedInit = RequestInit & {
    full?: boolean;
    idempotent?: boolean;
};
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
/** Connects to a sessioncert server: verifies its signed key configuration against the
 *  pin (or trusts it on first use) and runs the handshake. The key confirmation rides on
 *  the first request, so this costs two requests (configuration, handshake). */
export declare function connect(baseUrl: string | URL, opts?: ConnectOptions): Promise<Session>;
