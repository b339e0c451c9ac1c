// Opening a sealed response body as the client reads it (PROTOCOL §8.4, §8.5): the first
// byte tells a record from a stream; a stream's header and chunk 0 are read whole, then
// checked, then chunk 0 is opened before anything is handed on.

import { Reader, concat } from "./bytes.js";
import { ProtocolError, Truncated } from "./errors.js";
import { Direction, T, openRecord, responseAd } from "./records.js";
import { BodyReader, StreamOpener, chunkLength, needInStream, streamKey } from "./streams.js";

/** What the client expects of the answer to one request it sent. */
export interface Expectation {
  sessionId: Uint8Array;
  seq: number;
  requestTag: Uint8Array;
  full: boolean;
  /** header mode: the real status and inner content type bound by the seal */
  status: number;
  contentType: string;
  /** whether the session negotiated streamed records */
  streams: boolean;
}

export type OpenedBody =
  | { streamed: false; sealed: Uint8Array; plaintext: Uint8Array }
  | { streamed: true; sealed: Uint8Array; chunk0: Uint8Array; opener: StreamOpener };

const RECORD_TYPES: number[] = [T.request, T.fullRequest, T.response, T.fullResponse];

export async function openResponseBody(
  s2c: Direction, src: BodyReader, x: Expectation, maxRecord = 64 * 1024 * 1024,
): Promise<OpenedBody> {
  const ad = (type: number) => responseAd(type, x.sessionId, x.seq, x.requestTag, x.full ? null : x.status, x.contentType);
  const first = (await src.need(1)) ? src.peek(1)[0]! : -1;
  if (RECORD_TYPES.includes(first) || first === -1) {
    const rec = await src.rest(maxRecord);
    const type = x.full ? T.fullResponse : T.response;
    return { streamed: false, sealed: rec, plaintext: await openRecord(s2c, rec, type, x.seq, ad(type)) };
  }
  if (![T.requestStream, T.fullRequestStream, T.responseStream, T.fullResponseStream].includes(first as 3))
    throw new ProtocolError("malformed", "sealed body of unknown type");
  // The 9-byte header and chunk 0, whole (a cut here is Truncated: rejected).
  if (!(await needInStream(src, 13))) throw new Truncated();
  const len0 = chunkLength(src.peek(13).subarray(9));
  if (!(await needInStream(src, 13 + len0 + 16))) throw new Truncated();
  if (!x.streams) throw new ProtocolError("malformed", "stream in a session without streams");
  const type = x.full ? T.fullResponseStream : T.responseStream;
  const hdr = new Reader(src.peek(9), "stream header");
  if (hdr.u8() !== type || hdr.u64() !== x.seq)
    throw new ProtocolError("rejected", "sealed stream of another type or request");
  const { key, commit } = s2c.keyForOpening(x.seq);
  const sk = await streamKey(await key, type, x.seq);
  const sealed = concat(src.take(9), src.peek(4 + len0 + 16));
  const opener = new StreamOpener(src, sk, ad(type), commit);
  const chunk0 = (await opener.next())!;
  return { streamed: true, sealed, chunk0, opener };
}
