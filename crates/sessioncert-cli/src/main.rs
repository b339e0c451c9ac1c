//! `sessioncert`: one binary for the demo server, the gateway, the curl-like client, key
//! tools, the operator's session view and the load generator. Argument parsing and printing
//! live here; all protocol work is in the library crates.
#![forbid(unsafe_code)]

mod admin;
mod cmd;
mod config;
mod demo;
mod web;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

// glibc malloc showed up as a quarter of the client's CPU under load (arena lock
// contention and consolidation); mimalloc removes most of it for server and client.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Application-layer encryption for HTTP APIs: a Noise handshake inside ordinary HTTP
/// requests, then every request and response travels sealed.
#[derive(Parser)]
#[command(
    name = "sessioncert",
    version,
    about = "Application-layer encryption for HTTP APIs: a Noise handshake inside ordinary HTTP \
requests, then every request and response travels sealed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new server identity in DIR (refuses to overwrite one).
    Keygen(cmd::keys::KeygenArgs),
    /// Print the identity pin of a data directory: one line, nothing else.
    Fingerprint(cmd::keys::FingerprintArgs),
    /// Add a new handshake key to a data directory now (the identity and pin stay). It
    /// starts in 10 minutes; running servers sharing DIR pick it up within a minute.
    RotateKeys(cmd::keys::RotateKeysArgs),
    /// Rotate the server identity without a pause: `prepare` makes the next identity and
    /// prints its pin (give clients both pins), `promote` makes it the current one.
    Identity {
        #[command(subcommand)]
        command: cmd::keys::IdentityCommand,
    },
    /// Run the demo server: the demo page at /, the browser client at /sessioncert.js, sealed
    /// POST /apiTest, /notes, /events and /files, plain POST /plain/apiTest.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Put sessioncert in front of any HTTP API: open sealed requests, forward them in
    /// plain HTTP to --upstream, seal its answers back (per path prefix: sealed, plain or
    /// refused).
    Gateway(Box<cmd::gateway::GatewayArgs>),
    /// The key broker: users' files encrypted at rest under split per-user keys, shared
    /// by one-time codes, served through the sessioncert channel (server and client).
    Broker {
        #[command(subcommand)]
        command: cmd::broker::BrokerCommand,
    },
    /// Send one sealed request, curl-like, and print the opened response body.
    Request(cmd::request::RequestArgs),
    /// The operator's view of sessions: list and close.
    Sessions {
        #[command(subcommand)]
        command: cmd::sessions::SessionsCommand,
    },
    /// Load generators for handshakes and sealed (or plain) requests.
    Bench {
        #[command(subcommand)]
        command: cmd::bench::BenchCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::generate::CompletionsArgs),
    /// Print the manual page (roff), or write one per command into a directory.
    Man(cmd::generate::ManArgs),
}

fn main() -> ExitCode {
    let parsed = match config::parse(Cli::command(), std::env::args_os().collect()) {
        Ok(p) => p,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(usage) => usage.exit(),
            Err(e) => {
                // A bad configuration file is a usage error, as a bad flag is.
                eprintln!("sessioncert: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    let cli = Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sessioncert: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Keygen(a) => cmd::keys::keygen(a),
            Command::Fingerprint(a) => cmd::keys::fingerprint(a),
            Command::RotateKeys(a) => cmd::keys::rotate_keys(a),
            Command::Identity { command } => cmd::keys::identity(command),
            Command::Serve(a) => cmd::serve::run(*a, parsed.settings()).await,
            Command::Gateway(a) => cmd::gateway::run(*a, parsed.settings()).await,
            Command::Broker { command } => cmd::broker::run(command, parsed.settings()).await,
            Command::Request(a) => cmd::request::run(a).await,
            Command::Sessions { command } => cmd::sessions::run(command).await,
            Command::Bench { command } => cmd::bench::run(command).await,
            Command::Completions(a) => cmd::generate::completions(a),
            Command::Man(a) => cmd::generate::man(a),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sessioncert: {}", cmd::error_line(&e));
            ExitCode::from(cmd::exit_code_of(&e))
        }
    }
}
