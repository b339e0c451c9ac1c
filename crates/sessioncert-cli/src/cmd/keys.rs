//! `keygen`, `fingerprint`, `rotate-keys` and `identity prepare|promote`.

use super::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sessioncert keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// Directory to create the identity in (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `sessioncert fingerprint`.
#[derive(Args)]
pub struct FingerprintArgs {
    /// Data directory holding identity.key.
    #[arg(long, env = "SESSIONCERT_DATA", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// Print the pin of the next identity (made by `sessioncert identity prepare`).
    #[arg(long)]
    next: bool,
}

/// `sessioncert identity …`.
#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Make the next identity beside the current one (or find the one made before) and
    /// print its pin. Servers keep signing with the current identity; give clients both
    /// pins (`--pin CURRENT --pin NEXT`) before `promote`.
    Prepare(IdentityArgs),
    /// Make the next identity the current one. Every server sharing DIR signs with it
    /// within a minute; the old one is kept as identity.previous.key. Drop the old pin
    /// from clients afterwards.
    Promote(IdentityArgs),
}

/// Arguments of `sessioncert identity prepare|promote`.
#[derive(Args)]
pub struct IdentityArgs {
    /// Data directory holding identity.key (shared by every instance).
    #[arg(long, env = "SESSIONCERT_DATA", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
}

/// Runs `sessioncert identity …`.
pub fn identity(c: IdentityCommand) -> anyhow::Result<ExitCode> {
    use sessioncert_server::keys;
    match c {
        IdentityCommand::Prepare(a) => {
            let current = keys::fingerprint(&a.data)
                .with_context(|| format!("no identity in {}", a.data.display()))?;
            let (next, made) = keys::prepare_next_identity(&a.data).with_context(|| {
                format!("cannot make the next identity in {}", a.data.display())
            })?;
            println!("{next}");
            eprintln!(
                "{} next identity in {}. Servers still sign as {current}. Give clients both \
                 pins (--pin {current} --pin {next}), then run `sessioncert identity promote`.",
                if made { "new" } else { "the" },
                a.data.display()
            );
        }
        IdentityCommand::Promote(a) => {
            let (old, new) = keys::promote_next_identity(&a.data, sessioncert_server::now_ms())
                .with_context(|| {
                    format!("cannot promote the next identity in {}", a.data.display())
                })?;
            println!("{new}");
            eprintln!(
                "{} now holds identity {new}; running servers sharing it sign with it within a \
                 minute. The old identity {old} is kept as identity.previous.key; drop its pin \
                 from clients once none needs it.",
                a.data.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `sessioncert rotate-keys`.
#[derive(Args)]
pub struct RotateKeysArgs {
    /// Data directory holding identity.key and handshake.keys (shared by every instance).
    #[arg(long, env = "SESSIONCERT_DATA", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
}

/// Adds a handshake key to a data directory.
pub fn rotate_keys(a: RotateKeysArgs) -> anyhow::Result<ExitCode> {
    sessioncert_server::keys::fingerprint(&a.data)
        .with_context(|| format!("no identity in {}", a.data.display()))?;
    let (id, start) =
        sessioncert_server::keys::add_handshake_key(&a.data, sessioncert_server::now_ms())
            .with_context(|| format!("cannot add a handshake key in {}", a.data.display()))?;
    let wait = start
        .saturating_sub(sessioncert_server::now_ms())
        .div_ceil(1000);
    println!("{id}");
    eprintln!(
        "handshake key {id} added in {}; clients start using it in {wait} s, once every \
         running server has loaded it (each re-reads the key file every minute). The pin \
         does not change.",
        a.data.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates a new identity and prints its pin.
pub fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    let id = sessioncert_server::keys::create_identity(&a.out)
        .with_context(|| format!("cannot create an identity in {}", a.out.display()))?;
    println!("{}", id.pin());
    eprintln!(
        "new identity in {}; give clients the pin above (it is public)",
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints the pin of a data directory.
pub fn fingerprint(a: FingerprintArgs) -> anyhow::Result<ExitCode> {
    let pin = sessioncert_server::keys::fingerprint(&a.data)
        .with_context(|| format!("no identity in {}", a.data.display()))?;
    if a.next {
        match sessioncert_server::keys::next_fingerprint(&a.data)? {
            Some(next) => println!("{next}"),
            None => anyhow::bail!(
                "no next identity in {}; make one with `sessioncert identity prepare`",
                a.data.display()
            ),
        }
    } else {
        println!("{pin}");
    }
    Ok(ExitCode::SUCCESS)
}
