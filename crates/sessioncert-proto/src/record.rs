//! Sealed records: the body of every sealed request and response.
//!
//! ```text
//! record = type (u8) || seq (u64, big-endian) || AEAD ciphertext || tag (16)
//! ```
//!
//! The associated data binds everything an attacker could otherwise swap: the record
//! type (so a header-mode record cannot pass as a full-mode one), the session id, the
//! sequence number, the request's method, path, query and content type, and for a
//! response also the request's tag, its status and content type — so a response only
//! opens as the answer to the one request it was made for.

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
}

impl RecordType {
    /// The wire byte.
    pub const fn byte(self) -> u8 {
        match self {
            RecordType::Request => 0x01,
            RecordType::FullRequest => 0x02,
            RecordType::Response => 0x81,
            RecordType::FullResponse => 0x82,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => RecordType::Request,
            0x02 => RecordType::FullRequest,
            0x81 => RecordType::Response,
            0x82 => RecordType::FullResponse,
            _ => return None,
        })
    }
}

/// The request metadata bound in header mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// HTTP method, as sent (e.g. `POST`).
    pub method: &'a str,
    /// Path as sent on the wire (percent-encoding untouched), starting with `/`.
    pub path: &'a str,
    /// Query without the `?`; empty when there is none.
    pub query: &'a str,
    /// The inner content type (the `sessioncert-content-type` header); empty if none.
    pub content_type: &'a str,
}

/// What a sealed request record is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBinding<'a> {
    /// Header mode: the visible request line and the inner content type.
    Header(RequestLine<'a>),
    /// Full-request mode: everything is inside the seal.
    Full,
}

impl RequestBinding<'_> {
    pub(crate) fn record_type(&self) -> RecordType {
        match self {
            RequestBinding::Header(_) => RecordType::Request,
            RequestBinding::Full => RecordType::FullRequest,
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
}

pub(crate) const REQUEST_AD_LABEL: &[u8] = b"sessioncert/1 request";
pub(crate) const RESPONSE_AD_LABEL: &[u8] = b"sessioncert/1 response";

pub(crate) fn request_ad(id: &SessionId, seq: u64, binding: &RequestBinding<'_>) -> Vec<u8> {
    let mut ad = Vec::with_capacity(64);
    ad.extend_from_slice(REQUEST_AD_LABEL);
    ad.put_u8(binding.record_type().byte());
    ad.extend_from_slice(id.as_bytes());
    ad.put_u64(seq);
    if let RequestBinding::Header(l) = binding {
        ad.put_bytes32(l.method.as_bytes());
        ad.put_bytes32(l.path.as_bytes());
        ad.put_bytes32(l.query.as_bytes());
        ad.put_bytes32(l.content_type.as_bytes());
    }
    ad
}

pub(crate) fn response_ad(
    id: &SessionId,
    seq: u64,
    request_tag: &[u8; TAG_LEN],
    binding: &ResponseBinding<'_>,
) -> Vec<u8> {
    let mut ad = Vec::with_capacity(64);
    ad.extend_from_slice(RESPONSE_AD_LABEL);
    ad.put_u8(binding.record_type().byte());
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
        let mut r = Reader::new(record, "sealed record");
        let record_type =
            RecordType::from_byte(r.u8()?).ok_or(ProtocolError::malformed("sealed record"))?;
        let seq = r.u64()?;
        if r.rest().len() < TAG_LEN {
            return Err(ProtocolError::malformed("sealed record"));
        }
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
        rec[0] = 0x03;
        assert!(RecordHeader::parse(&rec).is_err(), "unknown type");
    }

    #[test]
    fn associated_data_separates_fields() {
        // Moving a byte from path to query must change the associated data.
        let id = SessionId([1; 16]);
        let a = request_ad(
            &id,
            1,
            &RequestBinding::Header(RequestLine {
                method: "GET",
                path: "/ab",
                query: "c",
                content_type: "",
            }),
        );
        let b = request_ad(
            &id,
            1,
            &RequestBinding::Header(RequestLine {
                method: "GET",
                path: "/a",
                query: "bc",
                content_type: "",
            }),
        );
        assert_ne!(a, b);
        assert_ne!(
            request_ad(&id, 1, &RequestBinding::Full),
            request_ad(&id, 2, &RequestBinding::Full)
        );
    }

    proptest! {
        #[test]
        fn header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RecordHeader::parse(&bytes);
        }
    }
}
