//! `GET /events?n=N&interval_ms=M`: server-sent events, one `data: {"i":k}` every M ms,
//! produced one at a time so a client can see each arrive as it is made.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;

/// Most events one request may ask for.
const MAX_EVENTS: u64 = 100_000;
/// Interval bounds (ms): a flood of tiny events, or a stream held open for days, is not
/// something an anonymous session may ask for.
const INTERVAL_MS: std::ops::RangeInclusive<u64> = 1..=60_000;
/// Longest stream one request may ask for (`n × interval_ms`): an hour.
const MAX_DURATION_MS: u64 = 3_600_000;
/// A comment line this often keeps a quiet stream visibly alive (for proxies and for
/// clients that give up on a silent connection).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default = "default_n")]
    n: u64,
    #[serde(default = "default_interval")]
    interval_ms: u64,
}

fn default_n() -> u64 {
    10
}

fn default_interval() -> u64 {
    100
}

/// The first event at once, then one every `interval_ms`; the stream ends after `n`.
pub async fn events(
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return bad_query();
    };
    if q.n > MAX_EVENTS
        || !INTERVAL_MS.contains(&q.interval_ms)
        || q.n.saturating_sub(1).saturating_mul(q.interval_ms) > MAX_DURATION_MS
    {
        return bad_query();
    }
    Sse::new(ticks(q.n, Duration::from_millis(q.interval_ms)))
        .keep_alive(axum::response::sse::KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn bad_query() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": format!(
            "n is 0-{MAX_EVENTS} (default 10), interval_ms {}-{} (default 100), and the \
             stream at most an hour long (n-1 intervals)",
            INTERVAL_MS.start(),
            INTERVAL_MS.end()
        )})),
    )
        .into_response()
}

fn ticks(n: u64, interval: Duration) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(0u64, move |k| async move {
        if k >= n {
            return None;
        }
        if k > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = Event::default().data(json!({ "i": k }).to_string());
        Some((Ok(event), k + 1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn events_come_one_by_one_at_the_interval() {
        let app = Router::new().route("/events", get(events));
        let req = axum::http::Request::get("/events?n=3&interval_ms=150")
            .body(axum::body::Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut body = res.into_body();
        let t0 = std::time::Instant::now();
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                seen.push((t0.elapsed(), String::from_utf8(data.to_vec()).unwrap()));
            }
        }
        let texts: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "data: {\"i\":0}\n\n",
                "data: {\"i\":1}\n\n",
                "data: {\"i\":2}\n\n"
            ]
        );
        assert!(
            seen[0].0 < Duration::from_millis(100),
            "first at once: {:?}",
            seen[0].0
        );
        assert!(
            seen[2].0 >= Duration::from_millis(300),
            "spaced: {:?}",
            seen[2].0
        );
    }

    #[tokio::test]
    async fn out_of_range_queries_are_refused() {
        let app = Router::new().route("/events", get(events));
        for q in [
            "n=100001",
            "interval_ms=0",
            "interval_ms=60001",
            "n=x",
            "n=62&interval_ms=60000",
        ] {
            let req = axum::http::Request::get(format!("/events?{q}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{q}");
        }
    }
}
