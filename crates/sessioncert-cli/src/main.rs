//! `sessioncert`: one binary for the demo server, the curl-like client, key tools,
//! the operator's session view and the load generator. Argument parsing and printing
//! live here; all protocol work is in the library crates.
#![forbid(unsafe_code)]

mod admin;
mod cmd;
mod demo;

use clap::{Parser, Subcommand};
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
    /// Run the demo server: sealed POST /apiTest, plain POST /plain/apiTest, sealed /notes.
    Serve(cmd::serve::ServeArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            Command::Serve(a) => cmd::serve::run(a).await,
            Command::Request(a) => cmd::request::run(a).await,
            Command::Sessions { command } => cmd::sessions::run(command).await,
            Command::Bench { command } => cmd::bench::run(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the outermost context and its causes.
            eprintln!("sessioncert: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(cmd::exit_code_of(&e))
        }
    }
}
