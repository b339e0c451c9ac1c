//! Sealed records: the body of every sealed request and response.
//!
//! ```text
//! record = type (u8) || seq (u64, big-endian) || AEAD ciphertext || tag (16)
//! ```
//!
//! The associated data binds everything an attacker could otherwise swap: the record
//! type (so a header-mode record cannot pass as a full-mode one), the session id, the
//! sequence number, the request's method, target origin, path, query, content type and
//! covered headers, and for a response also the request's tag, its status and content
//! type — so a response only opens as the answer to the one request it was made for.

use crate::codec::{Reader, Writer};
use crate::crypto::TAG_LEN;
use crate::{ProtocolError, SessionId};

/// Length of the record header (type + seq).
pub const RECORD_HEADER_LEN: usize = 9;

/// Which way a record travels and which mode it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// Request body sealed, request line and content type bound as associated data.
    Request,
    /// A whole Binary HTTP request sealed (full-request mode).
    FullRequest,
    /// Response body sealed, status and content type bound.
    Response,
    /// A whole Binary HTTP response sealed.
    FullResponse,
    /// A header-mode request body sealed as a stream of chunks (PROTOCOL §8.5).
    RequestStream,
    /// A Binary HTTP request sealed as a stream of chunks.
    FullRequestStream,
    /// A header-mode response body sealed as a stream of chunks.
    ResponseStream,
    /// A Binary HTTP response sealed as a stream of chunks.
    FullResponseStream,
}

impl RecordType {
    /// The wire byte.
    pub const fn byte(self) -> u8 {
        match self {
            RecordType::Request => 0x01,
            RecordType::FullRequest => 0x02,
            RecordType::Response => 0x81,
            RecordType::FullResponse => 0x82,
            RecordType::RequestStream => 0x03,
            RecordType::FullRequestStream => 0x04,
            RecordType::ResponseStream => 0x83,
            RecordType::FullResponseStream => 0x84,
        }
    }

    /// The type of a wire byte; `None` for a byte no version-1 peer sends.
    pub const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => RecordType::Request,
            0x02 => RecordType::FullRequest,
            0x81 => RecordType::Response,
            0x82 => RecordType::FullResponse,
            0x03 => RecordType::RequestStream,
            0x04 => RecordType::FullRequestStream,
            0x83 => RecordType::ResponseStream,
            0x84 => RecordType::FullResponseStream,
            _ => return None,
        })
    }

    /// Whether a body of this type is a stream of chunks rather than one record.
    pub const fn is_stream(self) -> bool {
        matches!(
            self,
            RecordType::RequestStream
                | RecordType::FullRequestStream
                | RecordType::ResponseStream
                | RecordType::FullResponseStream
        )
    }

    /// Whether a client sends this type (a request), as opposed to a server.
    pub const fn is_request(self) -> bool {
        matches!(
            self,
            RecordType::Request
                | RecordType::FullRequest
                | RecordType::RequestStream
                | RecordType::FullRequestStream
        )
    }
}

/// The request metadata bound in header mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// HTTP method, as sent (e.g. `POST`).
    pub method: &'a str,
    /// The origin the client meant to reach, `scheme://authority` as sent in the
    /// `sessioncert-target` header (PROTOCOL §8.2), e.g. `https://api.example.com`.
    pub target: &'a str,
    /// Path as sent on the wire (percent-encoding untouched), starting with `/`.
    pub path: &'a str,
    /// Query without the `?`; empty when there is none.
    pub query: &'a str,
    /// The inner content type (the `sessioncert-content-type` header); empty if none.
    pub content_type: &'a str,
    /// Covered request headers, in the order the `sessioncert-covered` header names
    /// them: lower-case name and the value (several field lines joined with `", "`).
    pub covered: &'a [(&'a str, &'a str)],
}

/// Most request headers one request may cover.
pub const MAX_COVERED_HEADERS: usize = 16;

/// What a sealed request record is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBinding<'a> {
    /// Header mode: the visible request line and the inner content type.
    Header(RequestLine<'a>),
    /// Full-request mode: everything is inside the seal.
    Full,
}

impl RequestBinding<'_> {
    /// Refuses a binding no peer may send: more than [`MAX_COVERED_HEADERS`] covered
    /// headers (`malformed`).
    pub(crate) fn check(&self) -> Result<(), ProtocolError> {
        match self {
            RequestBinding::Header(l) if l.covered.len() > MAX_COVERED_HEADERS => {
                Err(ProtocolError::malformed("covered headers"))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn record_type(&self) -> RecordType {
        match self {
            RequestBinding::Header(_) => RecordType::Request,
            RequestBinding::Full => RecordType::FullRequest,
        }
    }

    pub(crate) fn stream_type(&self) -> RecordType {
        match self {
            RequestBinding::Header(_) => RecordType::RequestStream,
            RequestBinding::Full => RecordType::FullRequestStream,
        }
    }
}

/// What a sealed response record is bound to beyond its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBinding<'a> {
    /// Header mode: HTTP status and the inner content type.
    Header {
        /// HTTP status code.
        status: u16,
        /// Inner content type; empty if none.
        content_type: &'a str,
    },
    /// Full-request mode: status and headers are inside the seal.
    Full,
}

impl ResponseBinding<'_> {
    pub(crate) fn record_type(&self) -> RecordType {
        match self {
            ResponseBinding::Header { .. } => RecordType::Response,
            ResponseBinding::Full => RecordType::FullResponse,
        }
    }

    pub(crate) fn stream_type(&self) -> RecordType {
        match self {
            ResponseBinding::Header { .. } => RecordType::ResponseStream,
            ResponseBinding::Full => RecordType::FullResponseStream,
        }
    }
}

pub(crate) const REQUEST_AD_LABEL: &[u8] = b"sessioncert/1 request";
pub(crate) const RESPONSE_AD_LABEL: &[u8] = b"sessioncert/1 response";

/// The associated data of a request record or stream of type `record_type` (the
/// binding's single-record or stream type).
pub(crate) fn request_ad(
    id: &SessionId,
    seq: u64,
    record_type: RecordType,
    binding: &RequestBinding<'_>,
) -> Vec<u8> {
    // Sized exactly: growing it would copy it (this runs for every request).
    let fields = match binding {
        RequestBinding::Header(l) => {
            5 * 4
                + l.method.len()
                + l.target.len()
                + l.path.len()
                + l.query.len()
                + l.content_type.len()
                + 1
                + l.covered
                    .iter()
                    .map(|(n, v)| 8 + n.len() + v.len())
                    .sum::<usize>()
        }
        RequestBinding::Full => 0,
    };
    let mut ad = Vec::with_capacity(REQUEST_AD_LABEL.len() + 1 + 16 + 8 + fields);
    ad.extend_from_slice(REQUEST_AD_LABEL);
    ad.put_u8(record_type.byte());
    ad.extend_from_slice(id.as_bytes());
    ad.put_u64(seq);
    if let RequestBinding::Header(l) = binding {
        ad.put_bytes32(l.method.as_bytes());
        ad.put_bytes32(l.target.as_bytes());
        ad.put_bytes32(l.path.as_bytes());
        ad.put_bytes32(l.query.as_bytes());
        ad.put_bytes32(l.content_type.as_bytes());
        // `check` keeps the count within MAX_COVERED_HEADERS (16).
        ad.put_u8(l.covered.len() as u8);
        for (name, value) in l.covered {
            ad.put_bytes32(name.as_bytes());
            ad.put_bytes32(value.as_bytes());
        }
    }
    ad
}

pub(crate) fn response_ad(
    id: &SessionId,
    seq: u64,
    request_tag: &[u8; TAG_LEN],
    record_type: RecordType,
    binding: &ResponseBinding<'_>,
) -> Vec<u8> {
    let mut ad = Vec::with_capacity(RESPONSE_AD_LABEL.len() + 1 + 16 + 8 + TAG_LEN + 2 + 4 + 64);
    ad.extend_from_slice(RESPONSE_AD_LABEL);
    ad.put_u8(record_type.byte());
    ad.extend_from_slice(id.as_bytes());
    ad.put_u64(seq);
    ad.extend_from_slice(request_tag);
    if let ResponseBinding::Header {
        status,
        content_type,
    } = binding
    {
        ad.put_u16(*status);
        ad.put_bytes32(content_type.as_bytes());
    }
    ad
}

/// A parsed record header; the ciphertext follows at offset [`RECORD_HEADER_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Record type.
    pub record_type: RecordType,
    /// Sequence number (for a response: the sequence number of its request).
    pub seq: u64,
}

impl RecordHeader {
    /// Parses the header of `record` and checks there is room for a tag.
    pub fn parse(record: &[u8]) -> Result<Self, ProtocolError> {
        let h = Self::parse_prefix(record)?;
        if record.len() - RECORD_HEADER_LEN < TAG_LEN {
            return Err(ProtocolError::malformed("sealed record"));
        }
        Ok(h)
    }

    /// Parses the first [`RECORD_HEADER_LEN`] bytes of a body, whatever follows: what a
    /// receiver reads first to tell a single record from a stream (PROTOCOL §8.5).
    pub fn parse_prefix(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, "sealed record");
        let record_type =
            RecordType::from_byte(r.u8()?).ok_or(ProtocolError::malformed("sealed record"))?;
        let seq = r.u64()?;
        Ok(RecordHeader { record_type, seq })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.put_u8(self.record_type.byte());
        out.put_u64(self.seq);
    }
}

/// The tag of a sealed record (its last 16 bytes), which a response binds to.
pub fn record_tag(record: &[u8]) -> Option<[u8; TAG_LEN]> {
    let start = record.len().checked_sub(TAG_LEN)?;
    record[start..].try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_parse_requires_type_seq_and_tag() {
        let mut rec = Vec::new();
        RecordHeader {
            record_type: RecordType::Request,
            seq: 7,
        }
        .write(&mut rec);
        assert!(RecordHeader::parse(&rec).is_err(), "no tag");
        rec.extend_from_slice(&[0; 16]);
        let h = RecordHeader::parse(&rec).unwrap();
        assert_eq!((h.record_type, h.seq), (RecordType::Request, 7));
        rec[0] = 0x05;
        assert!(RecordHeader::parse(&rec).is_err(), "unknown type");
        for b in 0..=255u8 {
            if let Some(t) = RecordType::from_byte(b) {
                assert_eq!(t.byte(), b);
                assert_eq!(t.is_request(), b < 0x80);
            }
        }
    }

    #[test]
    fn associated_data_separates_fields() {
        // Moving a byte from path to query must change the associated data.
        let id = SessionId([1; 16]);
        let a = request_ad(
            &id,
            1,
            RecordType::Request,
            &RequestBinding::Header(RequestLine {
                method: "GET",
                target: "https://api.example",
                path: "/ab",
                query: "c",
                content_type: "",
                covered: &[],
            }),
        );
        let b = request_ad(
            &id,
            1,
            RecordType::Request,
            &RequestBinding::Header(RequestLine {
                method: "GET",
                target: "https://api.example",
                path: "/a",
                query: "bc",
                content_type: "",
                covered: &[],
            }),
        );
        assert_ne!(a, b);
        // Target, covered names and values are each bound and separated.
        let line = |target, covered: &'static [(&'static str, &'static str)]| {
            request_ad(
                &id,
                1,
                RecordType::Request,
                &RequestBinding::Header(RequestLine {
                    method: "GET",
                    target,
                    path: "/",
                    query: "",
                    content_type: "",
                    covered,
                }),
            )
        };
        let base = line("https://a.example", &[]);
        assert_ne!(base, line("http://a.example", &[]));
        assert_ne!(base, line("https://b.example", &[]));
        let auth = line("https://a.example", &[("authorization", "Bearer x")]);
        assert_ne!(base, auth);
        assert_ne!(
            auth,
            line("https://a.example", &[("authorization", "Bearer y")])
        );
        assert_ne!(
            line("https://a.example", &[("a", "bc")]),
            line("https://a.example", &[("ab", "c")])
        );
        assert_ne!(
            line("https://a.example", &[("a", "1"), ("b", "2")]),
            line("https://a.example", &[("b", "2"), ("a", "1")])
        );
        assert_ne!(
            request_ad(&id, 1, RecordType::FullRequest, &RequestBinding::Full),
            request_ad(&id, 2, RecordType::FullRequest, &RequestBinding::Full)
        );
    }

    proptest! {
        #[test]
        fn header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RecordHeader::parse(&bytes);
        }
    }
}
