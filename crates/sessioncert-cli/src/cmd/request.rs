//! `sessioncert request`: one sealed request, curl-like.

use anyhow::{bail, Context};
use clap::Args;
use http::Method;
use sessioncert_client::{Client, ClientError, Pin, Trust};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status when the server may or may not have executed the request: it was sent,
/// then the session was refused (refusals are not authenticated, so possibly forged
/// after the server executed it) or the connection failed, and it is not safe to send
/// twice, so it was not re-sent.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 6;

/// Exit status when the response started (its status was authenticated) but its body
/// did not arrive whole: cut short, a chunk that failed to open, or no progress for the
/// idle timeout (as curl's 18, "partial file"). Nothing is left at the -o FILE path.
pub const EXIT_PARTIAL_BODY: u8 = 18;

/// Arguments of `sessioncert request`.
#[derive(Args)]
#[command(
    after_help = "Exit status: 0 ok; 1 failure; 2 usage error; 3 server identity not trusted \
(wrong pin); 4 refused by the server; 5 server unreachable or not answering in time (nothing \
was executed, or the request is idempotent); 6 outcome unknown: the request was \
sent, then the session was refused or the connection failed, so the server may or may not have \
executed it; it was not re-sent (it is not idempotent): check before retrying; 7 the TLS \
handshake failed (certificate not trusted: see --cacert and -k; not a TLS server), nothing was \
sent; 18 the response started but its body did not arrive whole (cut short, a chunk that did not \
open, or stalled): what was printed is incomplete, and no -o FILE is left; 22 with -f when the \
opened status is 400 or above (the body is then not printed).

Bodies from @FILE or @- are streamed: read and sealed chunk by chunk as the connection takes \
them, never whole in memory (when the server negotiated streamed bodies; otherwise up to 4 MiB \
is buffered). The response body is written as it arrives (stdout is flushed after each piece, \
so server-sent events show as they come); -o FILE is written to FILE.part and renamed when \
complete. Without --max-time, a request fails after 60 s without progress rather than after \
60 s in all.

A session file (--session) is used by one process at a time: it is locked (FILE.lock) while \
the command runs, and a second command on the same file waits up to 5 s for it. A FILE that \
exists and is not a session file is never overwritten."
)]
#[command(group(clap::ArgGroup::new("trust").args(["pin", "tofu"])))]
#[command(group(clap::ArgGroup::new("payload").args(["data", "data_binary", "json"])))]
pub struct RequestArgs {
    /// The server identity to require (from `sessioncert fingerprint`). Give it twice
    /// (or comma-separated) to accept either of two identities while the server's is
    /// rotated: the current pin and the next (`sessioncert identity prepare`).
    #[arg(long, env = "SESSIONCERT_PIN", value_delimiter = ',')]
    pin: Vec<String>,
    /// Trust whatever identity the server presents (trust on first use). An active
    /// attacker on this first contact could impersonate the server.
    #[arg(long)]
    tofu: bool,
    /// Keep the session in FILE: reuse it if present, save it after use (mode 0600).
    /// Locked while in use (FILE.lock): one process per file.
    #[arg(long)]
    session: Option<PathBuf>,
    /// Full-request mode: method, path, headers and body all travel sealed.
    #[arg(long)]
    full: bool,
    /// HTTP method (default GET, or POST when a body is given).
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// Extra header 'Name: value' (repeatable). Bound into the seal in header mode
    /// (covered): a request whose header was changed on the way is refused.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body (text), as curl: @FILE (or @- for stdin) reads it, without line breaks.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Request body exactly as given or as in @FILE (or @- for stdin).
    #[arg(long = "data-binary")]
    data_binary: Option<String>,
    /// JSON request body (or @FILE, @-): sets content-type and accept to
    /// application/json unless given with -H.
    #[arg(long)]
    json: Option<String>,
    /// Print the response status and headers before the body.
    #[arg(short = 'i', long)]
    include: bool,
    /// Exit with status 22, printing no body, when the (opened) response status is 400
    /// or above.
    #[arg(short = 'f', long)]
    fail: bool,
    /// The request is safe to send twice: if the server refuses the session after it
    /// was sent, handshake anew and send it again. Default: only for GET, HEAD,
    /// OPTIONS, TRACE, PUT and DELETE; otherwise such a refusal exits 6.
    #[arg(long)]
    idempotent: bool,
    /// Give up after this long in all (e.g. 10s, 1m, or seconds as curl: 30, 1.5; 0 for
    /// no limit); a request already sent then ends as an unknown outcome (exit 6)
    /// unless it is idempotent. Without it, a request gives up after 60 s without
    /// progress.
    #[arg(short = 'm', long = "max-time", allow_hyphen_values = true, value_parser = super::parse_seconds_or_duration)]
    max_time: Option<std::time::Duration>,
    /// Give up connecting after this long (default 10s; seconds as curl: 5, 2.5); nothing
    /// was sent (exit 5).
    #[arg(long = "connect-timeout", allow_hyphen_values = true, value_parser = super::parse_seconds_or_duration)]
    connect_timeout: Option<std::time::Duration>,
    /// Write the opened body to FILE instead of stdout.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Silent: no warnings on stderr (errors are still printed).
    #[arg(short = 's', long)]
    silent: bool,
    /// Verbose: each protocol step on stderr — key configuration, handshake (suite,
    /// session id), the sealed request and its opened response, with timings. Never a
    /// key or a body.
    #[arg(short = 'v', long, conflicts_with = "silent")]
    verbose: bool,
    /// Leave the session open on the server at exit (without --session it is closed).
    #[arg(long)]
    keep_session: bool,
    #[command(flatten)]
    tls: super::tls::TlsArgs,
    /// The URL, e.g. http://127.0.0.1:8080/apiTest or https://api.example/notes
    /// (http:// is assumed when no scheme is given: 127.0.0.1:8080/apiTest).
    url: String,
}

/// `host:port/path` means `http://host:port/path`, as curl reads it.
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// Splits `http://host:port/p?q` into the base `http://host:port` and `/p?q`.
pub(crate) fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let u = reqwest::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        bail!("URL must be http or https: {url}");
    }
    let host = u.host_str().context("URL has no host")?;
    let base = match u.port() {
        Some(p) => format!("{}://{}:{}", u.scheme(), host_for_url(host), p),
        None => format!("{}://{}", u.scheme(), host_for_url(host)),
    };
    let mut path = u.path().to_owned();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok((base, path))
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A request body: in memory, or streamed from a file or stdin.
enum BodyArg {
    Bytes(Vec<u8>),
    File(PathBuf),
    Stdin,
}

/// The body the arguments give. `--data-binary` and `--json` stream @FILE and @-; `-d`
/// reads them whole to drop their line breaks, as curl does (form data, small).
fn body_arg(a: &RequestArgs) -> anyhow::Result<Option<BodyArg>> {
    if let Some(d) = &a.data {
        return Ok(Some(BodyArg::Bytes(match d.strip_prefix('@') {
            Some(path) => {
                let mut v = read_at(path)?;
                v.retain(|b| *b != b'\n' && *b != b'\r');
                v
            }
            None => d.clone().into_bytes(),
        })));
    }
    Ok(a.data_binary
        .as_ref()
        .or(a.json.as_ref())
        .map(|spec| match spec.strip_prefix('@') {
            Some("-") => BodyArg::Stdin,
            Some(path) => BodyArg::File(PathBuf::from(path)),
            None => BodyArg::Bytes(spec.clone().into_bytes()),
        }))
}

/// The bytes of FILE, or of stdin for `-`.
fn read_at(path: &str) -> anyhow::Result<Vec<u8>> {
    if path == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
        Ok(v)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {path}"))
    }
}

/// Sends the request and prints the opened body.
pub async fn run(a: RequestArgs) -> anyhow::Result<ExitCode> {
    init_logs(a.verbose);
    let (base, path) = split_url(&with_scheme(&a.url))?;
    let trust = match (a.pin.as_slice(), a.tofu) {
        ([_, ..], _) => Trust::pins(
            a.pin
                .iter()
                .map(|p| p.parse::<Pin>().with_context(|| format!("bad --pin {p:?}")))
                .collect::<anyhow::Result<Vec<Pin>>>()?,
        ),
        ([], true) => {
            if !a.silent {
                eprintln!("sessioncert: WARNING: --tofu trusts whatever server answers; pin its identity instead");
            }
            Trust::FirstUse
        }
        ([], false) => bail!("give --pin PIN (from `sessioncert fingerprint`) or --tofu"),
    };
    let body = body_arg(&a)?;
    if let Some(BodyArg::File(path)) = &body {
        // Fail before connecting, as reading the file first did.
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    let method = match &a.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).context("bad method")?,
        None if body.is_some() => Method::POST,
        None => Method::GET,
    };
    let http = a
        .tls
        .options()?
        .configure(reqwest::Client::builder())?
        .connect_timeout(
            a.connect_timeout
                .unwrap_or(sessioncert_client::DEFAULT_CONNECT_TIMEOUT),
        )
        // Below the server's keep-alive, as the client's default (see its docs).
        .pool_idle_timeout(std::time::Duration::from_secs(45));
    // As curl: --max-time 0 means no limit.
    let http = match a.max_time {
        Some(t) if t.is_zero() => http,
        t => http.timeout(t.unwrap_or(sessioncert_client::DEFAULT_REQUEST_TIMEOUT)),
    }
    .build()?;
    let mut builder = Client::builder(&base, trust).http_client(http);
    if a.max_time.is_some() {
        // --max-time is the one limit then (0: none), as with curl: no separate
        // "no progress" timeout cuts a slow stream before it.
        builder = builder.idle_timeout(None);
    }
    if let Some(f) = &a.session {
        builder = builder.session_file(f.clone());
    }
    let client = builder.build().await?;
    if a.tofu && !a.silent {
        eprintln!("sessioncert: server identity is {}", client.identity());
    }
    let method_name = method.to_string();
    let one_shot = a.session.is_none() && !a.keep_session;
    let mut req = client.request(method, &path).full(a.full);
    if let Some(t) = a.max_time.filter(|t| !t.is_zero()) {
        req = req.timeout(t);
    }
    if a.idempotent {
        req = req.idempotent(true);
    }
    let mut has_ct = false;
    let has_accept = a.headers.iter().any(|h| {
        h.split(':')
            .next()
            .is_some_and(|k| k.trim().eq_ignore_ascii_case("accept"))
    });
    if a.json.is_some() && !has_accept {
        req = req.header("accept", "application/json");
    }
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not 'Name: value'"))?;
        let name = k.trim().to_ascii_lowercase();
        has_ct |= name == "content-type";
        req = req.header(name.as_str(), v.trim());
        // The user's headers are meant for the handler: bind them, so a proxy cannot
        // change them unnoticed. The content type is bound anyway; framing, hop-by-hop
        // and Host (the target origin is bound instead) cannot be covered.
        if !is_bound_otherwise_or_hop_by_hop(&name) {
            req = req.cover(name.as_str());
        }
    }
    if let Some(b) = body {
        if !has_ct {
            let ct = if a.json.is_some() {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            req = req.header("content-type", ct);
        }
        req = match b {
            BodyArg::Bytes(b) => req.body(b),
            BodyArg::File(path) => req.body_file(path),
            BodyArg::Stdin => req.body_reader(tokio::io::stdin()),
        };
    }
    let started = std::time::Instant::now();
    if a.verbose {
        eprintln!(
            "> {method_name} {path} ({})",
            if a.full { "full mode" } else { "header mode" }
        );
        for h in &a.headers {
            eprintln!("> {}", h.trim());
        }
    }
    let mut resp = match req.send_streaming().await {
        Ok(r) => r,
        Err(e @ ClientError::OutcomeUnknown { .. }) => {
            eprintln!(
                "sessioncert: {}",
                outcome_unknown_line(&e, &method_name, a.idempotent)
            );
            return Ok(ExitCode::from(EXIT_OUTCOME_UNKNOWN));
        }
        Err(e) => {
            if one_shot {
                close_quietly(&client).await;
            }
            return Err(e.into());
        }
    };
    if let Some(f) = &a.session {
        client.save_session(f).await?;
    }
    let status = resp.status();
    if a.verbose {
        eprintln!(
            "< HTTP {status} ({:.1} ms in all)",
            started.elapsed().as_secs_f64() * 1e3
        );
        for (k, v) in resp.headers() {
            eprintln!("< {k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
    }
    let mut out = std::io::stdout().lock();
    if a.include {
        writeln!(out, "HTTP {status}")?;
        for (k, v) in resp.headers() {
            writeln!(out, "{k}: {}", String::from_utf8_lossy(v.as_bytes()))?;
        }
        writeln!(out)?;
    }
    // As curl -f: an error status prints no body (it would pass for the answer in a
    // pipeline or an -o file).
    let failed = a.fail && status.as_u16() >= 400;
    let written = if failed {
        Ok(())
    } else {
        match &a.output {
            Some(path) => write_to_file(&mut resp, path, None).await,
            None => write_to(&mut resp, &mut out).await,
        }
    };
    out.flush()?;
    // A one-shot request leaves nothing behind, also when its body failed: its session
    // is closed at once instead of living on the server until its idle timeout.
    if one_shot {
        close_quietly(&client).await;
    }
    if let Err(e) = written {
        return match e {
            BodyError::Client(e) => {
                eprintln!(
                    "sessioncert: {}",
                    format!("{:#}", anyhow::Error::from(e)).replace(['\n', '\r'], " ")
                );
                Ok(ExitCode::from(EXIT_PARTIAL_BODY))
            }
            BodyError::Local(e) => Err(e),
            BodyError::Interrupted => {
                eprintln!("sessioncert: interrupted; nothing was left at the -o path");
                Ok(ExitCode::from(130))
            }
        };
    }
    if failed {
        eprintln!("sessioncert: server answered {status}");
        return Ok(ExitCode::from(22));
    }
    Ok(ExitCode::SUCCESS)
}

/// Closes the session, giving up after 2 s (the request's outcome is already decided).
async fn close_quietly(client: &Client) {
    match tokio::time::timeout(std::time::Duration::from_secs(2), client.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "closing the one-shot session failed"),
        Err(_) => tracing::debug!("closing the one-shot session timed out"),
    }
}

/// Why the body could not be written whole.
pub(crate) enum BodyError {
    /// The response body failed (cut short, did not open, stalled).
    Client(ClientError),
    /// Writing it here failed.
    Local(anyhow::Error),
    /// Ctrl-C or SIGTERM during an `-o` transfer.
    Interrupted,
}

/// Writes the body to `out` as it arrives, flushing after each piece.
async fn write_to(
    resp: &mut sessioncert_client::StreamingResponse,
    out: &mut impl Write,
) -> Result<(), BodyError> {
    while let Some(piece) = resp.chunk().await.map_err(BodyError::Client)? {
        out.write_all(&piece)
            .and_then(|()| out.flush())
            .map_err(|e| BodyError::Local(e.into()))?;
    }
    Ok(())
}

/// Where `-o` writes.
enum OutputTarget {
    /// `-o -`: standard output, as curl.
    Stdout,
    /// An existing path that is not a regular file (`/dev/null`, a pipe): written in
    /// place, never replaced.
    Direct(PathBuf),
    /// A regular file, new or existing (a symlink is followed to it): written to a
    /// hidden temporary file beside it and renamed onto it only once the body is whole,
    /// so the path never holds a cut-short body. An existing file keeps its permissions.
    Replace {
        target: PathBuf,
        temp: PathBuf,
        permissions: Option<std::fs::Permissions>,
    },
}

fn output_target(path: &std::path::Path) -> std::io::Result<OutputTarget> {
    if path.as_os_str() == "-" {
        return Ok(OutputTarget::Stdout);
    }
    let (target, permissions) = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory",
            ))
        }
        Ok(m) if !m.is_file() => return Ok(OutputTarget::Direct(path.to_path_buf())),
        Ok(m) => (std::fs::canonicalize(path)?, Some(m.permissions())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (path.to_path_buf(), None),
        Err(e) => return Err(e),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
    let temp = target.with_file_name(format!(".{name}.{}.part", hex::encode(suffix)));
    Ok(OutputTarget::Replace {
        target,
        temp,
        permissions,
    })
}

/// Writes the body to `path` as it arrives (see [`OutputTarget`]). Ctrl-C or SIGTERM
/// during the transfer removes the temporary file (exit 130). A new file gets
/// `new_file_mode` (Unix) when given, else the umask's default; a replaced file keeps
/// its mode.
pub(crate) async fn write_to_file(
    resp: &mut sessioncert_client::StreamingResponse,
    path: &std::path::Path,
    new_file_mode: Option<u32>,
) -> Result<(), BodyError> {
    let local = |e: std::io::Error, p: &std::path::Path| {
        BodyError::Local(anyhow::Error::from(e).context(format!("cannot write {}", p.display())))
    };
    let target = output_target(path).map_err(|e| local(e, path))?;
    let (mut file, temp) = match &target {
        OutputTarget::Stdout => {
            let mut out = std::io::stdout().lock();
            return write_to(resp, &mut out).await;
        }
        OutputTarget::Direct(p) => (std::fs::File::create(p).map_err(|e| local(e, p))?, None),
        OutputTarget::Replace {
            temp, permissions, ..
        } => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            if let (Some(mode), None) = (new_file_mode, permissions) {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(mode);
            }
            #[cfg(not(unix))]
            let _ = new_file_mode;
            let f = options.open(temp).map_err(|e| local(e, temp))?;
            if let Some(p) = permissions {
                f.set_permissions(p.clone()).map_err(|e| local(e, temp))?;
            }
            (f, Some(temp.clone()))
        }
    };
    let written = async {
        while let Some(piece) = resp.chunk().await.map_err(BodyError::Client)? {
            file.write_all(&piece).map_err(|e| local(e, path))?;
        }
        if let OutputTarget::Replace { target, temp, .. } = &target {
            file.sync_all().map_err(|e| local(e, temp))?;
            std::fs::rename(temp, target).map_err(|e| local(e, target))?;
        }
        Ok(())
    };
    let written = tokio::select! {
        r = written => r,
        () = interrupted() => Err(BodyError::Interrupted),
    };
    if written.is_err() {
        if let Some(t) = temp {
            let _ = std::fs::remove_file(t);
        }
    }
    written
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The client library's log events on stderr with `-v`: every protocol step,
/// curl-style (`* …`), and its warnings. Without `-v` the command's own one-line error
/// says what went wrong (the library's warnings would repeat it). `RUST_LOG` overrides.
fn init_logs(verbose: bool) {
    let default = if verbose {
        "sessioncert_client=debug"
    } else {
        "off"
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(StepLine)
        .try_init();
}

/// One stderr line per event: `* message field=value …` for steps, `sessioncert:
/// warning: …` for warnings; no timestamps, levels or module paths.
struct StepLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for StepLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prefix = if *event.metadata().level() <= tracing::Level::WARN {
            "sessioncert: warning: "
        } else {
            "* "
        };
        w.write_str(prefix)?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The one stderr line for an unknown outcome: what happened, its cause, what to do.
fn outcome_unknown_line(e: &ClientError, method: &str, idempotent: bool) -> String {
    let said = e.to_string();
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        // The outcome message often says its cause already; say it once.
        if !said.contains(&text) && !causes.contains(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    let hint = if idempotent {
        String::new()
    } else {
        format!(" If this {method} is safe to send twice, --idempotent re-sends it automatically.")
    };
    let line = if causes.is_empty() {
        format!("{said}.{hint}")
    } else {
        format!("{said}. Cause: {}.{hint}", causes.join(": "))
    };
    line.replace(['\n', '\r'], " ")
}

/// Headers `-H` may set that are not covered: bound another way (`content-type`, `host`
/// through the target origin) or describing the connection, not the message.
fn is_bound_otherwise_or_hop_by_hop(name: &str) -> bool {
    name.starts_with("sessioncert-")
        || matches!(
            name,
            "content-type"
                | "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "upgrade"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_splits_into_base_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/apiTest?x=1").unwrap(),
            ("http://127.0.0.1:8080".into(), "/apiTest?x=1".into())
        );
        assert_eq!(
            split_url("https://example.com").unwrap(),
            ("https://example.com".into(), "/".into())
        );
        assert_eq!(
            split_url("http://[::1]:9/a").unwrap(),
            ("http://[::1]:9".into(), "/a".into())
        );
        assert!(split_url("ftp://x/").is_err());
        assert!(split_url("not a url").is_err());
    }
}
