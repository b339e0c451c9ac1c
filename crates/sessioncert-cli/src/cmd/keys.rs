//! `keygen`, `fingerprint` and `rotate-keys`.

use super::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::Args;
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
    println!("{pin}");
    Ok(ExitCode::SUCCESS)
}
