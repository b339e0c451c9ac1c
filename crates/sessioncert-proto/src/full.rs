//! Full-request mode: a whole HTTP request or response as a Binary HTTP message
//! (RFC 9292, known-length form), sealed as one record. Only the session id stays
//! visible on the wire; method, path, query, headers and status travel inside.

use crate::ProtocolError;
use bhttp::{Message, Mode, StatusCode};
use std::io::Cursor;

/// An HTTP request as carried in full-request mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullRequest {
    /// Method, e.g. `POST`.
    pub method: String,
    /// `https` or `http` (informational; the outer connection decides).
    pub scheme: String,
    /// Host and port, may be empty.
    pub authority: String,
    /// Path and query, e.g. `/notes?limit=5`.
    pub path: String,
    /// Header fields, names lower-case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
}

/// An HTTP response as carried in full-request mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullResponse {
    /// Status code (200–599).
    pub status: u16,
    /// Header fields, names lower-case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
}

fn bad() -> ProtocolError {
    ProtocolError::malformed("binary http message")
}

fn text(b: Option<&[u8]>) -> Result<String, ProtocolError> {
    String::from_utf8(b.unwrap_or_default().to_vec()).map_err(|_| bad())
}

fn read(bytes: &[u8]) -> Result<Message, ProtocolError> {
    let mut cur = Cursor::new(bytes);
    let msg = Message::read_bhttp::<_, Cursor<&[u8]>>(&mut cur).map_err(|_| bad())?;
    // RFC 9292 §3.8: only zero padding may follow a message.
    let used = usize::try_from(cur.position()).map_err(|_| bad())?;
    if bytes[used..].iter().any(|b| *b != 0) {
        return Err(bad());
    }
    Ok(msg)
}

fn fields(msg: &Message) -> Vec<(String, Vec<u8>)> {
    msg.header()
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(f.name()).to_ascii_lowercase(),
                f.value().to_vec(),
            )
        })
        .collect()
}

impl FullRequest {
    /// Encodes as a known-length Binary HTTP request.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Message::request(
            self.method.as_bytes().to_vec(),
            self.scheme.as_bytes().to_vec(),
            self.authority.as_bytes().to_vec(),
            self.path.as_bytes().to_vec(),
        );
        for (k, v) in &self.headers {
            m.put_header(k.to_ascii_lowercase().into_bytes(), v.clone());
        }
        m.write_content(&self.body);
        let mut out = Vec::with_capacity(self.body.len() + 64);
        // Writing to a Vec cannot fail.
        let _ = m.write_bhttp(Mode::KnownLength, &mut out);
        out
    }

    /// Decodes a Binary HTTP request; refuses responses and malformed input.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let m = read(bytes)?;
        let c = m.control();
        if !c.is_request() {
            return Err(bad());
        }
        let path = text(c.path())?;
        if !path.starts_with('/') {
            return Err(bad());
        }
        Ok(FullRequest {
            method: text(c.method())?,
            scheme: text(c.scheme())?,
            authority: text(c.authority())?,
            path,
            headers: fields(&m),
            body: m.content().to_vec(),
        })
    }
}

impl FullResponse {
    /// Encodes as a known-length Binary HTTP response.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let status = StatusCode::try_from(self.status).map_err(|_| bad())?;
        let mut m = Message::response(status);
        for (k, v) in &self.headers {
            m.put_header(k.to_ascii_lowercase().into_bytes(), v.clone());
        }
        m.write_content(&self.body);
        let mut out = Vec::with_capacity(self.body.len() + 64);
        m.write_bhttp(Mode::KnownLength, &mut out)
            .map_err(|_| bad())?;
        Ok(out)
    }

    /// Decodes a Binary HTTP response (informational responses are dropped).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let m = read(bytes)?;
        let status = m.control().status().ok_or_else(bad)?.code();
        Ok(FullResponse {
            status,
            headers: fields(&m),
            body: m.content().to_vec(),
        })
    }
}

/// A QUIC variable-length integer (RFC 9000 §16) at the front of `b`, as Binary HTTP
/// frames its lengths: its value and its length in bytes, `None` when `b` holds only
/// part of it (a streaming reader then waits for more).
pub fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let rest = b.get(1..len)?;
    let v = rest
        .iter()
        .fold(u64::from(first & 0x3f), |v, x| v << 8 | u64::from(*x));
    Some((v, len))
}

/// Appends `v` (below 2^62) as a variable-length integer, in its shortest form.
pub fn write_varint(v: u64, out: &mut Vec<u8>) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&((v & 0x3fff_ffff_ffff_ffff) | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_in_their_shortest_form_and_wait_when_cut() {
        for (v, len) in [
            (0u64, 1),
            (63, 1),
            (64, 2),
            (16_383, 2),
            (16_384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            ((1 << 62) - 1, 8),
        ] {
            let mut out = Vec::new();
            write_varint(v, &mut out);
            assert_eq!(out.len(), len, "{v}");
            assert_eq!(read_varint(&out), Some((v, len)));
            assert_eq!(read_varint(&out[..len - 1]), None, "cut");
        }
        assert_eq!(read_varint(&[0x40, 0xc9]), Some((201, 2)), "RFC 9292's 201");
    }
    use proptest::prelude::*;

    fn req() -> FullRequest {
        FullRequest {
            method: "POST".into(),
            scheme: "https".into(),
            authority: "api.example".into(),
            path: "/notes?x=1".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: br#"{"a":1}"#.to_vec(),
        }
    }

    #[test]
    fn request_round_trip() {
        let r = req();
        assert_eq!(FullRequest::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn rfc9292_known_length_request_example() {
        // RFC 9292 §5, first example: GET /hello.txt with three header fields.
        let hexs = "000347455405687474707300\
                    0a2f68656c6c6f2e747874 40 6c\
                    0a757365722d6167656e74 34 6375726c2f372e31362e33206c69626375726c2f372e31362e33204f70656e53534c2f302e392e376c207a6c69622f312e322e33\
                    04686f7374 0f7777772e6578616d706c652e636f6d\
                    0f6163636570742d6c616e6775616765 06656e2c206d69\
                    0000";
        let bytes = hex::decode(hexs.replace(' ', "")).unwrap();
        let r = FullRequest::decode(&bytes).unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/hello.txt");
        assert_eq!(r.headers.len(), 3);
        assert_eq!(r.headers[1], ("host".into(), b"www.example.com".to_vec()));
    }

    #[test]
    fn response_round_trip_and_kind_checks() {
        let r = FullResponse {
            status: 201,
            headers: vec![("x-a".into(), b"b".to_vec())],
            body: b"ok".to_vec(),
        };
        let enc = r.encode().unwrap();
        assert_eq!(FullResponse::decode(&enc).unwrap(), r);
        assert!(
            FullRequest::decode(&enc).is_err(),
            "a response is not a request"
        );
        let mut padded = enc.clone();
        padded.extend_from_slice(&[0, 0]);
        assert!(
            FullResponse::decode(&padded).is_ok(),
            "zero padding allowed"
        );
        padded.push(1);
        assert!(FullResponse::decode(&padded).is_err(), "junk after message");
        assert!(FullResponse {
            status: 42,
            headers: vec![],
            body: vec![]
        }
        .encode()
        .is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = FullRequest::decode(&bytes);
            let _ = FullResponse::decode(&bytes);
        }
    }
}
