//! `lean-noise-nk`: the baseline that `scripts/bench-handshake.sh` sets
//! `sessioncert bench handshake` against. It does the same cryptographic handshake work
//! as sessioncert's one-round-trip handshake and nothing else:
//!
//! * `serve`: a hyper 1.x HTTP/1.1 server (keep-alive, TCP_NODELAY, tokio multi-thread)
//!   whose one handshake route, `POST /nk`, takes Noise NK message 1
//!   (`Noise_NK_25519_AESGCM_SHA256`, empty payload, to a static key generated at start),
//!   answers message 2 and splits the transport keys. `GET /nk` returns the static public
//!   key in hex; the load generator fetches it once before its run, as sessioncert's
//!   fetches the key configuration once.
//! * `bench`: N workers on keep-alive connections, each running initiator → POST → read
//!   message 2 → split back to back for a fixed duration; prints what
//!   `sessioncert bench handshake` prints (`--json`: the same fields).
//!
//! Both sides use sessioncert's own snow resolver (X25519 on aws-lc-rs), the same HTTP
//! client with the same settings (reqwest) and the same allocator (mimalloc), so the
//! ratio of the two rates measures sessioncert's protocol overhead, not a different
//! X25519, client or allocator.
#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sessioncert_proto::crypto::noise_resolver;
use snow::params::NoiseParams;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

// As the `sessioncert` binary, so allocation costs the same on both sides.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Noise protocol sessioncert's handshake suite 0x0001 names.
const NOISE_PARAMS: &str = "Noise_NK_25519_AESGCM_SHA256";
/// Largest message 1 accepted (sessioncert's limit too).
const MAX_MESSAGE: usize = 4096;
/// Noise NK message 1 and 2 with empty payloads: a 32-byte ephemeral key and a 16-byte tag.
const MESSAGE_LEN: usize = 32 + 16;

/// A lean one-round-trip Noise NK server and load generator (benchmark baseline).
#[derive(Parser)]
#[command(name = "lean-noise-nk", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `POST /nk` (message 1 in, message 2 out) until killed.
    Serve(ServeArgs),
    /// Handshakes per second against a `serve`, one HTTP round trip each.
    Bench(BenchArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
}

#[derive(Args)]
struct BenchArgs {
    /// Server base URL, e.g. http://127.0.0.1:8090 (`/nk` is appended unless present).
    #[arg(long)]
    url: String,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?}: {e}"))
}

fn params() -> NoiseParams {
    NOISE_PARAMS
        .parse()
        .unwrap_or_else(|_| unreachable!("{NOISE_PARAMS} is a valid Noise protocol name"))
}

fn builder(params: &NoiseParams) -> snow::Builder<'_> {
    snow::Builder::with_resolver(params.clone(), noise_resolver())
}

// ---------------------------------------------------------------------------------------
// Server

struct Server {
    params: NoiseParams,
    private: Vec<u8>,
    public_hex: String,
}

impl Server {
    fn new() -> anyhow::Result<Self> {
        let params = params();
        let kp = builder(&params)
            .generate_keypair()
            .context("cannot generate the static key")?;
        Ok(Server {
            public_hex: hex::encode(&kp.public),
            private: kp.private,
            params,
        })
    }

    /// Reads message 1, writes message 2 and splits: the responder's whole handshake.
    fn respond(&self, msg1: &[u8]) -> Result<(Vec<u8>, snow::TransportState), snow::Error> {
        let mut hs = builder(&self.params)
            .local_private_key(&self.private)?
            .build_responder()?;
        let mut payload = [0u8; MAX_MESSAGE];
        hs.read_message(msg1, &mut payload)?;
        let mut msg2 = vec![0u8; MESSAGE_LEN];
        let n = hs.write_message(&[], &mut msg2)?;
        msg2.truncate(n);
        Ok((msg2, hs.into_transport_mode()?))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/nk" {
            return answer(StatusCode::NOT_FOUND, Bytes::new());
        }
        match *req.method() {
            Method::GET => answer(StatusCode::OK, Bytes::from(self.public_hex.clone())),
            Method::POST => {
                let body = match Limited::new(req.into_body(), MAX_MESSAGE).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return answer(StatusCode::BAD_REQUEST, Bytes::new()),
                };
                match self.respond(&body) {
                    Ok((msg2, keys)) => {
                        black_box(keys);
                        answer(StatusCode::OK, Bytes::from(msg2))
                    }
                    Err(_) => answer(StatusCode::BAD_REQUEST, Bytes::new()),
                }
            }
            _ => answer(StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
        }
    }
}

fn answer(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let server = Arc::new(Server::new()?);
    let listener = tokio::net::TcpListener::bind(a.addr)
        .await
        .with_context(|| format!("cannot listen on {}", a.addr))?;
    println!(
        "lean-noise-nk listening on {} (static key {})",
        listener.local_addr()?,
        server.public_hex
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                eprintln!("lean-noise-nk: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------
// Load generator: the same loop, client settings and report as `sessioncert bench`.

/// Results of one run.
struct Report {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    last_error: Option<String>,
}

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

    fn print(&self, a: &BenchArgs) {
        let (p50, p99) = (self.percentile_ms(0.50), self.percentile_ms(0.99));
        if a.json {
            let v = json!({
                "handshakes_per_sec": (self.rate() * 10.0).round() / 10.0,
                "p50_ms": (p50 * 1000.0).round() / 1000.0,
                "p99_ms": (p99 * 1000.0).round() / 1000.0,
                "errors": self.errors,
                "count": self.ok,
                "duration_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "concurrency": a.concurrency,
            });
            println!("{v}");
        } else {
            println!(
                "handshakes: {} in {:.2} s = {:.0}/s, p50 {p50:.3} ms, p99 {p99:.3} ms, errors {}",
                self.ok,
                self.elapsed.as_secs_f64(),
                self.rate(),
                self.errors
            );
        }
        if let Some(e) = &self.last_error {
            eprintln!("lean-noise-nk bench: last error: {e}");
        }
    }
}

/// What every worker shares.
struct Target {
    http: reqwest::Client,
    url: String,
    params: NoiseParams,
    server_key: [u8; 32],
}

impl Target {
    /// One complete handshake: initiator → POST message 1 → read message 2 → split.
    async fn handshake(&self) -> anyhow::Result<()> {
        let mut hs = builder(&self.params)
            .remote_public_key(&self.server_key)?
            .build_initiator()?;
        let mut msg1 = vec![0u8; MESSAGE_LEN];
        let n = hs.write_message(&[], &mut msg1)?;
        msg1.truncate(n);
        let r = self.http.post(&self.url).body(msg1).send().await?;
        let status = r.status();
        let msg2 = r.bytes().await?;
        if !status.is_success() {
            bail!("server answered {status}");
        }
        let mut payload = [0u8; MAX_MESSAGE];
        hs.read_message(&msg2, &mut payload)?;
        black_box(hs.into_transport_mode()?);
        Ok(())
    }
}

async fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let base = a.url.trim_end_matches('/');
    let url = if base.ends_with("/nk") {
        base.to_owned()
    } else {
        format!("{base}/nk")
    };
    // As `sessioncert bench handshake`'s client.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let key_hex = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot fetch the static key from {url}"))?
        .text()
        .await?;
    let server_key: [u8; 32] = hex::decode(key_hex.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .context("the server's static key is not 32 bytes of hex")?;
    let target = Arc::new(Target {
        http,
        url,
        params: params(),
        server_key,
    });

    let start = Instant::now();
    let deadline = start + a.duration;
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut ok, mut errors, mut last_error) = (0u64, 0u64, None);
            while Instant::now() < deadline {
                let t = Instant::now();
                match target.handshake().await {
                    Ok(()) => {
                        ok += 1;
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Err(e) => {
                        errors += 1;
                        last_error = Some(format!("{e:#}"));
                    }
                }
            }
            (ok, errors, lat, last_error)
        }));
    }
    let mut r = Report {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        last_error: None,
    };
    for t in tasks {
        if let Ok((ok, errors, lat, last)) = t.await {
            r.ok += ok;
            r.errors += errors;
            r.latencies_us.extend(lat);
            r.last_error = last.or(r.last_error);
        }
    }
    r.elapsed = start.elapsed();
    r.latencies_us.sort_unstable();
    r.print(&a);
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lean-noise-nk: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::Bench(a) => bench(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lean-noise-nk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's half and an initiator agree on the transport keys (in memory, fast).
    #[test]
    fn responder_completes_a_handshake_with_an_initiator() {
        let server = Server::new().unwrap();
        let key = hex::decode(&server.public_hex).unwrap();
        let params = params();
        let mut hs = builder(&params)
            .remote_public_key(&key)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut msg1 = vec![0u8; MESSAGE_LEN];
        let n = hs.write_message(&[], &mut msg1).unwrap();
        assert_eq!(n, MESSAGE_LEN);
        let (msg2, mut server_keys) = server.respond(&msg1[..n]).unwrap();
        assert_eq!(msg2.len(), MESSAGE_LEN);
        let mut payload = [0u8; MAX_MESSAGE];
        assert_eq!(hs.read_message(&msg2, &mut payload).unwrap(), 0);
        let mut client_keys = hs.into_transport_mode().unwrap();
        let mut sealed = [0u8; 64];
        let n = client_keys.write_message(b"ping", &mut sealed).unwrap();
        let mut opened = [0u8; 64];
        let m = server_keys.read_message(&sealed[..n], &mut opened).unwrap();
        assert_eq!(&opened[..m], b"ping");
        // Anything that is not a message 1 to this key is refused.
        assert!(server.respond(&sealed[..n]).is_err());
    }
}
