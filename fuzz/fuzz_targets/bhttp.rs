//! Binary HTTP: `full::FullRequest::decode` (what the server runs on the plaintext of a
//! full-mode request) and `full::FullResponse::decode` (what the client runs on a
//! full-mode response).
//!
//! Invariants:
//! * no input decodes as both a request and a response;
//! * decode → encode → decode is the identity on the decoded value (the encoder can
//!   write everything the decoder accepts), and re-encoding is stable;
//! * a decoded request's path starts with `/`; header names come out lower-case;
//! * for messages built from fields, encode → decode returns the fields (names
//!   lower-cased, repeated `cookie` fields joined), with zero padding after the message
//!   accepted and junk refused; messages the encoder writes but cannot be read back
//!   (an empty header name, a 1xx final status) are refused by the decoder, never
//!   misread.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::bhttp_headers_after_round_trip;
use sessioncert_proto::full::{FullRequest, FullResponse};

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(Vec<u8>),
    Request {
        method: String,
        scheme: String,
        authority: String,
        path: String,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        padding: u8,
    },
    Response {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        padding: u8,
    },
}

fn check_request(r: &FullRequest) {
    assert!(r.path.starts_with('/'));
    for (k, _) in &r.headers {
        assert_eq!(*k, k.to_ascii_lowercase(), "header name not lower-cased");
    }
    let enc = r.encode();
    let again = FullRequest::decode(&enc).expect("re-encoded request does not decode");
    assert_eq!(&again, r, "request changed through encode/decode");
    assert_eq!(again.encode(), enc, "request encoding not stable");
}

fn check_response(r: &FullResponse) {
    for (k, _) in &r.headers {
        assert_eq!(*k, k.to_ascii_lowercase(), "header name not lower-cased");
    }
    let enc = r.encode().expect("a decoded response does not re-encode");
    let again = FullResponse::decode(&enc).expect("re-encoded response does not decode");
    assert_eq!(&again, r, "response changed through encode/decode");
    assert_eq!(again.encode().unwrap(), enc, "response encoding not stable");
}

fuzz_target!(|input: Input| match input {
    Input::Raw(data) => {
        let req = FullRequest::decode(&data);
        let resp = FullResponse::decode(&data);
        assert!(
            !(req.is_ok() && resp.is_ok()),
            "both a request and a response"
        );
        if let Ok(r) = req {
            check_request(&r);
        }
        if let Ok(r) = resp {
            check_response(&r);
        }
    }
    Input::Request {
        method,
        scheme,
        authority,
        path,
        headers,
        body,
        padding,
    } => {
        let r = FullRequest {
            method,
            scheme,
            authority,
            path: format!("/{path}"),
            headers,
            body,
        };
        let mut enc = r.encode();
        // Not representable (see the helper): the encoder does not refuse it, the
        // decoder does. Reported; nothing more to check here.
        let Some(headers) = bhttp_headers_after_round_trip(&r.headers) else {
            assert!(FullRequest::decode(&enc).is_err());
            return;
        };
        let want = FullRequest { headers, ..r };
        assert_eq!(FullRequest::decode(&enc).expect("own encoding"), want);
        assert!(FullResponse::decode(&enc).is_err());
        enc.extend(std::iter::repeat(0).take(padding as usize % 8));
        assert_eq!(FullRequest::decode(&enc).expect("zero padding"), want);
        enc.push(padding | 1);
        assert!(FullRequest::decode(&enc).is_err(), "junk after the message");
    }
    Input::Response {
        status,
        headers,
        body,
        padding,
    } => {
        let r = FullResponse {
            status,
            headers,
            body,
        };
        let Ok(mut enc) = r.encode() else {
            assert!(!(100..=599).contains(&status), "valid status refused");
            return;
        };
        // 1xx is encoded as a final status but read back as an informational response
        // followed by a missing final one, so it never decodes. Reported.
        if status < 200 {
            assert!(FullResponse::decode(&enc).is_err());
            return;
        }
        let Some(headers) = bhttp_headers_after_round_trip(&r.headers) else {
            assert!(FullResponse::decode(&enc).is_err());
            return;
        };
        let want = FullResponse { headers, ..r };
        assert_eq!(FullResponse::decode(&enc).expect("own encoding"), want);
        assert!(FullRequest::decode(&enc).is_err());
        enc.extend(std::iter::repeat(0).take(padding as usize % 8));
        assert_eq!(FullResponse::decode(&enc).expect("zero padding"), want);
        enc.push(padding | 1);
        assert!(
            FullResponse::decode(&enc).is_err(),
            "junk after the message"
        );
    }
});
