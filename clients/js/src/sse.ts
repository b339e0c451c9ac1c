// A text/event-stream parser (HTML Living Standard, "Server-sent events", parsing an
// event stream): yields each event as soon as its blank line has arrived.

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.pipeThrough(new TextDecoderStream() as unknown as ReadableWritablePair<string, Uint8Array>).getReader();
  let buf = "";
  let data: string[] = [];
  let event = "";
  let lastId: string | undefined;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an event without its blank line is discarded, as the standard says
      buf += value;
      let m: RegExpExecArray | null;
      const eol = /\r\n|\r|\n/g;
      let start = 0;
      while ((m = eol.exec(buf))) {
        // A lone \r at the end of the buffer may be the first half of \r\n: wait for more.
        if (m[0] === "\r" && m.index === buf.length - 1) break;
        const line = buf.slice(start, m.index);
        start = eol.lastIndex;
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n"), ...(lastId !== undefined ? { id: lastId } : {}) };
          data = [];
          event = "";
          continue;
        }
        if (line.startsWith(":")) continue;
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        let v = c < 0 ? "" : line.slice(c + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "data") data.push(v);
        else if (field === "event") event = v;
        else if (field === "id" && !v.includes("\0")) lastId = v;
      }
      buf = buf.slice(start);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
