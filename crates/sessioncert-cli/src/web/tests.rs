use super::*;
use axum::body::Body;
use axum::extract::Request;
use std::sync::{Arc, Mutex};
use tower::ServiceExt as _;

#[test]
fn cors_origins_must_be_origins_as_browsers_send_them() {
    for ok in [
        "https://app.example.com",
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "http://[::1]:8080",
    ] {
        assert_eq!(cors::check_origin(ok).unwrap(), ok, "{ok}");
    }
    let e = cors::check_origin("*").unwrap_err();
    assert!(e.contains("`*` is refused"), "{e}");
    for bad in [
        "",
        "null",
        "app.example.com",
        "https://App.example.com",
        "https://app.example.com/",
        "https://app.example.com:443",
        "ftp://app.example.com",
        "https://app.example.com/path",
    ] {
        let e = cors::check_origin(bad).unwrap_err();
        assert!(e.contains("expected an origin"), "{bad}: {e}");
    }
}

#[test]
fn the_pin_is_escaped_into_the_page() {
    assert_eq!(attr_escape(r#"a"<b>&"#), "a&quot;&lt;b&gt;&amp;");
    assert!(PAGE_HTML.contains(r#"content="{{PIN}}""#));
}

/// What reached the inner service: its method, per request.
fn recorder() -> (
    Arc<Mutex<Vec<http::Method>>>,
    impl tower::Service<
            Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone
        + Send
        + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let svc = tower::service_fn(move |req: Request| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(req.method().clone());
            Ok::<_, std::convert::Infallible>((StatusCode::IM_A_TEAPOT, "inner").into_response())
        }
    });
    (seen, svc)
}

const APP: &str = "https://app.example";

/// A real preflight is answered by the layer and never reaches the routes; an
/// `OPTIONS` request that is not a preflight (a sealed OPTIONS) reaches them with its
/// method intact and still gets the CORS headers. (tower-http's `Cors` alone answers
/// every `OPTIONS` itself: the second half fails without `PreflightOnly`.)
#[tokio::test]
async fn only_real_preflights_are_answered_by_the_layer() {
    use tower::Layer as _;
    let (seen, inner) = recorder();
    let layer = cors::layer(vec![HeaderValue::from_static(APP)]).unwrap();
    let svc = layer.layer(inner);

    let preflight = Request::options("/apiTest")
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,sessioncert-id",
        )
        .body(Body::empty())
        .unwrap();
    let r = svc.clone().oneshot(preflight).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert!(
        seen.lock().unwrap().is_empty(),
        "a preflight reached the routes"
    );

    for with_origin in [true, false] {
        let mut b = Request::options("/apiTest").header("sessioncert-id", "x");
        if with_origin {
            b = b.header("origin", APP);
        }
        let r = svc
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::IM_A_TEAPOT, "origin {with_origin}");
        assert_eq!(
            r.headers().get("access-control-allow-origin").is_some(),
            with_origin
        );
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [http::Method::OPTIONS, http::Method::OPTIONS]
    );
}

#[tokio::test]
async fn assets_carry_an_etag_and_revalidate_to_304() {
    let app = module_routes().merge(page_routes("ed25519:PIN"));
    let get = |path: &str, etag: Option<&str>| {
        let mut b = Request::get(path);
        if let Some(e) = etag {
            b = b.header("if-none-match", e);
        }
        app.clone().oneshot(b.body(Body::empty()).unwrap())
    };
    for (path, ctype, body) in [
        (MODULE_PATH, "text/javascript; charset=utf-8", MODULE_JS),
        (
            TYPES_PATH,
            "application/typescript; charset=utf-8",
            MODULE_DTS,
        ),
        ("/demo/demo.js", "text/javascript; charset=utf-8", PAGE_JS),
        ("/demo/demo.css", "text/css; charset=utf-8", PAGE_CSS),
    ] {
        let r = get(path, None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], ctype, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() == 34, "{path}: {etag}");
        let got = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&got[..], body, "{path}");
        let r = get(path, Some(&format!("\"other\", {etag}")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(r.headers()["etag"], etag.as_str());
        let got = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(got.is_empty());
        let r = get(path, Some("\"other\"")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = get("/", None).await.unwrap();
    assert_eq!(r.headers()["content-security-policy"], PAGE_CSP);
    let html = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let html = String::from_utf8(html.to_vec()).unwrap();
    assert!(html.contains(r#"<meta name="sessioncert-pin" content="ed25519:PIN">"#));
    assert!(!html.contains("{{PIN}}"));
}

/// The demo page shows server-provided text (notes, echoes, events, errors); its script
/// never parses any of it as HTML, so nothing the server or a note's author sends can run.
#[test]
fn the_demo_script_never_writes_html() {
    let js = std::str::from_utf8(super::PAGE_JS).unwrap();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        assert!(!js.contains(sink), "demo.js uses {sink}");
    }
}
