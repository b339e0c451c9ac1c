//! `keygen` and `fingerprint`.

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
