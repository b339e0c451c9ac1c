//! `sessioncert gateway`: the sealing reverse proxy in front of a plain HTTP upstream.

use super::parse_duration;
use super::server::{self, App, Listening, ServerArgs, START_STOP};
use crate::config::GATEWAY_HEADING;
use anyhow::Context;
use clap::Args;
use sessioncert_gateway::{Gateway, GatewayConfig, Route, RoutePolicy, Upstream, UpstreamOptions};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `sessioncert gateway`.
#[derive(Args)]
#[command(
    after_help = "Every path is sealed unless a --plain or --refuse prefix says otherwise; the \
longest prefix wins, and prefixes match whole path segments (/health does not match /healthz). \
The protocol's own paths (/.well-known/sessioncert/…) are always the gateway's. The upstream \
gets X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and, for sealed requests, \
sessioncert-session naming the session; no copy of them a client sent. \
Precedence: a flag wins over its environment variable, which wins over the --config file, \
which wins over the built-in default. In the file, the settings under \"Gateway\" below go in a \
[gateway] table (upstream = \"http://127.0.0.1:9000\", plain = [\"/health\"]), the others at the \
top, as for serve."
)]
pub struct GatewayArgs {
    /// The upstream the requests go to: http://host:port[/base]. Required.
    #[arg(long, env = "SESSIONCERT_UPSTREAM", value_name = "URL", value_parser = parse_upstream, help_heading = GATEWAY_HEADING)]
    upstream: Option<String>,
    /// Forward requests under this path prefix without the channel (health checks,
    /// public assets); repeat or comma-separate.
    #[arg(long = "plain", env = "SESSIONCERT_PLAIN", value_name = "PREFIX", value_delimiter = ',', help_heading = GATEWAY_HEADING)]
    plain: Vec<String>,
    /// Answer requests under this path prefix 404 without contacting the upstream;
    /// repeat or comma-separate.
    #[arg(long = "refuse", env = "SESSIONCERT_REFUSE", value_name = "PREFIX", value_delimiter = ',', help_heading = GATEWAY_HEADING)]
    refuse: Vec<String>,
    /// Longest wait for the upstream's response head, connecting included (504 after
    /// it). A response body may take as long as it takes (server-sent events).
    #[arg(long, env = "SESSIONCERT_UPSTREAM_TIMEOUT", default_value = "60s", allow_hyphen_values = true, value_parser = parse_duration, help_heading = GATEWAY_HEADING)]
    upstream_timeout: Duration,
    /// Idle keep-alive connections kept open to the upstream.
    #[arg(long, env = "SESSIONCERT_UPSTREAM_MAX_IDLE", default_value_t = 128, allow_hyphen_values = true, value_parser = super::parse_number::<usize>, help_heading = GATEWAY_HEADING)]
    upstream_max_idle: usize,
    /// How long an idle connection to the upstream is kept: below the upstream's own
    /// keep-alive timeout (Node's is 5s).
    #[arg(long, env = "SESSIONCERT_UPSTREAM_IDLE_TIMEOUT", default_value = "4s", allow_hyphen_values = true, value_parser = parse_duration, help_heading = GATEWAY_HEADING)]
    upstream_idle_timeout: Duration,
    /// Address to listen on.
    #[arg(long, env = "SESSIONCERT_ADDR", default_value = "127.0.0.1:8443", value_parser = super::parse_listen_addr)]
    addr: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
}

/// Checks `--upstream`. A value with user info (which may hold a password) is refused
/// later, by [`run`], with a message that hides it: clap's error would repeat the value.
fn parse_upstream(s: &str) -> Result<String, String> {
    match s.parse::<Upstream>() {
        Err(e) if !s.contains('@') => Err(e.to_string()),
        _ => Ok(s.to_owned()),
    }
}

/// The route policy of the flags, each prefix checked.
fn policy(a: &GatewayArgs) -> anyhow::Result<RoutePolicy> {
    let mut policy = RoutePolicy::new();
    for (flag, prefixes, route) in [
        ("--plain", &a.plain, Route::Plain),
        ("--refuse", &a.refuse, Route::Refuse),
    ] {
        for p in prefixes {
            policy
                .add(p, route)
                .with_context(|| format!("{flag} {p:?}"))?;
        }
    }
    Ok(policy)
}

/// Runs the gateway until SIGINT, SIGTERM or SIGHUP: stops accepting, lets in-flight
/// requests finish (within the grace), persists sessions and exits.
pub async fn run(a: GatewayArgs, settings: String) -> anyhow::Result<ExitCode> {
    // Checked before anything is opened.
    let upstream: Upstream = a
        .upstream
        .as_deref()
        .context(
            "--upstream is required (a flag, SESSIONCERT_UPSTREAM, or upstream in the [gateway] table of --config): the http://host:port[/base] to forward to",
        )?
        .parse()
        .context("--upstream")?;
    let policy = policy(&a)?;
    anyhow::ensure!(
        !a.upstream_timeout.is_zero(),
        "--upstream-timeout must be longer than 0s"
    );
    let options = UpstreamOptions {
        timeout: a.upstream_timeout,
        max_idle: a.upstream_max_idle,
        idle_timeout: a.upstream_idle_timeout,
    };
    server::run(a.addr, a.server, settings, move |ready| {
        let rules: Vec<String> = policy
            .rules()
            .map(|(p, r)| format!("{p}={}", r.as_str()))
            .collect();
        let gateway = Gateway::new(GatewayConfig {
            upstream,
            options,
            policy,
            tls: ready.tls,
        });
        let cors = crate::web::cors::layer(ready.args.cors_origins.clone());
        let routes = gateway.router_with(ready.sc, |sealed| match cors {
            Some(c) => sealed.layer(c),
            None => sealed,
        });
        let probe = gateway.clone();
        let check: crate::admin::ReadyCheck = Arc::new(move || {
            let g = probe.clone();
            Box::pin(async move { g.upstream_ready().await.map_err(|e| e.to_string()) })
        });
        let pin = ready.pin.to_string();
        let upstream = gateway.upstream().to_string();
        Ok(App {
            routes,
            ready: Some(check),
            hide_admin_paths: false,
            announce: Box::new(move |l: &Listening| {
                tracing::info!(
                    target: START_STOP,
                    addr = %l.addr,
                    scheme = l.scheme,
                    admin_addr = %l.admin,
                    pin = %pin,
                    upstream = %upstream,
                    routes = %if rules.is_empty() { "all sealed".to_owned() } else { format!("{}, the rest sealed", rules.join(" ")) },
                    "sessioncert gateway serving; clients pin this identity"
                );
            }),
        })
    })
    .await
}
