//! `sessioncert`: one binary for the demo server, the curl-like client, key tools,
//! the operator's session view and the load generator. Argument parsing and printing
//! live here; all protocol work is in the library crates.
#![forbid(unsafe_code)]

mod cmd;
mod config;
mod demo;

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
            Command::Serve(a) => cmd::serve::run(a, parsed.serve_settings()).await,
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
            eprintln!("sessioncert: {}", one_line(&e));
            ExitCode::from(cmd::exit_code_of(&e))
        }
    }
}

/// One line: the outermost context and its causes, each cause once. Many errors print
/// their source in their own message too (an OS error would show twice), so a cause
/// already said by the text before it is left out.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace(['\n', '\r'], " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let os = std::io::Error::from_raw_os_error(2);
        let text = os.to_string();
        let e = anyhow::Error::new(os).context(format!("/x/identity.key: {text}"));
        let e = e.context("no identity in /x");
        assert_eq!(
            one_line(&e),
            format!("no identity in /x: /x/identity.key: {text}")
        );
        assert_eq!(one_line(&e).matches(&text).count(), 1);
        let e = anyhow::anyhow!("plain").context("outer");
        assert_eq!(one_line(&e), "outer: plain");
    }
}
