//! Server-sent events (`text/event-stream`), parsed as the WHATWG HTML standard says
//! (§9.2.6 "Interpreting an event stream"), fed piece by piece.

use std::time::Duration;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` type; `"message"` when the event named none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last event id (`id:`) at the time of this event, if any was set.
    pub id: Option<String>,
    /// A reconnection time (`retry:`) this event's block set, if any.
    pub retry: Option<Duration>,
}

/// An SSE parser: bytes in, events out.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    line: Vec<u8>,
    /// The previous line ended with `\r`: a `\n` right after it belongs to it.
    after_cr: bool,
    started: bool,
    /// Bytes of a byte order mark seen at the start so far.
    bom_seen: usize,
    data: String,
    has_data: bool,
    event: String,
    last_id: Option<String>,
    retry: Option<Duration>,
    /// Bytes held for the event being read (bounded by `max`).
    held: usize,
    max: usize,
}

/// A line or event longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLong;

impl Parser {
    pub(crate) fn new(max: usize) -> Self {
        Parser {
            max,
            ..Parser::default()
        }
    }

    /// Parses `bytes`, appending the events they complete to `out`.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), TooLong> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        for &b in bytes {
            if !self.started {
                // A UTF-8 byte order mark may start the stream (in any split); it is
                // not part of a field.
                if BOM.get(self.bom_seen) == Some(&b) {
                    self.bom_seen += 1;
                    self.started = self.bom_seen == BOM.len();
                    continue;
                }
                self.started = true;
                for &m in &BOM[..self.bom_seen] {
                    self.byte(m, out)?;
                }
            }
            self.byte(b, out)?;
        }
        Ok(())
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Event>) -> Result<(), TooLong> {
        match b {
            b'\n' if self.after_cr => self.after_cr = false,
            b'\r' | b'\n' => {
                self.after_cr = b == b'\r';
                let line = std::mem::take(&mut self.line);
                self.line(&line, out);
            }
            _ => {
                self.after_cr = false;
                self.line.push(b);
                self.held += 1;
                if self.held > self.max {
                    return Err(TooLong);
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.first() == Some(&b':') {
            return; // a comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => self.event = value.into_owned(),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.last_id = Some(value.into_owned()),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {} // unknown fields are ignored
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        self.held = 0;
        let event = std::mem::take(&mut self.event);
        let retry = self.retry.take();
        if !self.has_data {
            // No data: nothing is dispatched (the event type is reset all the same).
            self.data.clear();
            return;
        }
        self.has_data = false;
        out.push(Event {
            event: if event.is_empty() {
                "message".into()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
            retry,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(pieces: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::new(1 << 20);
        let mut out = Vec::new();
        for piece in pieces {
            p.feed(piece, &mut out).unwrap();
        }
        out
    }

    fn parse(text: &str) -> Vec<Event> {
        let whole = parse_in(&[text.as_bytes()]);
        // byte by byte gives the same events
        let bytes: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        assert_eq!(
            parse_in(&bytes),
            whole,
            "split parsing differs for {text:?}"
        );
        whole
    }

    #[test]
    fn data_lines_join_and_a_blank_line_dispatches() {
        let ev = parse("data: one\ndata:two\ndata\n\ndata: {\"i\":1}\n\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "one\ntwo\n");
        assert_eq!(ev[0].event, "message");
        assert_eq!(ev[1].data, "{\"i\":1}");
    }

    #[test]
    fn event_id_retry_and_comments() {
        let ev = parse(
            ": keep-alive\nevent: tick\nid: 7\nretry: 1500\ndata: a\n\ndata: b\n\nretry: x\nid: bad\0id\ndata: c\n\n",
        );
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].event, "tick");
        assert_eq!(ev[0].id.as_deref(), Some("7"));
        assert_eq!(ev[0].retry, Some(Duration::from_millis(1500)));
        // the id persists, the type and retry do not
        assert_eq!(
            (ev[1].event.as_str(), ev[1].id.as_deref(), ev[1].retry),
            ("message", Some("7"), None)
        );
        // an id with NUL and a non-numeric retry are ignored
        assert_eq!((ev[2].id.as_deref(), ev[2].retry), (Some("7"), None));
    }

    #[test]
    fn line_endings_bom_and_unfinished_events() {
        let ev = parse("\u{FEFF}data: x\r\n\r\ndata: y\r\rdata: z\n\ndata: cut");
        assert_eq!(
            ev.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["x", "y", "z"]
        );
        // a CR at the end of one piece and LF at the start of the next: one line end
        let ev = parse_in(&[b"data: a\r", b"\n\r", b"\n"]);
        assert_eq!(ev.len(), 1);
        // no data: no event; an empty id resets it
        let ev = parse("event: x\n\nid: 1\ndata: d\n\nid\ndata: e\n\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event, "message");
        assert_eq!(ev[1].id.as_deref(), Some(""));
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = Parser::new(100);
        let mut out = Vec::new();
        assert_eq!(p.feed(&[b'a'; 101], &mut out), Err(TooLong));
        let mut p = Parser::new(100);
        for _ in 0..50 {
            p.feed(b"data: 1\n", &mut out).unwrap_or(());
        }
        assert_eq!(p.feed(b"data: 1\n", &mut out), Err(TooLong));
    }
}
