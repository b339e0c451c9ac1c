//! `serve --config FILE` and `gateway --config FILE`: settings from a TOML file whose
//! keys are the command's long flag names (`max-body = "4MiB"`; `max_body` works too).
//! The gateway's own settings (those under the "Gateway" heading of its `--help`) go in
//! a `[gateway]` table; the settings it shares with `serve` at the top, as for `serve`.
//!
//! Precedence: command line, then environment variables, then the file, then the
//! built-in defaults. Each value in the file becomes its argument's default before the
//! real parse, so clap itself applies that order and every value goes through the flag's
//! own value parser: validation is identical, and a flag added to either command is
//! covered without any code here.

use anyhow::{anyhow, Context};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, ColorChoice, Command};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The subcommands that take a configuration file, by their path of names.
const COMMANDS: [&[&str]; 3] = [&["serve"], &["gateway"], &["broker", "serve"]];
/// The id of their argument naming the file (`--config`, `SESSIONCERT_CONFIG`).
const CONFIG: &str = "config";
/// The `--help` heading of the gateway's own settings, which a file sets in the
/// [`GATEWAY_TABLE`] table.
pub const GATEWAY_HEADING: &str = "Gateway";
/// The file's table for the gateway's own settings.
const GATEWAY_TABLE: &str = "gateway";

/// The command line as parsed, with the configuration file's settings applied.
pub struct Parsed {
    /// What clap made of it all.
    pub matches: ArgMatches,
    /// The subcommand that takes a file, as defined (for the order of its arguments).
    command: Option<Command>,
    /// Its path of names (`["broker", "serve"]`).
    path: &'static [&'static str],
    /// Ids of its arguments whose default the file supplied.
    from_file: Vec<String>,
}

/// One setting read from the file.
struct Setting {
    id: String,
    values: Vec<String>,
}

/// Parses `argv` against `cmd`; for `serve` and `gateway` with `--config FILE` (or
/// `SESSIONCERT_CONFIG`), the file's settings sit below flags and environment variables.
///
/// A usage error is returned as a [`clap::Error`] (for `exit()`); a bad file as any
/// other error, naming the file and the setting.
pub fn parse(cmd: Command, argv: Vec<OsString>) -> anyhow::Result<Parsed> {
    let first = cmd.clone().try_get_matches_from(&argv)?;
    let found = COMMANDS
        .iter()
        .find_map(|p| leaf_matches(&first, p).map(|m| (*p, m)));
    let Some((names, m)) = found else {
        return Ok(Parsed {
            matches: first,
            command: None,
            path: &[],
            from_file: Vec::new(),
        });
    };
    let file = m.try_get_one::<PathBuf>(CONFIG).ok().flatten().cloned();
    let sub = leaf_command(&cmd, names).context("no such command")?;
    let Some(file) = file else {
        return Ok(Parsed {
            matches: first,
            command: Some(sub),
            path: names,
            from_file: Vec::new(),
        });
    };
    let settings = read_file(&sub, &file)?;
    let mut with_file = sub.clone();
    for s in &settings {
        with_file = with_file.mut_arg(s.id.as_str(), |a| a.default_values(s.values.clone()));
    }
    let matches = replace_leaf(cmd, names, with_file).try_get_matches_from(&argv)?;
    Ok(Parsed {
        matches,
        command: Some(sub),
        path: names,
        from_file: settings.into_iter().map(|s| s.id).collect(),
    })
}

/// The matches of the subcommand at `path`, if that is the one given.
fn leaf_matches<'a>(m: &'a ArgMatches, path: &[&str]) -> Option<&'a ArgMatches> {
    path.iter()
        .try_fold(m, |m, name| m.subcommand_matches(name))
}

/// The subcommand at `path`.
fn leaf_command(cmd: &Command, path: &[&str]) -> Option<Command> {
    let mut c = cmd.clone();
    for name in path {
        c = c.find_subcommand(name)?.clone();
    }
    Some(c)
}

/// `cmd` with the subcommand at `path` replaced by `leaf`.
fn replace_leaf(cmd: Command, path: &[&str], leaf: Command) -> Command {
    match path {
        [] => leaf,
        [name, rest @ ..] => cmd.mut_subcommand(name, |c| replace_leaf(c, rest, leaf)),
    }
}

impl Parsed {
    /// One line of the command's effective settings, in the order of its `--help`, each
    /// tagged with where it came from unless it is the built-in default:
    /// `addr=127.0.0.1:8093 [flag], …, max-body=2KiB [file], idle-timeout=30m, …`.
    /// Values of arguments marked `hide_env_values` (the mark for secrets) are not shown,
    /// and no URL shows its password.
    pub fn settings(&self) -> String {
        let Some(command) = &self.command else {
            return String::new();
        };
        let Some(m) = leaf_matches(&self.matches, self.path) else {
            return String::new();
        };
        let mut out = Vec::new();
        for arg in command.get_arguments().filter(|a| is_setting(a)) {
            let id = arg.get_id().as_str();
            let Ok(Some(raw)) = m.try_get_raw(id) else {
                continue;
            };
            let value = if arg.is_hide_env_values_set() {
                "(hidden)".to_owned()
            } else {
                quote(
                    &raw.map(|v| crate::cmd::server::redact_url(&v.to_string_lossy()))
                        .collect::<Vec<_>>()
                        .join(","),
                )
            };
            let source = match m.value_source(id) {
                Some(ValueSource::CommandLine) => " [flag]",
                Some(ValueSource::EnvVariable) => " [env]",
                Some(ValueSource::DefaultValue) if self.from_file.iter().any(|f| f == id) => {
                    " [file]"
                }
                _ => "",
            };
            out.push(format!("{}={value}{source}", setting_name(arg)));
        }
        out.join(", ")
    }
}

/// A value as it appears in the settings line: quoted when it would be ambiguous.
fn quote(v: &str) -> String {
    if v.is_empty() || v.contains(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | '"')) {
        format!("{v:?}")
    } else {
        v.to_owned()
    }
}

/// Whether a file may set `arg`: every argument but help, version and `--config`.
fn is_setting(arg: &Arg) -> bool {
    !matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    ) && arg.get_id() != CONFIG
}

/// Whether `arg` is one of the gateway's own settings (set in the `[gateway]` table).
fn in_gateway_table(arg: &Arg) -> bool {
    arg.get_help_heading() == Some(GATEWAY_HEADING)
}

/// The key naming `arg` in a file: its long flag name (its id for a positional).
fn setting_name(arg: &Arg) -> &str {
    arg.get_long().unwrap_or(arg.get_id().as_str())
}

/// Reads and checks the file: every key a setting of `command` in its place (the top,
/// or the `[gateway]` table), every value one its flag accepts.
fn read_file(command: &Command, path: &Path) -> anyhow::Result<Vec<Setting>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{column}")
            })
            .unwrap_or_default();
        anyhow!(
            "configuration file {}{at}: {}",
            path.display(),
            e.message().trim()
        )
    })?;
    let has_table = command.get_arguments().any(in_gateway_table);
    let mut entries: Vec<(String, &toml::Value, bool)> = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(inner) if key == GATEWAY_TABLE && has_table => {
                for (k, v) in inner {
                    entries.push((format!("{GATEWAY_TABLE}.{k}"), v, true));
                }
            }
            toml::Value::Table(_) if key == GATEWAY_TABLE => {
                return Err(anyhow!(
                    "configuration file {}: [{GATEWAY_TABLE}]: the settings of `sessioncert gateway`; `sessioncert {}` has none",
                    path.display(),
                    command.get_name()
                ));
            }
            _ => entries.push((key.clone(), value, false)),
        }
    }
    let mut by_id: BTreeMap<String, (String, Setting)> = BTreeMap::new();
    for (key, value, in_table) in entries {
        let fail = |msg: String| anyhow!("configuration file {}: {key}: {msg}", path.display());
        let bare = key.rsplit('.').next().unwrap_or(&key);
        let arg = find_setting(command, bare, in_table).map_err(fail)?;
        let values = values_of(arg, value).map_err(fail)?;
        check_values(arg, &values).map_err(fail)?;
        let id = arg.get_id().as_str().to_owned();
        if let Some((first, _)) = by_id.get(&id) {
            return Err(fail(format!("set twice (also as {first})")));
        }
        by_id.insert(id.clone(), (key.clone(), Setting { id, values }));
    }
    Ok(by_id.into_values().map(|(_, s)| s).collect())
}

/// The argument of `command` a key names (in the `[gateway]` table when `in_table`), or
/// why there is none.
fn find_setting<'a>(command: &'a Command, key: &str, in_table: bool) -> Result<&'a Arg, String> {
    if key.replace('_', "-") == CONFIG {
        return Err("the configuration file cannot name another one (--config is a flag or SESSIONCERT_CONFIG only)".into());
    }
    let name = key.replace('_', "-");
    let settings = || command.get_arguments().filter(|a| is_setting(a));
    if let Some(arg) = settings().find(|a| setting_name(a) == name) {
        return match (in_gateway_table(arg), in_table) {
            (true, true) | (false, false) => Ok(arg),
            (true, false) => Err(format!(
                "a setting of the gateway's own: put it in the [{GATEWAY_TABLE}] table"
            )),
            (false, true) => Err(format!(
                "not one of the gateway's own settings: put it at the top of the file, above [{GATEWAY_TABLE}]"
            )),
        };
    }
    let closest = settings()
        .filter(|a| in_gateway_table(a) == in_table)
        .map(|a| (strsim::jaro(&name, setting_name(a)), setting_name(a)))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Err(match closest {
        Some((_, known)) => format!("unknown setting (did you mean {known}?)"),
        None => format!(
            "unknown setting (the keys are the long flags of `sessioncert {} --help`)",
            command.get_name()
        ),
    })
}

/// The TOML value as the strings clap would get on a command line.
fn values_of(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    use toml::Value;
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string or a number, not a {}",
            other.type_str()
        )),
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue | ArgAction::SetFalse, Value::Boolean(b)) => Ok(vec![b.to_string()]),
        (ArgAction::SetTrue | ArgAction::SetFalse, other) => Err(format!(
            "expected true or false, not a {}",
            other.type_str()
        )),
        (ArgAction::Count, Value::Integer(n)) if *n >= 0 => Ok(vec![n.to_string()]),
        (ArgAction::Count, _) => Err("expected a count: 0, 1, 2, …".into()),
        (ArgAction::Append, Value::Array(items)) => items.iter().map(scalar).collect(),
        (_, Value::Array(_)) => Err("takes one value, not a list".into()),
        (_, v) => Ok(vec![scalar(v)?]),
    }
}

/// Runs `values` through `arg`'s own value parser (on a one-argument command, so the
/// other arguments' environment variables play no part), returning clap's message.
fn check_values(arg: &Arg, values: &[String]) -> Result<(), String> {
    if !arg.get_action().takes_values() {
        return Ok(()); // a flag: its type was the whole check
    }
    let long = setting_name(arg).to_owned();
    let mut probe = Arg::new(arg.get_id().clone())
        .long(long.clone())
        .action(ArgAction::Append)
        .value_parser(arg.get_value_parser().clone())
        .allow_hyphen_values(true);
    if let Some(d) = arg.get_value_delimiter() {
        probe = probe.value_delimiter(d);
    }
    if let Some(names) = arg.get_value_names() {
        probe = probe.value_names(names.iter().cloned());
    }
    let tokens = values.iter().flat_map(|v| [format!("--{long}"), v.clone()]);
    Command::new("settings")
        .no_binary_name(true)
        .color(ColorChoice::Never)
        .arg(probe)
        .try_get_matches_from(tokens)
        .map(drop)
        .map_err(|e| {
            // "error: invalid value 'x' for '--max-body <MAX_BODY>': …" and maybe the
            // possible values, without the "try --help" tail.
            let text = e.render().to_string();
            let head = text.split("\n\n").next().unwrap_or_default();
            head.trim()
                .trim_start_matches("error: ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVE: &str = "serve";
    const GATEWAY: &str = "gateway";
    use clap::CommandFactory as _;
    use std::any::TypeId;
    use std::time::Duration;

    /// The real CLI without its environment variables, so a `SESSIONCERT_*` variable in
    /// the test's environment cannot change what is parsed.
    fn cli_without_env() -> Command {
        fn strip(c: Command) -> Command {
            let subs: Vec<String> = c
                .get_subcommands()
                .map(|s| s.get_name().to_owned())
                .collect();
            let mut c = c.mut_args(|a| a.env(None));
            for name in subs {
                c = c.mut_subcommand(name, strip);
            }
            c
        }
        strip(crate::Cli::command())
    }

    fn parse_with_file(toml: &str, extra: &[&str]) -> anyhow::Result<Parsed> {
        parse_command_with_file(SERVE, toml, extra)
    }

    fn parse_command_with_file(
        command: &str,
        toml: &str,
        extra: &[&str],
    ) -> anyhow::Result<Parsed> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("serve.toml");
        std::fs::write(&file, toml).unwrap();
        let mut argv: Vec<OsString> = vec!["sessioncert".into(), command.into()];
        argv.extend(["--config".into(), file.into_os_string()]);
        argv.extend(extra.iter().map(OsString::from));
        parse(cli_without_env(), argv)
    }

    /// A value for each `serve` setting that differs from its default. A new flag
    /// without an entry here fails `every_serve_setting_can_come_from_the_file`: add one.
    const SAMPLES: &[(&str, &str)] = &[
        ("addr", r#""127.0.0.1:8093""#),
        ("data", r#""/srv/sessioncert""#),
        ("memory", "true"),
        ("store", r#""sqlite:/srv/sessioncert/other.db""#),
        ("session-lifetime", r#""12h""#),
        ("idle-timeout", r#""5m""#),
        ("suites", r#""chacha20-poly1305""#),
        ("max-body", r#""2MiB""#),
        ("max-stream-body", r#""none""#),
        ("max-response", r#""8MiB""#),
        ("max-inflight-response", r#""64MiB""#),
        ("handshake-rate", "5.5"),
        ("handshake-burst", "10"),
        ("max-sessions-per-addr", "16"),
        ("max-sessions", "1000"),
        ("limit-loopback", "true"),
        ("max-connections", "100"),
        ("max-connections-per-addr", "8"),
        ("header-timeout", r#""5s""#),
        ("body-timeout", r#""20s""#),
        ("body-min-rate", "1024"),
        ("max-inflight-body", r#""32MiB""#),
        ("max-inflight-body-per-addr", r#""8MiB""#),
        ("body-budget-wait", r#""1s""#),
        ("conn-idle-timeout", r#""30s""#),
        ("write-stall-timeout", r#""20s""#),
        ("max-header-bytes", r#""32KiB""#),
        ("http2", "true"),
        ("http2-max-streams", "8"),
        (
            "public-origin",
            r#"["https://a.example", "https://b.example"]"#,
        ),
        (
            "cors-origin",
            r#"["https://app.example", "http://localhost:3000"]"#,
        ),
        ("log-format", r#""json""#),
        ("tls-cert", r#""/etc/sessioncert/cert.pem""#),
        ("tls-key", r#""/etc/sessioncert/key.pem""#),
        ("admin-addr", r#""127.0.0.1:9090""#),
        ("legacy-session-cert", "true"),
        ("legacy-rsa-bits", "3072"),
        ("legacy-max-requests", "500"),
        ("legacy-max-sessions", "1000"),
    ];

    /// The raw value `SAMPLES` expects clap to hold for a setting.
    fn expected_raw(sample: &str) -> String {
        let v: toml::Value = format!("v = {sample}").parse::<toml::Table>().unwrap()["v"].clone();
        match v {
            toml::Value::String(s) => s,
            toml::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        }
    }

    /// Every argument of `serve` (enumerated from the clap command, so a new flag is
    /// included the day it is added) can be set from the file, and the file's value is
    /// what the parse yields.
    #[test]
    fn every_serve_setting_can_come_from_the_file() {
        let cli = crate::Cli::command();
        let serve = cli.find_subcommand(SERVE).unwrap();
        let names: Vec<&str> = serve
            .get_arguments()
            .filter(|a| is_setting(a))
            .map(setting_name)
            .collect();
        let missing: Vec<_> = names
            .iter()
            .filter(|n| !SAMPLES.iter().any(|(k, _)| k == *n))
            .collect();
        assert!(missing.is_empty(), "add samples for {missing:?}");
        let toml: String = SAMPLES
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let parsed = parse_with_file(&toml, &[]).unwrap();
        let m = parsed.matches.subcommand_matches(SERVE).unwrap();
        for (key, sample) in SAMPLES {
            let arg = serve
                .get_arguments()
                .find(|a| setting_name(a) == *key)
                .unwrap_or_else(|| panic!("sample for {key}, which serve does not have"));
            let id = arg.get_id().as_str();
            let raw: Vec<String> = m
                .get_raw(id)
                .unwrap()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(raw.join(","), expected_raw(sample), "{key}");
            assert_ne!(
                arg.get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(","),
                expected_raw(sample),
                "{key}: the sample is the default, so it proves nothing"
            );
            assert_eq!(m.value_source(id), Some(ValueSource::DefaultValue), "{key}");
        }
        let line = parsed.settings();
        assert!(line.contains("max-body=2MiB [file]"), "{line}");
        assert!(
            line.contains("public-origin=\"https://a.example,https://b.example\" [file]"),
            "{line}"
        );
        assert!(!line.contains("config="), "{line}");
    }

    /// The file's values reach the typed arguments `serve` runs with, below flags.
    #[test]
    fn file_values_reach_the_typed_arguments_below_flags() {
        use clap::FromArgMatches as _;
        let p = parse_with_file(
            "max_body = \"2KiB\"\nidle-timeout = \"5m\"\nlimit-loopback = true\nmax-response = \"2KiB\"\n",
            &["--max-response", "3KiB"],
        )
        .unwrap();
        assert!(crate::Cli::from_arg_matches(&p.matches).is_ok());
        let m = p.matches.subcommand_matches(SERVE).unwrap();
        assert_eq!(m.get_one::<usize>("max_body"), Some(&2048));
        assert_eq!(
            m.get_one::<Duration>("idle_timeout"),
            Some(&Duration::from_secs(300))
        );
        assert!(m.get_flag("limit_loopback"));
        assert_eq!(m.get_one::<usize>("max_response"), Some(&3072));
        assert_eq!(
            m.value_source("max_response"),
            Some(ValueSource::CommandLine)
        );
        let line = p.settings();
        assert!(line.contains("max-response=3KiB [flag]"), "{line}");
        assert!(line.contains("idle-timeout=5m [file]"), "{line}");
        assert!(line.contains("session-lifetime=24h,"), "{line}");
    }

    fn file_error(toml: &str) -> String {
        match parse_with_file(toml, &[]) {
            Ok(_) => panic!("accepted: {toml}"),
            Err(e) => {
                assert!(e.downcast_ref::<clap::Error>().is_none(), "{e}");
                format!("{e:#}")
            }
        }
    }

    #[test]
    fn bad_files_are_refused_naming_file_and_setting() {
        let e = file_error("max-bdy = \"4MiB\"\n");
        assert!(
            e.contains("serve.toml: max-bdy: unknown setting (did you mean max-body?)"),
            "{e}"
        );
        let e = file_error("colour = true\n");
        assert!(e.contains("colour: unknown setting (the keys are"), "{e}");
        let e = file_error("max-body = \"4XB\"\n");
        assert!(
            e.contains("serve.toml: max-body: invalid value '4XB' for '--max-body"),
            "{e}"
        );
        assert!(e.contains("unknown unit"), "{e}");
        let e = file_error("idle-timeout = \"-5s\"\n");
        assert!(
            e.contains("idle-timeout: ") && e.contains("negative durations are not allowed"),
            "{e}"
        );
        let e = file_error("log-format = \"xml\"\n");
        assert!(
            e.contains("log-format: invalid value 'xml'") && e.contains("json"),
            "{e}"
        );
        let e = file_error("memory = \"yes\"\n");
        assert!(
            e.contains("memory: expected true or false, not a string"),
            "{e}"
        );
        let e = file_error("max-body = [\"1KiB\", \"2KiB\"]\n");
        assert!(e.contains("max-body: takes one value, not a list"), "{e}");
        let e = file_error("[serve]\nmax-body = \"1KiB\"\n");
        assert!(e.contains("serve: unknown setting"), "{e}");
        let e = file_error("max-body = \"2KiB\"\nmax_body = \"3KiB\"\n");
        assert!(e.contains("set twice"), "{e}");
        let e = file_error("config = \"other.toml\"\n");
        assert!(
            e.contains("config: the configuration file cannot name another one"),
            "{e}"
        );
        let e = file_error("addr = \n");
        assert!(e.contains("serve.toml:1:"), "{e}");
    }

    /// The gateway's own settings, one sample each (differing from the default).
    const GATEWAY_SAMPLES: &[(&str, &str)] = &[
        ("upstream", r#""http://127.0.0.1:9000/api""#),
        ("plain", r#"["/health", "/assets"]"#),
        ("refuse", r#"["/admin"]"#),
        ("upstream-timeout", r#""5s""#),
        ("upstream-max-idle", "16"),
        ("upstream-idle-timeout", r#""2s""#),
    ];

    /// Every argument of `gateway` can come from the file: its own in `[gateway]`, the
    /// ones it shares with `serve` (all of serve's) at the top.
    #[test]
    fn every_gateway_setting_can_come_from_the_file() {
        let cli = crate::Cli::command();
        let gateway = cli.find_subcommand(GATEWAY).unwrap();
        let serve = cli.find_subcommand(SERVE).unwrap();
        let mut top = String::new();
        let mut table = String::from("[gateway]\n");
        let mut expected: Vec<(&str, &str)> = Vec::new();
        for arg in gateway.get_arguments().filter(|a| is_setting(a)) {
            let name = setting_name(arg);
            if in_gateway_table(arg) {
                let (_, v) = GATEWAY_SAMPLES
                    .iter()
                    .find(|(k, _)| *k == name)
                    .unwrap_or_else(|| panic!("add a gateway sample for {name}"));
                table.push_str(&format!("{name} = {v}\n"));
                expected.push((name, v));
            } else {
                assert!(
                    serve.get_arguments().any(|a| setting_name(a) == name),
                    "{name}: a gateway setting at the top must be one serve has too, or carry the Gateway heading"
                );
                let v = if name == "addr" {
                    r#""127.0.0.1:9443""#
                } else {
                    SAMPLES.iter().find(|(k, _)| *k == name).unwrap().1
                };
                top.push_str(&format!("{name} = {v}\n"));
                expected.push((name, v));
            }
        }
        assert_eq!(table.lines().count(), GATEWAY_SAMPLES.len() + 1);
        let parsed = parse_command_with_file(GATEWAY, &format!("{top}{table}"), &[]).unwrap();
        assert!(<crate::Cli as clap::FromArgMatches>::from_arg_matches(&parsed.matches).is_ok());
        let m = parsed.matches.subcommand_matches(GATEWAY).unwrap();
        for (name, sample) in expected {
            let arg = gateway
                .get_arguments()
                .find(|a| setting_name(a) == name)
                .unwrap();
            let raw: Vec<String> = m
                .get_raw(arg.get_id().as_str())
                .unwrap()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(raw.join(","), expected_raw(sample), "{name}");
            assert_eq!(
                m.value_source(arg.get_id().as_str()),
                Some(ValueSource::DefaultValue),
                "{name}"
            );
        }
        let line = parsed.settings();
        assert!(
            line.contains("upstream=http://127.0.0.1:9000/api [file]"),
            "{line}"
        );
        assert!(line.contains("plain=\"/health,/assets\" [file]"), "{line}");
        assert!(line.contains("addr=127.0.0.1:9443 [file]"), "{line}");
    }

    #[test]
    fn gateway_settings_must_be_in_their_place() {
        let err = |command: &str, toml: &str| match parse_command_with_file(command, toml, &[]) {
            Ok(_) => panic!("accepted: {toml}"),
            Err(e) => format!("{e:#}"),
        };
        let e = err(GATEWAY, "upstream = \"http://127.0.0.1:9000\"\n");
        assert!(
            e.contains("upstream: a setting of the gateway's own: put it in the [gateway] table"),
            "{e}"
        );
        let e = err(GATEWAY, "[gateway]\nmax-body = \"1MiB\"\n");
        assert!(
            e.contains("gateway.max-body: not one of the gateway's own settings"),
            "{e}"
        );
        let e = err(GATEWAY, "[gateway]\nupstrem = \"http://a:1\"\n");
        assert!(
            e.contains("gateway.upstrem: unknown setting (did you mean upstream?)"),
            "{e}"
        );
        let e = err(GATEWAY, "[gateway]\nupstream = \"https://a:1\"\n");
        assert!(e.contains("gateway.upstream: invalid value"), "{e}");
        let e = err(SERVE, "[gateway]\nupstream = \"http://a:1\"\n");
        assert!(
            e.contains(
                "[gateway]: the settings of `sessioncert gateway`; `sessioncert serve` has none"
            ),
            "{e}"
        );
        // Flags still win over the file.
        let p = parse_command_with_file(
            GATEWAY,
            "[gateway]\nupstream-timeout = \"5s\"\n",
            &["--upstream-timeout", "7s"],
        )
        .unwrap();
        assert!(p.settings().contains("upstream-timeout=7s [flag]"));
    }

    /// No password of a store URL reaches the settings line.
    #[test]
    fn the_settings_line_hides_passwords() {
        let p = parse_with_file(
            "store = \"redis://app:hunter2@cache:6379/?prefix=x\"\n",
            &[],
        )
        .unwrap();
        let line = p.settings();
        assert!(
            line.contains("store=redis://app:***@cache:6379/?prefix=x [file]"),
            "{line}"
        );
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let argv: Vec<OsString> = ["sessioncert", "serve", "--config", "/no/such/serve.toml"]
            .iter()
            .map(OsString::from)
            .collect();
        let e = format!("{:#}", parse(cli_without_env(), argv).err().unwrap());
        assert!(
            e.starts_with("cannot read configuration file /no/such/serve.toml: "),
            "{e}"
        );
    }

    /// The types whose arguments must take hyphen-leading values, so that `-5` reaches
    /// their parser (which says "negative … not allowed") instead of clap's tokenizer
    /// ("unexpected argument").
    fn is_numeric(arg: &Arg) -> bool {
        let t = arg.get_value_parser().type_id();
        [
            TypeId::of::<Duration>(),
            TypeId::of::<usize>(),
            TypeId::of::<u64>(),
            TypeId::of::<u32>(),
            TypeId::of::<u16>(),
            TypeId::of::<u8>(),
            TypeId::of::<f64>(),
        ]
        .iter()
        .any(|id| t == *id)
    }

    fn all_commands(c: &Command) -> Vec<Command> {
        let mut out = vec![c.clone()];
        for s in c.get_subcommands() {
            out.extend(all_commands(s));
        }
        out
    }

    /// Every duration, size and number argument of every command (found by its value
    /// type, so new ones are included) refuses a negative value saying so.
    #[test]
    fn every_numeric_argument_refuses_negative_values_by_name() {
        let mut checked = 0;
        for c in all_commands(&cli_without_env()) {
            for arg in c.get_arguments().filter(|a| is_numeric(a)) {
                let long = arg.get_long().expect("numeric positional");
                assert!(
                    arg.is_allow_hyphen_values_set(),
                    "{} --{long}: set allow_hyphen_values",
                    c.get_name()
                );
                let e =
                    check_values(arg, &["-5".into()]).expect_err(&format!("--{long} -5 accepted"));
                assert!(
                    e.contains(&format!("--{long}")) && e.contains("negative"),
                    "--{long} -5: {e}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 25, "only {checked} numeric arguments found");
    }

    /// `broker serve --config FILE`: the file sets the shared server settings and the
    /// broker's own, below flags; the settings line names them.
    #[test]
    fn broker_serve_reads_its_configuration_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "outbox = \"/srv/mail\"\nmax-stream-body = \"2GiB\"\nshare-max-expiry = \"7d\"\nidle-timeout = \"5m\"\n",
        )
        .unwrap();
        let argv: Vec<OsString> = [
            "sessioncert",
            "broker",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--idle-timeout",
            "9m",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let p = parse(cli_without_env(), argv).unwrap();
        let m = p
            .matches
            .subcommand_matches("broker")
            .and_then(|m| m.subcommand_matches("serve"))
            .unwrap();
        assert_eq!(
            m.get_one::<PathBuf>("outbox").unwrap(),
            Path::new("/srv/mail")
        );
        assert_eq!(
            m.get_one::<Duration>("share_max_expiry").unwrap(),
            &Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            m.get_one::<Duration>("idle_timeout").unwrap(),
            &Duration::from_secs(540)
        );
        let line = p.settings();
        assert!(line.contains("outbox=/srv/mail [file]"), "{line}");
        assert!(line.contains("idle-timeout=9m [flag]"), "{line}");
        // An unknown key is refused, naming the file.
        std::fs::write(&file, "outbx = \"/srv/mail\"\n").unwrap();
        let argv: Vec<OsString> = [
            "sessioncert",
            "broker",
            "serve",
            "--config",
            file.to_str().unwrap(),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let e = parse(cli_without_env(), argv).err().unwrap().to_string();
        assert!(e.contains("outbx") && e.contains("outbox"), "{e}");
    }
}
