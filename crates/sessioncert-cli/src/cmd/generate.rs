//! `sessioncert completions SHELL` and `sessioncert man`: generated from the CLI
//! definition itself, so they never drift from it.

use anyhow::Context;
use clap::{Args, CommandFactory};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `sessioncert completions`.
#[derive(Args)]
#[command(after_help = "Install, e.g.:
  bash: sessioncert completions bash > ~/.local/share/bash-completion/completions/sessioncert
  zsh:  sessioncert completions zsh > ~/.zfunc/_sessioncert   (with fpath+=~/.zfunc)
  fish: sessioncert completions fish > ~/.config/fish/completions/sessioncert.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Arguments of `sessioncert man`.
#[derive(Args)]
pub struct ManArgs {
    /// Write sessioncert.1 and one page per subcommand (sessioncert-serve.1, …) into DIR
    /// (created if missing) and print their paths, instead of the main page on stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Writes `bytes` to stdout in one piece (a closed pipe is an error, not a panic).
fn print(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `sessioncert completions SHELL`: the completion script on stdout.
pub fn completions(a: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "sessioncert", &mut script);
    print(&script)
}

/// `sessioncert man [--out DIR]`.
pub fn man(a: ManArgs) -> anyhow::Result<ExitCode> {
    // Built, so subcommands carry their full names (`sessioncert-sessions-list`).
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    match a.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            print(&page)
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut written = Vec::new();
            write_pages(&cmd, &dir, &mut written)?;
            let list: String = written
                .iter()
                .map(|p| format!("{}\n", p.display()))
                .collect();
            print(list.as_bytes())
        }
    }
}

/// Writes the page of `cmd` and of each of its subcommands, depth first.
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let path = clap_mangen::Man::new(cmd.clone())
        .generate_to(dir)
        .with_context(|| format!("cannot write a manual page into {}", dir.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
