//! What `serve` gives browsers, all plain (not sealed): the browser client as an ES
//! module at `/sessioncert.js` (and its types at `/sessioncert.d.ts`), and the live demo
//! page at `/` (HTML, one script, one style sheet; no build step, nothing external).
//!
//! The module is `clients/js/dist/sessioncert.js` as committed, embedded at compile time,
//! so `cargo build` needs no npm. Every file carries a strong `ETag` and
//! `cache-control: no-cache`: a browser revalidates on each load and gets `304` while
//! the binary is the same, and a new binary's module is never mixed with an old page.

pub mod cors;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The browser client, built by `npm run build` in `clients/js` (committed).
const MODULE_JS: &[u8] = include_bytes!("../../../../clients/js/dist/sessioncert.js");
/// Its type declarations.
const MODULE_DTS: &[u8] = include_bytes!("../../../../clients/js/dist/sessioncert.d.ts");
/// The demo page; `{{PIN}}` is replaced by the server's pin at start.
const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &[u8] = include_bytes!("page/demo.js");
const PAGE_CSS: &[u8] = include_bytes!("page/demo.css");
const PAGE_ICON: &[u8] = include_bytes!("page/icon.svg");

/// Path of the served module (what `import { connect } from "/sessioncert.js"` loads).
pub const MODULE_PATH: &str = "/sessioncert.js";
/// Path of its type declarations.
pub const TYPES_PATH: &str = "/sessioncert.d.ts";

/// The demo page's policy: its own script and style only, requests to this origin
/// only, no plugins, no framing, no forms posted anywhere, no `<base>`.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// One file served from memory.
#[derive(Clone)]
struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
    /// Whether this is an HTML page (gets the page's security headers).
    page: bool,
}

impl Asset {
    fn new(body: impl Into<Bytes>, content_type: &'static str, page: bool) -> Asset {
        let body = body.into();
        let digest = Sha256::digest(&body);
        let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16])))
            .expect("hex is a valid header value");
        Asset {
            body,
            content_type,
            etag,
            page,
        }
    }

    /// `200` with the body, or `304` when the request's `If-None-Match` names this
    /// version (weak comparison, as RFC 9110 §13.1.2 says for `If-None-Match`).
    fn respond(&self, req: &HeaderMap) -> Response {
        let fresh = req
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim())
            .any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == self.etag.as_bytes());
        let mut r = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut r = self.body.clone().into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            r
        };
        let h = r.headers_mut();
        h.insert(header::ETAG, self.etag.clone());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if self.page {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
        }
        r
    }
}

fn serve(asset: Asset) -> axum::routing::MethodRouter {
    get(move |headers: HeaderMap| {
        let a = asset.clone();
        async move { a.respond(&headers) }
    })
}

/// `GET /sessioncert.js` and `GET /sessioncert.d.ts` (HEAD too).
pub fn module_routes() -> Router {
    Router::new()
        .route(
            MODULE_PATH,
            serve(Asset::new(
                MODULE_JS,
                "text/javascript; charset=utf-8",
                false,
            )),
        )
        .route(
            TYPES_PATH,
            serve(Asset::new(
                MODULE_DTS,
                "application/typescript; charset=utf-8",
                false,
            )),
        )
}

/// Escapes text for an HTML attribute value in double quotes.
fn attr_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The demo page at `/`, with this server's `pin` in it (the page still verifies the
/// server against it through the handshake), its script and its style sheet.
pub fn page_routes(pin: &str) -> Router {
    let html = PAGE_HTML.replace("{{PIN}}", &attr_escape(pin));
    Router::new()
        .route(
            "/",
            serve(Asset::new(html, "text/html; charset=utf-8", true)),
        )
        .route(
            "/demo/demo.js",
            serve(Asset::new(PAGE_JS, "text/javascript; charset=utf-8", false)),
        )
        .route(
            "/demo/demo.css",
            serve(Asset::new(PAGE_CSS, "text/css; charset=utf-8", false)),
        )
        .route(
            "/demo/icon.svg",
            serve(Asset::new(PAGE_ICON, "image/svg+xml", false)),
        )
}

#[cfg(test)]
mod tests;
