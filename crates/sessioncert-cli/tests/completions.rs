//! `sessioncert completions SHELL` and `sessioncert man`, checked against the
//! subcommands `sessioncert --help` lists (so a new subcommand is checked too).

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sessioncert");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cannot run sessioncert")
}

fn stdout_of(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {o:?}");
    String::from_utf8(o.stdout).expect("utf-8 output")
}

/// The subcommands of `sessioncert` (or of `sessioncert PARENT`), from its help.
fn subcommands(parent: &[&str]) -> Vec<String> {
    let mut args = parent.to_vec();
    args.push("--help");
    let help = stdout_of(&args);
    let Some(section) = help.split("\nCommands:\n").nth(1) else {
        return Vec::new();
    };
    section
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_knows_every_subcommand_and_loads_in_bash() {
    let subs = subcommands(&[]);
    assert!(
        subs.len() >= 8 && subs.contains(&"man".to_owned()),
        "{subs:?}"
    );
    let script = stdout_of(&["completions", "bash"]);
    for sub in subs.iter().chain(subcommands(&["sessions"]).iter()) {
        assert!(script.contains(sub.as_str()), "bash completion lacks {sub}");
    }
    assert!(script.contains("--max-body"), "serve's flags are completed");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessioncert.bash");
    std::fs::write(&file, &script).unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg("set -e; source \"$1\"; complete -p sessioncert")
        .arg("bash")
        .arg(&file)
        .output()
        .expect("cannot run bash");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "sourcing failed: {o:?}");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.starts_with("complete ") && out.trim_end().ends_with(" sessioncert"),
        "{out}"
    );
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_refused() {
    let subs = subcommands(&[]);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        for sub in &subs {
            assert!(
                script.contains(sub.as_str()),
                "{shell} completion lacks {sub}"
            );
        }
    }
    let o = run(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("possible values"),
        "{o:?}"
    );
}

#[test]
fn man_prints_the_main_page_and_writes_one_per_command() {
    let page = stdout_of(&["man"]);
    assert!(
        page.contains("\n.TH sessioncert 1 "),
        "not a roff man page: {page}"
    );
    assert!(
        page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"),
        "{page}"
    );
    let subs = subcommands(&[]);
    for sub in &subs {
        // roff escapes every hyphen: sessioncert\-rotate\-keys(1)
        assert!(
            page.contains(&format!("sessioncert\\-{}(1)", sub.replace('-', "\\-"))),
            "main page lacks {sub}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let listed = stdout_of(&["man", "--out", out.to_str().unwrap()]);
    // One page per command at every depth (`broker tenant create` included).
    fn pages(path: &[&str], out: &mut Vec<String>) {
        for sub in subcommands(path) {
            let mut p = path.to_vec();
            p.push(&sub);
            out.push(format!("sessioncert-{}", p.join("-")));
            pages(&p, out);
        }
    }
    let mut expected = vec!["sessioncert".to_owned()];
    pages(&[], &mut expected);
    assert!(expected
        .iter()
        .any(|p| p == "sessioncert-broker-tenant-create"));
    for name in &expected {
        let path = out.join(format!("{name}.1"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; listed:\n{listed}", path.display()));
        assert!(
            text.contains(&format!(".TH {name} 1 ")),
            "{name}.1 is not its page"
        );
        assert!(listed.contains(path.to_str().unwrap()), "{listed}");
    }
    let serve = std::fs::read_to_string(out.join("sessioncert-serve.1")).unwrap();
    assert!(
        serve.contains("SESSIONCERT_MAX_BODY") && serve.contains("Precedence"),
        "the serve page documents variables and precedence"
    );
    assert_eq!(listed.lines().count(), expected.len(), "{listed}");
}
