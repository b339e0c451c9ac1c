//! `sessioncert bench handshake|request`: load generators with a fixed duration and
//! concurrency (also for legacy Session-Cert clients, `--legacy`). Each worker runs its operation back to back; latencies of successful
//! operations are kept for percentiles, failures are counted.

use super::parse_duration;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use sessioncert_client::{Client, Pin, Trust};
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `bench` subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Handshakes per second: one round trip each (hello → server hello with ticket,
    /// keys derived on both sides); the confirmation rides on a session's first request.
    Handshake(HandshakeArgs),
    /// Requests per second against one URL, sealed or plain.
    Request(RequestArgs),
}

#[derive(Args)]
pub struct Common {
    /// How long to run.
    #[arg(long, default_value = "10s", allow_hyphen_values = true, value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8, allow_hyphen_values = true, value_parser = super::parse_number::<usize>)]
    concurrency: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Print a progress line on stderr this often (0s: never).
    #[arg(long, default_value = "5s", allow_hyphen_values = true, value_parser = parse_duration)]
    progress: Duration,
    #[command(flatten)]
    tls: super::tls::TlsArgs,
}

/// Arguments of `bench handshake`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("mode").args(["pin", "legacy"]).required(true)))]
pub struct HandshakeArgs {
    /// Server base URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// Server identity pin.
    #[arg(long)]
    pin: Option<String>,
    /// Legacy Session-Cert handshakes instead (`serve --legacy-session-cert`): public
    /// key, RSA-wrapped key, establish — three round trips, a stored session each.
    #[arg(long)]
    legacy: bool,
    #[command(flatten)]
    common: Common,
}

/// Arguments of `bench request`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("mode").args(["pin", "plain", "legacy"]).required(true)))]
pub struct RequestArgs {
    /// Full URL to POST to, e.g. http://127.0.0.1:8080/apiTest
    #[arg(long)]
    url: String,
    /// Server identity pin (sealed requests).
    #[arg(long)]
    pin: Option<String>,
    /// Send plain requests (the baseline).
    #[arg(long)]
    plain: bool,
    /// Use full-request mode for sealed requests.
    #[arg(long)]
    full: bool,
    /// Legacy Session-Cert requests instead (`serve --legacy-session-cert`): CryptoJS
    /// bodies under `session-cert-id`, each answer decrypted; each worker makes a new
    /// legacy session every --legacy-session-requests requests.
    #[arg(long)]
    legacy: bool,
    /// Requests per legacy session before the worker makes a new one (at most the
    /// server's --legacy-max-requests).
    #[arg(long, default_value_t = 1000, allow_hyphen_values = true, value_parser = super::parse_number::<u64>)]
    legacy_session_requests: u64,
    /// Size of the JSON request body in bytes (units allowed: 1KiB).
    #[arg(long, default_value_t = 1024, allow_hyphen_values = true, value_parser = super::parse_size)]
    body: usize,
    #[command(flatten)]
    common: Common,
}

/// Results of one run.
struct Report {
    ok: u64,
    errors: u64,
    /// Failures by kind: a refusal's error code, `outcome_unknown`, `transport`,
    /// `status_NNN` (plain mode), `other`.
    errors_by_kind: std::collections::BTreeMap<String, u64>,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    last_error: Option<String>,
}

/// What kind of failure `e` is, for the report.
fn kind_of(e: &anyhow::Error) -> String {
    if let Some(c) = e.downcast_ref::<sessioncert_client::ClientError>() {
        if c.is_outcome_unknown() {
            return "outcome_unknown".into();
        }
        if let Some(code) = c.code() {
            return code.to_string();
        }
        if matches!(c, sessioncert_client::ClientError::Http(_)) {
            return "transport".into();
        }
        if c.is_tls() {
            return "tls".into();
        }
        return "other".into();
    }
    if e.downcast_ref::<reqwest::Error>().is_some() {
        return "transport".into();
    }
    if let Some(s) = e.downcast_ref::<UnexpectedStatus>() {
        return format!("status_{}", s.0);
    }
    "other".into()
}

/// A response that was not a success.
#[derive(Debug)]
struct UnexpectedStatus(u16);

impl std::fmt::Display for UnexpectedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server answered {}", self.0)
    }
}

impl std::error::Error for UnexpectedStatus {}

impl Report {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, what: &str, key: &str, c: &Common) {
        let (p50, p99) = (self.percentile_ms(0.50), self.percentile_ms(0.99));
        if c.json {
            let v = json!({
                key: (self.rate() * 10.0).round() / 10.0,
                "p50_ms": (p50 * 1000.0).round() / 1000.0,
                "p99_ms": (p99 * 1000.0).round() / 1000.0,
                "errors": self.errors,
                "errors_by_kind": self.errors_by_kind,
                "count": self.ok,
                "duration_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "concurrency": c.concurrency,
            });
            println!("{v}");
        } else {
            println!(
                "{what}: {} in {:.2} s = {:.0}/s, p50 {p50:.3} ms, p99 {p99:.3} ms, errors {}",
                self.ok,
                self.elapsed.as_secs_f64(),
                self.rate(),
                self.errors
            );
        }
        if let Some(e) = &self.last_error {
            eprintln!("sessioncert bench: last error: {e}");
        }
    }
}

/// One worker's running totals, for the progress line.
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// Runs `op` from `concurrency` workers for `duration`.
async fn drive<S, F, Fut>(c: &Common, states: Vec<S>, op: F) -> Report
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + c.duration;
    let mut tasks = Vec::new();
    // Per worker, so counting costs no shared cache line; summed by the progress line.
    let counters: Vec<Arc<Counters>> = (0..states.len()).map(|_| Arc::default()).collect();
    let progress = (!c.progress.is_zero() && c.progress < c.duration).then(|| {
        let counters = counters.clone();
        let (every, total) = (c.progress, c.duration);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let (ok, errors) = counters.iter().fold((0, 0), |(o, e), c| {
                    (
                        o + c.ok.load(Ordering::Relaxed),
                        e + c.errors.load(Ordering::Relaxed),
                    )
                });
                let t = start.elapsed();
                eprintln!(
                    "sessioncert bench: {:.0}s/{:.0}s ok={ok} errors={errors} ({:.0}/s)",
                    t.as_secs_f64(),
                    total.as_secs_f64(),
                    ok as f64 / t.as_secs_f64()
                );
            }
        })
    });
    for (s, counter) in states.into_iter().zip(counters) {
        let op = op.clone();
        let s = Arc::new(s);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut ok, mut errors, mut last_error) = (0u64, 0u64, None);
            let mut kinds = std::collections::BTreeMap::<String, u64>::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(s.clone()).await {
                    Ok(()) => {
                        ok += 1;
                        counter.ok.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Err(e) => {
                        errors += 1;
                        counter.errors.fetch_add(1, Ordering::Relaxed);
                        *kinds.entry(kind_of(&e)).or_default() += 1;
                        last_error = Some(format!("{e:#}"));
                    }
                }
            }
            (ok, errors, kinds, lat, last_error)
        }));
    }
    let mut r = Report {
        ok: 0,
        errors: 0,
        errors_by_kind: Default::default(),
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        last_error: None,
    };
    for t in tasks {
        if let Ok((ok, errors, kinds, lat, last)) = t.await {
            r.ok += ok;
            r.errors += errors;
            for (k, n) in kinds {
                *r.errors_by_kind.entry(k).or_default() += n;
            }
            r.latencies_us.extend(lat);
            r.last_error = last.or(r.last_error);
        }
    }
    r.elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    r.latencies_us.sort_unstable();
    r
}

fn http_client(c: &Common) -> anyhow::Result<reqwest::Client> {
    Ok(c.tls
        .options()?
        .configure(reqwest::Client::builder())?
        .pool_max_idle_per_host(c.concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn json_body(size: usize) -> Vec<u8> {
    let overhead = r#"{"data":""}"#.len();
    let mut s = String::from(r#"{"data":""#);
    s.push_str(&"x".repeat(size.saturating_sub(overhead)));
    s.push_str(r#""}"#);
    s.into_bytes()
}

/// A legacy Session-Cert session as the original client makes one.
struct LegacySession {
    id: u64,
    key: zeroize::Zeroizing<String>,
    used: u64,
}

/// The legacy handshake, as the original client runs it: three round trips.
async fn legacy_establish(http: &reqwest::Client, base: &str) -> anyhow::Result<LegacySession> {
    use sessioncert_legacy::{client, wire};
    let r = http
        .get(format!("{base}{}", wire::PUBLIC_KEY_PATH))
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(UnexpectedStatus(r.status().as_u16()).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
    let id = v["sessionCert"]["id"]
        .as_u64()
        .context("no sessionCert.id")?;
    let pem = v["sessionCert"]["publicKey"]
        .as_str()
        .context("no sessionCert.publicKey")?;
    let key = client::new_key()?;
    let wrapped = client::wrap_key(pem, key.as_bytes())?;
    let r = http
        .post(format!("{base}{}", wire::SYMMETRIC_KEY_PATH))
        .header("content-type", "application/json")
        .body(json!({ "id": id, "symmetricKey": wrapped }).to_string())
        .send()
        .await?;
    if r.status() != 201 {
        return Err(UnexpectedStatus(r.status().as_u16()).into());
    }
    let answer = client::answer_test_string(&r.text().await?, key.as_bytes())?;
    let r = http
        .patch(format!("{base}{}", wire::ESTABLISH_PATH))
        .header(wire::ID_HEADER, id.to_string())
        .header("content-type", "text/plain")
        .body(answer)
        .send()
        .await?;
    let status = r.status();
    r.bytes().await?;
    if !status.is_success() {
        return Err(UnexpectedStatus(status.as_u16()).into());
    }
    Ok(LegacySession { id, key, used: 0 })
}

/// One legacy protected request: the body encrypted, the answer decrypted.
async fn legacy_request(
    http: &reqwest::Client,
    url: &str,
    s: &LegacySession,
    body: &[u8],
) -> anyhow::Result<()> {
    use sessioncert_legacy::{cryptojs, wire};
    let r = http
        .post(url)
        .header(wire::ID_HEADER, s.id.to_string())
        .header("content-type", "text/plain")
        .body(cryptojs::encrypt(s.key.as_bytes(), body)?)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        return Err(UnexpectedStatus(status.as_u16()).into());
    }
    cryptojs::decrypt(s.key.as_bytes(), &text)?;
    Ok(())
}

/// `--pin` (clap's argument group makes it present whenever it is read).
fn pin_arg(pin: Option<&str>) -> anyhow::Result<Pin> {
    pin.unwrap_or_default().parse().context("bad --pin")
}

/// Refuses settings that cannot make a measurement.
fn check(c: &Common) -> anyhow::Result<()> {
    if c.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if c.duration.is_zero() {
        bail!("--duration must be longer than 0s");
    }
    Ok(())
}

/// A run in which anything failed, or nothing succeeded, is not a measurement: exit 1
/// with what went wrong (the report is printed either way).
fn outcome(r: &Report, what: &str) -> ExitCode {
    if r.errors == 0 && r.ok > 0 {
        return ExitCode::SUCCESS;
    }
    let kinds: Vec<String> = r
        .errors_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    eprintln!(
        "sessioncert bench: {} of {} {what} failed{}",
        r.errors,
        r.errors + r.ok,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        }
    );
    ExitCode::FAILURE
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Handshake(a) => {
            check(&a.common)?;
            // The base URL; a URL with a path (as `bench request` takes) works too.
            let base = match super::request::split_url(&a.url) {
                Ok((base, _)) => base,
                Err(_) => a.url.trim_end_matches('/').to_owned(),
            };
            let http = http_client(&a.common)?;
            if a.legacy {
                let states = (0..a.common.concurrency)
                    .map(|_| (http.clone(), base.clone()))
                    .collect();
                let report = drive(
                    &a.common,
                    states,
                    |s: Arc<(reqwest::Client, String)>| async move {
                        legacy_establish(&s.0, &s.1).await.map(drop)
                    },
                )
                .await;
                report.print("legacy handshakes", "handshakes_per_sec", &a.common);
                return Ok(outcome(&report, "handshakes"));
            }
            let pin = pin_arg(a.pin.as_deref())?;
            // One client per worker; each iteration is one complete handshake (hello,
            // server hello with ticket, keys derived) through the product's own client,
            // with the key configuration fetched once. The server keeps nothing for it;
            // the confirmation would ride on the session's first request.
            let mut states = Vec::new();
            for _ in 0..a.common.concurrency {
                states.push(
                    Client::builder(&base, Trust::Pin(pin))
                        .http_client(http.clone())
                        .connect_lazily(true)
                        .build()
                        .await
                        .context("cannot fetch the key configuration")?,
                );
            }
            let report = drive(&a.common, states, |c: Arc<Client>| async move {
                Ok(c.rehandshake().await?)
            })
            .await;
            report.print("handshakes", "handshakes_per_sec", &a.common);
            Ok(outcome(&report, "handshakes"))
        }
        BenchCommand::Request(a) => {
            check(&a.common)?;
            let body = bytes::Bytes::from(json_body(a.body));
            let http = http_client(&a.common)?;
            let report = if a.legacy {
                anyhow::ensure!(
                    a.legacy_session_requests > 0,
                    "--legacy-session-requests must be at least 1"
                );
                let (base, _) = super::request::split_url(&a.url)?;
                let mut states = Vec::new();
                for _ in 0..a.common.concurrency {
                    let s = legacy_establish(&http, &base)
                        .await
                        .context("legacy handshake before the run failed")?;
                    states.push((
                        http.clone(),
                        base.clone(),
                        a.url.clone(),
                        body.clone(),
                        a.legacy_session_requests,
                        tokio::sync::Mutex::new(s),
                    ));
                }
                type LegacyState = (
                    reqwest::Client,
                    String,
                    String,
                    bytes::Bytes,
                    u64,
                    tokio::sync::Mutex<LegacySession>,
                );
                drive(&a.common, states, |s: Arc<LegacyState>| async move {
                    let mut session = s.5.lock().await;
                    if session.used >= s.4 {
                        *session = legacy_establish(&s.0, &s.1).await?;
                    }
                    session.used += 1;
                    legacy_request(&s.0, &s.2, &session, &s.3).await
                })
                .await
            } else if a.plain {
                let states = (0..a.common.concurrency)
                    .map(|_| (http.clone(), a.url.clone(), body.clone()))
                    .collect();
                drive(
                    &a.common,
                    states,
                    |s: Arc<(reqwest::Client, String, bytes::Bytes)>| async move {
                        let r =
                            s.0.post(&s.1)
                                .header("content-type", "application/json")
                                .body(s.2.clone())
                                .send()
                                .await
                                // Classified as the client classifies it (TLS or transport).
                                .map_err(sessioncert_client::ClientError::from)?;
                        let status = r.status();
                        r.bytes().await?;
                        if !status.is_success() {
                            return Err(UnexpectedStatus(status.as_u16()).into());
                        }
                        Ok(())
                    },
                )
                .await
            } else {
                let pin = pin_arg(a.pin.as_deref())?;
                let (base, path) = super::request::split_url(&a.url)?;
                let mut states = Vec::new();
                for _ in 0..a.common.concurrency {
                    let c = Client::builder(&base, Trust::Pin(pin))
                        .http_client(http.clone())
                        .build()
                        .await
                        .context("handshake before the run failed")?;
                    states.push((c, path.clone(), body.clone(), a.full));
                }
                drive(
                    &a.common,
                    states,
                    |s: Arc<(Client, String, bytes::Bytes, bool)>| async move {
                        let r =
                            s.0.post(&s.1)
                                .header("content-type", "application/json")
                                .body(s.2.clone())
                                .full(s.3)
                                .send()
                                .await?;
                        if !r.status().is_success() {
                            return Err(UnexpectedStatus(r.status().as_u16()).into());
                        }
                        Ok(())
                    },
                )
                .await
            };
            report.print("requests", "requests_per_sec", &a.common);
            Ok(outcome(&report, "requests"))
        }
    }
}
