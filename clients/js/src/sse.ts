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
  // The current line's text so far, kept in pieces: only each new piece is searched for a
  // line end and the pieces are joined once per line, so a long line costs linear time.
  let pending: string[] = [];
  let pendingLen = 0;
  // The previous piece ended in \r: a \n starting this one belongs to that line end.
  let afterCr = false;
  let data: string[] = [];
  let dataLen = 0;
  let event = "";
  let lastId: string | undefined;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an event without its blank line is discarded, as the standard says
      if (!value) continue;
      const eol = /\r\n|\r|\n/g;
      let start = afterCr && value.startsWith("\n") ? 1 : 0;
      eol.lastIndex = start;
      afterCr = false;
      let m: RegExpExecArray | null;
      while ((m = eol.exec(value))) {
        afterCr = m[0] === "\r" && m.index === value.length - 1;
        const line = (pendingLen ? pending.join("") : "") + value.slice(start, m.index);
        pending = [];
        pendingLen = 0;
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
      if (start < value.length) {
        pending.push(value.slice(start));
        if ((pendingLen += value.length - start) > MAX_LINE) throw new ProtocolError("too_large", "server-sent event line over 1 MiB");
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
