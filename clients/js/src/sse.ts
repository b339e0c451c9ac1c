// A text/event-stream parser (HTML Living Standard, "Server-sent events", parsing an
// event stream): yields each event as soon as its blank line has arrived.

import { ProtocolError } from "./errors.js";

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/** Bounds on what a server can make the client hold for one event. */
const MAX_LINE = 1 << 20;
const MAX_EVENT = 16 << 20;

export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.pipeThrough(new TextDecoderStream() as unknown as ReadableWritablePair<string, Uint8Array>).getReader();
  let buf = "";
  let data: string[] = [];
  let dataLen = 0;
  let event = "";
  let lastId: string | undefined;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an event without its blank line is discarded, as the standard says
      // What is buffered holds no line end but perhaps a trailing \r: only the new text
      // (and that \r) is searched, so a long line costs linear time, not quadratic.
      const eol = /\r\n|\r|\n/g;
      eol.lastIndex = Math.max(0, buf.length - 1);
      buf += value;
      let m: RegExpExecArray | null;
      let start = 0;
      while ((m = eol.exec(buf))) {
        // A lone \r at the end of the buffer may be the first half of \r\n: wait for more.
        if (m[0] === "\r" && m.index === buf.length - 1) break;
        const line = buf.slice(start, m.index);
        start = eol.lastIndex;
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n"), ...(lastId !== undefined ? { id: lastId } : {}) };
          data = [];
          dataLen = 0;
          event = "";
          continue;
        }
        if (line.startsWith(":")) continue;
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        let v = c < 0 ? "" : line.slice(c + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "data" && (dataLen += v.length) > MAX_EVENT) throw new ProtocolError("too_large", "server-sent event over 16 MiB");
        if (field === "data") data.push(v);
        else if (field === "event") event = v;
        else if (field === "id" && !v.includes("\0")) lastId = v;
      }
      buf = buf.slice(start);
      if (buf.length > MAX_LINE) throw new ProtocolError("too_large", "server-sent event line over 1 MiB");
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
