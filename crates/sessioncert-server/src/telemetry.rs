//! What the server tells its operators: metrics through the [`metrics`] facade, and the
//! limit on refusal log lines.
//!
//! Nothing is recorded unless the application installs a `metrics` recorder (the
//! `sessioncert` binary installs the Prometheus one; see [`describe`]). Install it
//! before building the server and serving: the hot path's handles are registered once,
//! then (a handle taken while no recorder was installed records nothing). Every label value
//! comes from a fixed set defined here — a refusal code, a mode, an outcome — never a
//! path, an origin, an address or any other text a peer chooses: such a label would let
//! an anonymous peer grow the registry without bound.
//!
//! The access log (one line per request, target [`ACCESS_LOG_TARGET`]) is written by the
//! listener (`listener::serve`); refusal lines go through [`refusal_line`] so that a
//! flood of bad requests writes at most [`REFUSAL_LINES_PER_SEC`] lines a second per
//! refusal code, plus one line saying how many were suppressed.

use sessioncert_proto::ErrorCode;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The `tracing` target of the per-request access log (and of its "suppressed" lines):
/// `RUST_LOG=info,sessioncert::access=off` silences it.
pub const ACCESS_LOG_TARGET: &str = "sessioncert::access";

/// Counter: handshake steps by `outcome` — `answered` (a server hello was sent),
/// `refused` (a client hello was refused), `established` (a key confirmation created a
/// session), `confirmation_refused` (a confirmation's ticket or key proof did not check
/// out, or the session would exceed a cap).
pub const HANDSHAKES: &str = "sessioncert_handshakes_total";
/// Counter: refusals by `code` (the `sessioncert-error` code the peer received, or
/// `request_head_too_large` / `bad_request_head` for the HTTP layer's own answers to a
/// request head it could not take) and `status` (the HTTP status sent).
pub const REFUSALS: &str = "sessioncert_refusals_total";
/// Counter: plaintext bytes sealed into responses.
pub const SEALED_BYTES: &str = "sessioncert_sealed_bytes_total";
/// Counter: plaintext bytes opened from sealed requests.
pub const OPENED_BYTES: &str = "sessioncert_opened_bytes_total";
/// Counter: streamed bodies (PROTOCOL §8.5) by `direction` — `request` (a streamed
/// request whose first chunk opened) and `response` (a response sent as a stream).
pub const STREAMS: &str = "sessioncert_streams_total";
/// Gauge: sessions in the table by `state` — `established`, and the tombstones of ended
/// ones, `closed` and `expired` (kept so their ids keep getting precise refusals).
pub const SESSIONS: &str = "sessioncert_sessions";
/// Gauge: legacy Session-Cert sessions held, by `state` (`matching`: key received,
/// waiting for the establish; `established`). Also counted in [`SESSIONS`] once
/// established.
pub const LEGACY_SESSIONS: &str = "sessioncert_legacy_sessions";
/// Counter: legacy Session-Cert handshake steps, by `outcome` (`key_accepted`,
/// `established`).
pub const LEGACY_HANDSHAKES: &str = "sessioncert_legacy_handshakes_total";
/// Counter: legacy Session-Cert messages, by `outcome` (`opened`: a protected request
/// opened; `refused`: any legacy message refused after its shape was checked).
pub const LEGACY_MESSAGES: &str = "sessioncert_legacy_messages_total";
/// Gauge: bytes of sealed responses built and not yet taken by their peers.
pub const RESPONSE_BYTES_HELD: &str = "sessioncert_response_bytes_held";
/// Gauge: connections open (every listener of the process).
pub const CONNECTIONS_OPEN: &str = "sessioncert_connections_open";
/// Counter: connections the listener closed without an answer, by `reason`:
/// `header_timeout` (a request head not complete in time), `write_stall` (the peer
/// stopped reading its response).
pub const CONNECTIONS_CUT: &str = "sessioncert_connections_cut_total";
/// Histogram: time from a request's arrival to its response head, in seconds, by `mode`
/// (`sealed`, `full`, `handshake`, `plain`) and `outcome` (`answered`, `refused`).
pub const REQUEST_DURATION: &str = "sessioncert_request_duration_seconds";

/// Histogram: time a shared session store took to answer, in seconds, by `op`
/// (`check`, `create`, `load`, `close`) and `outcome` (`ok`, `error`).
pub const STORE_DURATION: &str = "sessioncert_store_duration_seconds";

/// Bucket bounds (seconds) suggested for [`REQUEST_DURATION`] and [`STORE_DURATION`]: 50 µs to 10 s.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Registers the help text of every metric above with the installed recorder. Call it
/// once, after installing one.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HANDSHAKES, "Handshake steps by outcome.");
    describe_counter!(
        REFUSALS,
        "Requests refused, by the code and HTTP status the peer received."
    );
    describe_counter!(
        SEALED_BYTES,
        Unit::Bytes,
        "Plaintext bytes sealed into responses."
    );
    describe_counter!(
        OPENED_BYTES,
        Unit::Bytes,
        "Plaintext bytes opened from sealed requests."
    );
    describe_counter!(STREAMS, "Streamed bodies, by direction.");
    describe_gauge!(SESSIONS, "Sessions held in memory, by state.");
    describe_gauge!(
        LEGACY_SESSIONS,
        "Legacy Session-Cert sessions held in memory, by state."
    );
    describe_counter!(
        LEGACY_HANDSHAKES,
        "Legacy Session-Cert handshake steps, by outcome."
    );
    describe_counter!(
        LEGACY_MESSAGES,
        "Legacy Session-Cert messages opened or refused (watch it fall as clients migrate)."
    );
    describe_gauge!(
        RESPONSE_BYTES_HELD,
        Unit::Bytes,
        "Sealed response bytes built and not yet taken by their peers."
    );
    describe_gauge!(CONNECTIONS_OPEN, "Connections open.");
    describe_counter!(
        CONNECTIONS_CUT,
        "Connections closed without an answer, by reason."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to its response, by mode and outcome."
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Time a shared session store took to answer, by operation and outcome."
    );
}

/// Counts a legacy handshake step ([`LEGACY_HANDSHAKES`]).
pub(crate) fn legacy_handshake(outcome: &'static str) {
    metrics::counter!(LEGACY_HANDSHAKES, "outcome" => outcome).increment(1);
}

/// Counts a legacy protected request opened ([`LEGACY_MESSAGES`]).
pub(crate) fn legacy_request() {
    metrics::counter!(LEGACY_MESSAGES, "outcome" => "opened").increment(1);
}

/// Counts a legacy message refused ([`LEGACY_MESSAGES`]).
pub(crate) fn legacy_refused() {
    metrics::counter!(LEGACY_MESSAGES, "outcome" => "refused").increment(1);
}

/// Times one call to a shared session store ([`STORE_DURATION`]).
pub(crate) async fn store_call<T, E>(
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    let result = call.await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!(STORE_DURATION, "op" => op, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

/// A handshake step's outcome (the `outcome` label of [`HANDSHAKES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeOutcome {
    Answered,
    Refused,
    Established,
    ConfirmationRefused,
}

pub(crate) fn handshake(outcome: HandshakeOutcome) {
    let label = match outcome {
        HandshakeOutcome::Answered => "answered",
        HandshakeOutcome::Refused => "refused",
        HandshakeOutcome::Established => "established",
        HandshakeOutcome::ConfirmationRefused => "confirmation_refused",
    };
    metrics::counter!(HANDSHAKES, "outcome" => label).increment(1);
}

/// The byte counters of the sealed path, registered once (see [`RequestMetrics`]).
pub(crate) struct ByteCounters {
    pub(crate) opened: metrics::Counter,
    pub(crate) sealed: metrics::Counter,
    pub(crate) request_streams: metrics::Counter,
    pub(crate) response_streams: metrics::Counter,
}

impl ByteCounters {
    pub(crate) fn new() -> Self {
        ByteCounters {
            opened: metrics::counter!(OPENED_BYTES),
            sealed: metrics::counter!(SEALED_BYTES),
            request_streams: metrics::counter!(STREAMS, "direction" => "request"),
            response_streams: metrics::counter!(STREAMS, "direction" => "response"),
        }
    }
}

/// How a request was served, put into its response's extensions by the sealing service
/// and the protocol routes (a response without it was served plain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// Header mode (and the sealed close).
    Sealed,
    /// Full-request mode.
    Full,
    /// Key configuration, handshake, stand-alone confirmation.
    Handshake,
    /// Legacy Session-Cert: its handshake routes and protected requests.
    Legacy,
}

impl Served {
    fn label(served: Option<Served>) -> &'static str {
        match served {
            Some(Served::Sealed) => "sealed",
            Some(Served::Full) => "full",
            Some(Served::Handshake) => "handshake",
            Some(Served::Legacy) => "legacy",
            None => "plain",
        }
    }
}

/// Put into the extensions of every refusal's response (by [`crate::Refusal`] and the
/// listener's body guard). Crate-private, so no handler can fake one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) ErrorCode);

/// What a refusal is counted and its log lines limited as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// A refusal carrying a protocol code.
    Code(ErrorCode),
    /// The HTTP layer's `431`: the request head did not fit.
    HeadTooLarge,
    /// The HTTP layer's answer to a request head it could not parse.
    BadHead,
}

impl RefusalKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            RefusalKind::Code(c) => c.as_str(),
            RefusalKind::HeadTooLarge => "request_head_too_large",
            RefusalKind::BadHead => "bad_request_head",
        }
    }

    fn slot(self) -> usize {
        match self {
            RefusalKind::Code(c) => ErrorCode::ALL
                .iter()
                .position(|x| *x == c)
                .unwrap_or(SLOT_PLAIN_ERROR),
            RefusalKind::HeadTooLarge => ErrorCode::ALL.len(),
            RefusalKind::BadHead => ErrorCode::ALL.len() + 1,
        }
    }
}

/// The limiter slot of plain responses with an error status (a flood of `404`s).
const SLOT_PLAIN_ERROR: usize = ErrorCode::ALL.len() + 2;
const SLOTS: usize = SLOT_PLAIN_ERROR + 1;

fn slot_label(slot: usize) -> &'static str {
    match slot {
        s if s < ErrorCode::ALL.len() => ErrorCode::ALL[s].as_str(),
        s if s == SLOT_PLAIN_ERROR => "plain_error",
        s => RefusalKind::label(if s == ErrorCode::ALL.len() {
            RefusalKind::HeadTooLarge
        } else {
            RefusalKind::BadHead
        }),
    }
}

/// The `status` label: the statuses refusals are sent with, others as `other`.
fn status_label(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        414 => "414",
        421 => "421",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        505 => "505",
        _ => "other",
    }
}

/// Counts a refusal.
pub(crate) fn refusal(kind: RefusalKind, status: u16) {
    metrics::counter!(REFUSALS, "code" => kind.label(), "status" => status_label(status))
        .increment(1);
}

const MODES: [Option<Served>; 5] = [
    Some(Served::Sealed),
    Some(Served::Full),
    Some(Served::Handshake),
    Some(Served::Legacy),
    None,
];
const OUTCOMES: [&str; 2] = ["answered", "refused"];

/// The per-request histograms, registered once (with the recorder installed at the
/// time: install one before serving) rather than looked up on every request.
pub(crate) struct RequestMetrics {
    /// By mode (as [`MODES`]), then outcome (as [`OUTCOMES`]).
    durations: [[metrics::Histogram; 2]; 5],
}

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        RequestMetrics {
            durations: std::array::from_fn(|m| {
                std::array::from_fn(|o| {
                    metrics::histogram!(
                        REQUEST_DURATION,
                        "mode" => Served::label(MODES[m]),
                        "outcome" => OUTCOMES[o]
                    )
                })
            }),
        }
    }

    /// Records a finished request: its latency, and the refusal it carries, if any.
    pub(crate) fn record(
        &self,
        served: Option<Served>,
        refused: Option<ErrorCode>,
        status: u16,
        latency: Duration,
    ) {
        let mode = MODES
            .iter()
            .position(|m| *m == served)
            .unwrap_or(MODES.len() - 1);
        let outcome = usize::from(refused.is_some());
        self.durations[mode][outcome].record(latency.as_secs_f64());
        if let Some(code) = refused {
            refusal(RefusalKind::Code(code), status);
        }
    }
}

/// Connections open, as a gauge; counted while this lives.
pub(crate) struct OpenConnection(());

impl OpenConnection {
    pub(crate) fn new() -> Self {
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// Counts a connection closed without an answer (`header_timeout`, `write_stall`).
pub(crate) fn connection_cut(reason: &'static str) {
    metrics::counter!(CONNECTIONS_CUT, "reason" => reason).increment(1);
}

/// Refusal log lines written per second for each refusal code; the rest are counted and
/// reported in one line.
pub const REFUSAL_LINES_PER_SEC: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Window {
    /// The second (since the limiter's epoch) the counts are for.
    second: u64,
    written: u32,
    suppressed: u64,
}

/// Per refusal code: at most `per_sec` lines in each second; the lines over it are
/// counted, and the count is handed out once, with the next line allowed (or by
/// [`LineLimiter::take_overdue`] when no further refusal comes).
struct LineLimiter {
    per_sec: u32,
    slots: [Mutex<Window>; SLOTS],
}

impl LineLimiter {
    const fn new(per_sec: u32) -> Self {
        LineLimiter {
            per_sec,
            slots: [const {
                Mutex::new(Window {
                    second: 0,
                    written: 0,
                    suppressed: 0,
                })
            }; SLOTS],
        }
    }

    /// `Some(suppressed before)` when a line may be written at `second`, `None` when it
    /// is to be suppressed.
    fn admit(&self, slot: usize, second: u64) -> Option<u64> {
        let mut w = self.slots[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if w.second != second {
            let suppressed = std::mem::take(&mut w.suppressed);
            w.second = second;
            w.written = 1;
            return Some(suppressed);
        }
        if w.written < self.per_sec {
            w.written += 1;
            Some(0)
        } else {
            w.suppressed += 1;
            None
        }
    }

    /// Suppressed counts of seconds that are over, with their slots (emptied).
    fn take_overdue(&self, second: u64) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (slot, m) in self.slots.iter().enumerate() {
            let mut w = m.lock().unwrap_or_else(PoisonError::into_inner);
            if w.second != second && w.suppressed > 0 {
                out.push((slot, std::mem::take(&mut w.suppressed)));
            }
        }
        out
    }
}

/// One limiter for the process: refusal lines are about what reaches the log, whichever
/// server in the process wrote them.
static LINES: LineLimiter = LineLimiter::new(REFUSAL_LINES_PER_SEC);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn second_now() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_secs()
}

fn log_suppressed(slot: usize, suppressed: u64) {
    tracing::info!(
        target: ACCESS_LOG_TARGET,
        code = %slot_label(slot),
        suppressed,
        "refusal lines suppressed (more than {REFUSAL_LINES_PER_SEC} a second for this code)"
    );
}

/// Whether a log line about a refusal of `kind` may be written now (at most
/// [`REFUSAL_LINES_PER_SEC`] a second per code). When it may and earlier lines were
/// suppressed, says so in one line first.
pub(crate) fn refusal_line(kind: RefusalKind) -> bool {
    line_in_slot(kind.slot())
}

/// As [`refusal_line`], for a plain response with an error status.
pub(crate) fn plain_error_line() -> bool {
    line_in_slot(SLOT_PLAIN_ERROR)
}

fn line_in_slot(slot: usize) -> bool {
    match LINES.admit(slot, second_now()) {
        None => false,
        Some(0) => true,
        Some(suppressed) => {
            log_suppressed(slot, suppressed);
            true
        }
    }
}

/// Reports lines suppressed in seconds that are over (called from the maintenance
/// loop, so a flood's count is reported even when nothing follows it).
pub(crate) fn report_suppressed() {
    for (slot, n) in LINES.take_overdue(second_now()) {
        log_suppressed(slot, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_lines_a_second_per_code_then_the_count() {
        let l = LineLimiter::new(3);
        let malformed = RefusalKind::Code(ErrorCode::Malformed).slot();
        let rejected = RefusalKind::Code(ErrorCode::Rejected).slot();
        let written = (0..100).filter(|_| l.admit(malformed, 5).is_some()).count();
        assert_eq!(written, 3);
        assert_eq!(
            l.admit(rejected, 5),
            Some(0),
            "other codes have their own budget"
        );
        // The next second: allowed again, carrying the count of the suppressed ones.
        assert_eq!(l.admit(malformed, 6), Some(97));
        assert_eq!(l.admit(malformed, 6), Some(0));
        for _ in 0..10 {
            l.admit(malformed, 6);
        }
        // Nothing follows: the maintenance loop collects the count once the second is over.
        assert!(l.take_overdue(6).is_empty(), "the second is not over yet");
        assert_eq!(l.take_overdue(7), vec![(malformed, 9)]);
        assert!(l.take_overdue(8).is_empty(), "reported once");
    }

    #[test]
    fn labels_come_from_fixed_sets() {
        let mut seen = std::collections::HashSet::new();
        for slot in 0..SLOTS {
            assert!(seen.insert(slot_label(slot)), "slot labels are distinct");
        }
        for c in ErrorCode::ALL {
            assert_eq!(slot_label(RefusalKind::Code(c).slot()), c.as_str());
        }
        assert_eq!(
            slot_label(RefusalKind::HeadTooLarge.slot()),
            "request_head_too_large"
        );
        assert_eq!(slot_label(RefusalKind::BadHead.slot()), "bad_request_head");
        assert_eq!(status_label(299), "other");
    }
}
