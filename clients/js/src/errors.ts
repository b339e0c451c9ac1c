// Typed errors. Every error carries a `code`: a PROTOCOL §14 wire name where the
// protocol defines one, so code can branch on it without parsing messages.

export class SessionCertError extends Error {
  override name = "SessionCertError";
  constructor(readonly code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The server's signed identity is not the pinned one (or its configuration does not
 *  verify under it): possibly an impostor on the path. Never retried. */
export class PinMismatch extends SessionCertError {
  override name = "PinMismatch";
  constructor(readonly expected: string, readonly actual: string) {
    super(
      "handshake_failed",
      `server identity ${actual} is not the pinned ${expected} (wrong pin, or someone on the path)`,
    );
  }
}

/** A plain (unsealed) refusal from the server, with its §14 code and HTTP status.
 *  `authenticated` is true only when the refusal carried a valid §14.1 tag, which proves
 *  that the request was not executed. */
export class Rejected extends SessionCertError {
  override name = "Rejected";
  constructor(
    code: string,
    readonly status: number,
    readonly authenticated: boolean,
    message: string,
    readonly retryAfter?: number,
  ) {
    super(code, message);
  }
}

/** The session ended (expired, closed or unknown to the server) and one fresh handshake
 *  did not get the request through, or the client's own message budget ran out. */
export class SessionExpired extends Rejected {
  override name = "SessionExpired";
}

/** The request was sent and may or may not have been executed: it was not re-sent,
 *  because doing so could execute it twice. `settled` says whether a sealed close was
 *  confirmed afterwards, i.e. no copy of the request held on the path can still run. */
export class OutcomeUnknown extends SessionCertError {
  override name = "OutcomeUnknown";
  constructor(readonly method: string, readonly url: string, readonly settled: boolean, cause: unknown) {
    super(
      "outcome_unknown",
      `${method} ${url} may or may not have run on the server, so it was not re-sent; ` +
        (settled ? "the session was closed (confirmed): nothing held can run later" : "the close was not confirmed: a held copy may run until the session expires") +
        ` (${(cause as Error)?.message ?? cause})`,
      { cause },
    );
  }
}

/** A streamed body ended before its last chunk: the data received so far is incomplete
 *  and must not be used as if it were the whole body. */
export class Truncated extends SessionCertError {
  override name = "Truncated";
  constructor(message = "sealed stream cut short: the body is incomplete", cause?: unknown) {
    super("rejected", message + (cause ? ` (${(cause as Error)?.message ?? cause})` : ""), cause ? { cause } : undefined);
  }
}

/** A message that did not parse, authenticate or follow the protocol (local checks). */
export class ProtocolError extends SessionCertError {
  override name = "ProtocolError";
}

/** The network request failed (fetch threw, or the connection broke). */
export class TransportError extends SessionCertError {
  override name = "TransportError";
  constructor(message: string, cause?: unknown) {
    super("transport", message + (cause ? `: ${(cause as Error)?.message ?? cause}` : ""), { cause });
  }
}
