//! `sessioncert request`: one sealed request, curl-like.

use anyhow::{bail, Context};
use clap::Args;
use http::Method;
use sessioncert_client::{Client, Pin, Trust};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sessioncert request`.
#[derive(Args)]
#[command(
    after_help = "Exit status: 0 ok; 1 failure; 2 usage error; 3 server identity not trusted \
(wrong pin); 4 refused by the server; 5 server unreachable; 22 with -f when the opened status \
is 400 or above."
)]
#[command(group(clap::ArgGroup::new("trust").args(["pin", "tofu"])))]
#[command(group(clap::ArgGroup::new("payload").args(["data", "data_binary"])))]
pub struct RequestArgs {
    /// The server identity to require (from `sessioncert fingerprint`).
    #[arg(long, env = "SESSIONCERT_PIN")]
    pin: Option<String>,
    /// Trust whatever identity the server presents (trust on first use). An active
    /// attacker on this first contact could impersonate the server.
    #[arg(long)]
    tofu: bool,
    /// Keep the session in FILE: reuse it if present, save it after use (mode 0600).
    #[arg(long)]
    session: Option<PathBuf>,
    /// Full-request mode: method, path, headers and body all travel sealed.
    #[arg(long)]
    full: bool,
    /// HTTP method (default GET, or POST when a body is given).
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// Extra header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body (text).
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Request body from a file: @FILE (or @- for stdin).
    #[arg(long = "data-binary")]
    data_binary: Option<String>,
    /// Print the response status and headers before the body.
    #[arg(short = 'i', long)]
    include: bool,
    /// Exit with status 22 when the (opened) response status is 400 or above.
    #[arg(short = 'f', long)]
    fail: bool,
    /// The URL, e.g. http://127.0.0.1:8080/apiTest
    url: String,
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

fn read_body(a: &RequestArgs) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(d) = &a.data {
        return Ok(Some(d.clone().into_bytes()));
    }
    if let Some(spec) = &a.data_binary {
        let Some(path) = spec.strip_prefix('@') else {
            return Ok(Some(spec.clone().into_bytes()));
        };
        let bytes = if path == "-" {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        } else {
            std::fs::read(path).with_context(|| format!("cannot read {path}"))?
        };
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// Sends the request and prints the opened body.
pub async fn run(a: RequestArgs) -> anyhow::Result<ExitCode> {
    let (base, path) = split_url(&a.url)?;
    let trust = match (&a.pin, a.tofu) {
        (Some(p), _) => Trust::Pin(p.parse::<Pin>().context("bad --pin")?),
        (None, true) => {
            eprintln!("sessioncert: WARNING: --tofu trusts whatever server answers; pin its identity instead");
            Trust::FirstUse
        }
        (None, false) => bail!("give --pin PIN (from `sessioncert fingerprint`) or --tofu"),
    };
    let body = read_body(&a)?;
    let method = match &a.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).context("bad method")?,
        None if body.is_some() => Method::POST,
        None => Method::GET,
    };
    let mut builder = Client::builder(&base, trust);
    if let Some(f) = &a.session {
        builder = builder.session_file(f.clone());
    }
    let client = builder.build().await?;
    if a.tofu {
        eprintln!("sessioncert: server identity is {}", client.identity());
    }
    let mut req = client.request(method, &path).full(a.full);
    let mut has_ct = false;
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not 'Name: value'"))?;
        has_ct |= k.trim().eq_ignore_ascii_case("content-type");
        req = req.header(k.trim(), v.trim());
    }
    if let Some(b) = body {
        if !has_ct {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        req = req.body(b);
    }
    let resp = req.send().await?;
    if let Some(f) = &a.session {
        client.save_session(f).await?;
    }
    let status = resp.status();
    let mut out = std::io::stdout().lock();
    if a.include {
        writeln!(out, "HTTP {status}")?;
        for (k, v) in resp.headers() {
            writeln!(out, "{k}: {}", String::from_utf8_lossy(v.as_bytes()))?;
        }
        writeln!(out)?;
    }
    out.write_all(&resp.bytes())?;
    out.flush()?;
    if a.fail && status.as_u16() >= 400 {
        eprintln!("sessioncert: server answered {status}");
        return Ok(ExitCode::from(22));
    }
    Ok(ExitCode::SUCCESS)
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
