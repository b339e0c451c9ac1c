//! Streamed bodies (PROTOCOL §8.5) for the raw test client: opening streamed responses,
//! sealing streamed requests, and a bare HTTP/1.1 connection that writes and reads
//! bodies piece by piece (so a test can stop reading, reorder chunks or cut a stream).

use sessioncert_proto::record::RECORD_HEADER_LEN;
use sessioncert_proto::stream::{complete_chunk, StreamOpener, StreamSealer, MAX_CHUNK_LEN};
use sessioncert_proto::{ClientSession, RequestBinding, ResponseBinding, ResponseExpectation};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Opens a response body that is one record or a stream.
pub fn open_response(
    session: &mut ClientSession,
    expect: &ResponseExpectation,
    binding: &ResponseBinding<'_>,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let is_stream = matches!(body.first(), Some(0x83 | 0x84));
    if !is_stream {
        return session
            .open_response(expect, binding, body)
            .map_err(|e| format!("open failed: {e}"));
    }
    let mut r = ResponseStreamReader::default();
    let mut out = Vec::new();
    for c in r.feed(session, expect, binding, body)? {
        out.extend_from_slice(&c);
    }
    r.finish()?;
    Ok(out)
}

/// Opens a streamed response as its bytes arrive.
#[derive(Default)]
pub struct ResponseStreamReader {
    buf: Vec<u8>,
    opener: Option<StreamOpener>,
    pub chunks: u64,
}

impl ResponseStreamReader {
    /// Takes more bytes of the body; returns the plaintext of every chunk completed.
    pub fn feed(
        &mut self,
        session: &mut ClientSession,
        expect: &ResponseExpectation,
        binding: &ResponseBinding<'_>,
        bytes: &[u8],
    ) -> Result<Vec<Vec<u8>>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let start = if self.opener.is_none() {
                RECORD_HEADER_LEN
            } else {
                0
            };
            let Some(rest) = self.buf.get(start..) else {
                return Ok(out);
            };
            let Some(n) = complete_chunk(rest).map_err(|e| e.to_string())? else {
                return Ok(out);
            };
            let mut frame = rest[..n].to_vec();
            let plain = match self.opener.as_mut() {
                None => {
                    let header = self.buf[..RECORD_HEADER_LEN].to_vec();
                    let (c, o) = session
                        .open_response_stream(expect, binding, &header, &mut frame)
                        .map_err(|e| format!("open failed: {e}"))?;
                    self.opener = Some(o);
                    frame[c.plaintext].to_vec()
                }
                Some(o) => {
                    let c = o
                        .open_chunk(&mut frame)
                        .map_err(|e| format!("chunk failed: {e}"))?;
                    frame[c.plaintext].to_vec()
                }
            };
            self.chunks += 1;
            self.buf.drain(..start + n);
            out.push(plain);
        }
    }

    /// The body ended: an error unless the last chunk opened and nothing followed.
    pub fn finish(&self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err("bytes after the stream".into());
        }
        match &self.opener {
            Some(o) => o.finish().map_err(|e| format!("stream: {e}")),
            None => Err("no stream".into()),
        }
    }
}

/// A streamed request being sealed: its chunk frames, in order.
pub struct StreamUpload {
    /// The stream header and first chunk.
    pub start: Vec<u8>,
    pub sealer: Option<StreamSealer>,
    pub expect: ResponseExpectation,
}

impl StreamUpload {
    /// Starts a stream whose first chunk holds `first` (at most 64 KiB).
    pub fn start(
        session: &mut ClientSession,
        binding: &RequestBinding<'_>,
        first: &[u8],
        last: bool,
    ) -> Self {
        let s = session.seal_request_stream(binding, first, last).unwrap();
        StreamUpload {
            start: s.bytes,
            sealer: s.sealer,
            expect: s.expectation,
        }
    }

    /// The next chunk frame(s) for `plain` (split at 64 KiB).
    pub fn chunk(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.sealer
            .as_mut()
            .expect("stream already ended")
            .seal_chunk(plain, &mut out)
            .unwrap();
        out
    }

    /// The last chunk frame(s), holding `plain`.
    pub fn last(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.sealer
            .take()
            .expect("stream already ended")
            .seal_last(plain, &mut out)
            .unwrap();
        out
    }
}

/// Seals a whole body as a stream (chunks of `chunk` bytes) and returns its bytes.
pub fn seal_stream_body(
    session: &mut ClientSession,
    binding: &RequestBinding<'_>,
    body: &[u8],
    chunk: usize,
) -> (Vec<u8>, ResponseExpectation) {
    let chunk = chunk.min(MAX_CHUNK_LEN);
    let first_len = body.len().min(chunk);
    let only = first_len == body.len();
    let mut up = StreamUpload::start(session, binding, &body[..first_len], only);
    let mut out = up.start.clone();
    if !only {
        let rest = &body[first_len..];
        let split = rest.len().saturating_sub(1) / chunk * chunk;
        for piece in rest[..split].chunks(chunk) {
            out.extend_from_slice(&up.chunk(piece));
        }
        out.extend_from_slice(&up.last(&rest[split..]));
    }
    (out, up.expect)
}

/// A variable-length integer (RFC 9000 §16).
pub fn varint(v: u64, out: &mut Vec<u8>) {
    sessioncert_proto::full::write_varint(v, out);
}

/// The head of an indeterminate-length Binary HTTP request (framing indicator 2):
/// content follows as [`bhttp_chunk`]s, then `[0, 0]`.
pub fn bhttp_request_head(
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = vec![2];
    for f in [method, "http", authority, path] {
        varint(f.len() as u64, &mut out);
        out.extend_from_slice(f.as_bytes());
    }
    for (k, v) in headers {
        varint(k.len() as u64, &mut out);
        out.extend_from_slice(k.as_bytes());
        varint(v.len() as u64, &mut out);
        out.extend_from_slice(v.as_bytes());
    }
    out.push(0);
    out
}

/// One content chunk of an indeterminate-length Binary HTTP message.
pub fn bhttp_chunk(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    varint(content.len() as u64, &mut out);
    out.extend_from_slice(content);
    out
}

/// How a response body is framed on an HTTP/1.1 connection.
enum Framing {
    Chunked,
    Length(u64),
    Done,
}

/// A bare HTTP/1.1 client connection.
pub struct H1 {
    r: BufReader<OwnedReadHalf>,
    w: Option<OwnedWriteHalf>,
    framing: Framing,
}

/// A response head.
pub struct Head {
    pub status: u16,
    pub headers: http::HeaderMap,
}

impl H1 {
    pub async fn connect(base: &str) -> Self {
        let addr = base.trim_start_matches("http://");
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (r, w) = s.into_split();
        H1 {
            r: BufReader::with_capacity(64 * 1024, r),
            w: Some(w),
            framing: Framing::Done,
        }
    }

    /// The write half, for a task that writes while this one reads.
    pub fn take_writer(&mut self) -> OwnedWriteHalf {
        self.w.take().expect("the writer was taken")
    }

    fn w(&mut self) -> &mut OwnedWriteHalf {
        self.w.as_mut().expect("the writer was taken")
    }

    /// Writes a request head; `body` is sent with a length, `None` announces a
    /// chunked body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: t\r\n");
        match body {
            Some(b) => head.push_str(&format!("content-length: {}\r\n", b.len())),
            None => head.push_str("transfer-encoding: chunked\r\n"),
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.w().write_all(head.as_bytes()).await.unwrap();
        if let Some(b) = body {
            self.w().write_all(b).await.unwrap();
        }
    }

    /// Sends `wire` as a chunked body in pieces of `piece` bytes from a task of its
    /// own (so the response can be read meanwhile); ignores a connection the server
    /// closed early. The task hands the write half back (dropping it would half-close
    /// the connection before the answer): keep it until the answer is read.
    pub fn send_in_background(
        &mut self,
        wire: Vec<u8>,
        piece: usize,
    ) -> tokio::task::JoinHandle<OwnedWriteHalf> {
        let mut w = self.w.take().expect("the writer was taken");
        tokio::spawn(async move {
            for p in wire.chunks(piece) {
                let framed = [format!("{:x}\r\n", p.len()).as_bytes(), p, b"\r\n"].concat();
                if w.write_all(&framed).await.is_err() {
                    return w;
                }
            }
            let _ = w.write_all(b"0\r\n\r\n").await;
            w
        })
    }

    /// Writes one piece of a chunked body.
    pub async fn send(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let framed = [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat();
        self.w().write_all(&framed).await.unwrap();
    }

    /// Ends a chunked body.
    pub async fn end(&mut self) {
        self.w().write_all(b"0\r\n\r\n").await.unwrap();
    }

    /// Reads a response head.
    pub async fn head(&mut self) -> Head {
        let mut line = String::new();
        self.r.read_line(&mut line).await.unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = http::HeaderMap::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).await.unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.append(
                http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                http::HeaderValue::from_str(v.trim()).unwrap(),
            );
        }
        self.framing = if headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
        {
            Framing::Chunked
        } else {
            let n = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Framing::Length(n)
        };
        Head { status, headers }
    }

    /// The next piece of the response body; `Ok(None)` at its end, `Err` when the
    /// connection ends inside it.
    pub async fn piece(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.framing {
            Framing::Done => Ok(None),
            Framing::Length(0) => {
                self.framing = Framing::Done;
                Ok(None)
            }
            Framing::Length(n) => {
                let mut buf = vec![0; n.min(64 * 1024) as usize];
                let got = self.r.read(&mut buf).await.map_err(|e| e.to_string())?;
                if got == 0 {
                    return Err("connection closed inside the body".into());
                }
                buf.truncate(got);
                self.framing = Framing::Length(n - got as u64);
                Ok(Some(buf))
            }
            Framing::Chunked => {
                let mut line = String::new();
                let n = self
                    .r
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed inside the body".into());
                }
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| format!("bad chunk line {line:?}"))?;
                if size == 0 {
                    line.clear();
                    self.r
                        .read_line(&mut line)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                let mut buf = vec![0; size + 2];
                self.r
                    .read_exact(&mut buf)
                    .await
                    .map_err(|_| "connection closed inside the body".to_string())?;
                buf.truncate(size);
                Ok(Some(buf))
            }
        }
    }

    /// Reads the rest of the body.
    pub async fn body(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(p) = self.piece().await? {
            out.extend_from_slice(&p);
        }
        Ok(out)
    }
}
