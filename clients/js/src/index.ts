// sessioncert: sealed HTTP for browsers and Node on WebCrypto (see README.md).
export { connect } from "./session.js";
export type { ConnectOptions, Session, WireEvent, SealedInit } from "./session.js";
export type { SseEvent } from "./sse.js";
export {
  SessionCertError, PinMismatch, Rejected, SessionExpired, OutcomeUnknown, Truncated, ProtocolError, TransportError,
} from "./errors.js";
