//! The gateway's metrics, through the [`metrics`] facade (recorded only when the
//! application installed a recorder, as the server's are). Label values come from fixed
//! sets: a status class, an error kind, never an upstream address or a path.

/// Histogram: time from sending a request to the upstream to its response head, in
/// seconds, by `class` (`1xx` … `5xx`).
pub const UPSTREAM_DURATION: &str = "sessioncert_gateway_upstream_duration_seconds";
/// Counter: requests to the upstream that failed, by `kind` — `connect` (no connection:
/// answered `502`), `timeout` (no response head within the upstream timeout: `504`),
/// `request` (the connection failed before a response head: `502`), `body` (the
/// upstream's response body failed part-way: the client's response was cut).
pub const UPSTREAM_ERRORS: &str = "sessioncert_gateway_upstream_errors_total";
/// Counter: requests the gateway answered itself by the route policy, by `why` —
/// `refused` (a `refuse` prefix: `404`), `bad_path` (a path no policy may forward: `400`).
pub const POLICY_ANSWERS: &str = "sessioncert_gateway_policy_answers_total";

/// Bucket bounds (seconds) suggested for [`UPSTREAM_DURATION`]: 50 µs to 60 s.
pub const UPSTREAM_DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Registers the help text of the metrics above. Call once, after installing a recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time from sending a request to the upstream to its response head, by status class."
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "Requests to the upstream that failed, by kind (connect, timeout, request, body)."
    );
    describe_counter!(
        POLICY_ANSWERS,
        "Requests the gateway answered itself by its route policy, by why (refused, bad_path)."
    );
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a request to the upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Connect,
    Timeout,
    Request,
    Body,
}

const KINDS: [(ErrorKind, &str); 4] = [
    (ErrorKind::Connect, "connect"),
    (ErrorKind::Timeout, "timeout"),
    (ErrorKind::Request, "request"),
    (ErrorKind::Body, "body"),
];

/// Handles registered once (with the recorder installed at the time), not looked up per
/// request.
pub(crate) struct UpstreamMetrics {
    durations: [metrics::Histogram; 5],
    errors: [metrics::Counter; 4],
    refused: metrics::Counter,
    bad_path: metrics::Counter,
}

impl UpstreamMetrics {
    pub(crate) fn new() -> Self {
        UpstreamMetrics {
            durations: std::array::from_fn(
                |i| metrics::histogram!(UPSTREAM_DURATION, "class" => CLASSES[i]),
            ),
            errors: std::array::from_fn(
                |i| metrics::counter!(UPSTREAM_ERRORS, "kind" => KINDS[i].1),
            ),
            refused: metrics::counter!(POLICY_ANSWERS, "why" => "refused"),
            bad_path: metrics::counter!(POLICY_ANSWERS, "why" => "bad_path"),
        }
    }

    pub(crate) fn answered(&self, status: u16, latency: std::time::Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.durations[class].record(latency.as_secs_f64());
    }

    pub(crate) fn error(&self, kind: ErrorKind) {
        if let Some(i) = KINDS.iter().position(|(k, _)| *k == kind) {
            self.errors[i].increment(1);
        }
    }

    pub(crate) fn body_error_counter(&self) -> metrics::Counter {
        self.errors[3].clone()
    }

    pub(crate) fn refused(&self) {
        self.refused.increment(1);
    }

    pub(crate) fn bad_path(&self) {
        self.bad_path.increment(1);
    }
}
