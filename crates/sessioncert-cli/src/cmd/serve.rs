//! `sessioncert serve`: the demo server.

use super::server::{self, App, Listening, ServerArgs, START_STOP};
use crate::{demo, web};
use anyhow::Context;
use clap::Args;
use sessioncert_server::SessionCert;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Arguments of `sessioncert serve`.
#[derive(Args)]
#[command(
    after_help = "Precedence: a flag wins over its environment variable, which wins over \
the --config file, which wins over the built-in default. The file is TOML; its keys are the long \
flag names: max-body = \"4MiB\", limit-loopback = true, public-origin = [\"https://api.example.com\"] \
(max_body also works). The first log line lists the effective settings, each tagged [flag], \
[env] or [file] unless it is the default."
)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SESSIONCERT_ADDR", default_value = "127.0.0.1:8080", value_parser = super::parse_listen_addr)]
    addr: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs the demo server until SIGINT, SIGTERM or SIGHUP, then persists sessions and exits.
/// `settings` is the one-line summary of the effective settings, logged first.
pub async fn run(a: ServeArgs, settings: String) -> anyhow::Result<ExitCode> {
    server::run(a.addr, a.server, settings, |ready| {
        let files_dir = ready.args.data.join("files");
        let files = demo::Files::open(files_dir.clone(), demo::files::DEFAULT_QUOTA_BYTES)
            .with_context(|| format!("cannot open {}", files_dir.display()))?;
        let pin = ready.pin.to_string();
        let routes = app_routes(
            ready.sc,
            demo::sealed_routes(files, ready.args.max_body),
            ready.args.cors_origins.clone(),
            &pin,
        );
        Ok(App {
            routes,
            ready: None,
            hide_admin_paths: true,
            announce: Box::new(move |l: &Listening| {
                tracing::info!(
                    target: START_STOP,
                    addr = %l.addr,
                    scheme = l.scheme,
                    admin_addr = %l.admin,
                    pin = %pin,
                    demo = %format!("{}://{}/", l.scheme, l.addr),
                    "sessioncert serving; clients pin this identity"
                );
            }),
        })
    })
    .await
}

/// The serving address's routes (without the operator's): the protocol endpoints and
/// `sealed` under sessioncert, the served module, the plain comparison route and the
/// demo page showing `pin`.
///
/// CORS (`cors_origins`, none: no CORS headers) covers what a page on another origin
/// calls: the protocol endpoints, the sealed routes (their sealed 404 fallback included)
/// and the served module. The plain comparison route, the demo page and the operator's
/// endpoints stay same-origin.
pub(crate) fn app_routes(
    sc: &SessionCert,
    sealed: axum::Router,
    cors_origins: Vec<http::HeaderValue>,
    pin: &str,
) -> axum::Router {
    let mut api = sc.router(sealed).merge(web::module_routes());
    if let Some(cors) = web::cors::layer(cors_origins) {
        api = api.layer(cors);
    }
    api.merge(demo::plain_routes()).merge(web::page_routes(pin))
}
