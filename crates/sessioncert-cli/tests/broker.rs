//! `sessioncert broker …` end to end through the binary: a tenant, `broker serve`, and
//! the client commands as a user runs them — on the embedded default (SQLite, a local
//! directory, the .eml outbox) and on PostgreSQL with S3-compatible storage (moto).

mod common;

#[path = "../../sessioncert-broker-server/tests/support/moto.rs"]
mod moto;

use common::{accepts, free_port, sc};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

struct Broker {
    child: Child,
    url: String,
    pin: String,
    outbox: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> Output {
    sc().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "sessioncert {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or_default().trim().to_owned()
}

fn start(data: &Path, outbox: &Path, extra: &[&str], env: &[(&str, String)]) -> Broker {
    ok(&[
        "broker",
        "tenant",
        "create",
        "acme",
        "--data",
        data.to_str().unwrap(),
    ]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut c = sc();
    c.args([
        "broker",
        "serve",
        "--addr",
        &addr,
        "--data",
        data.to_str().unwrap(),
    ])
    .args(["--outbox", outbox.to_str().unwrap()])
    .args(extra)
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(data.with_extension("log")).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    let mut b = Broker {
        child,
        url: format!("http://{addr}"),
        pin: String::new(),
        outbox: outbox.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !accepts(port) {
        if let Some(status) = b.child.try_wait().unwrap() {
            panic!(
                "broker serve exited ({status}): {}",
                std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "broker serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.pin = last_line(&ok(&["fingerprint", "--data", data.to_str().unwrap()]));
    b
}

/// The value of `label` in the newest mail to `to` that has one.
fn mailed(outbox: &Path, to: &str, label: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut mails: Vec<PathBuf> = std::fs::read_dir(outbox)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        mails.sort();
        for m in mails.iter().rev() {
            let text = std::fs::read_to_string(m).unwrap_or_default();
            if !text.lines().any(|l| l.starts_with("To:") && l.contains(to)) {
                continue;
            }
            if let Some(v) = text.lines().find_map(|l| l.strip_prefix(label)) {
                return v.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no {label:?} mailed to {to}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Registers, verifies and logs in; returns the profile path.
fn account(b: &Broker, dir: &Path, email: &str, passphrase: bool) -> PathBuf {
    let profile = dir.join(format!("{email}.profile"));
    let pw = dir.join("pw");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    let pass = dir.join("passphrase");
    std::fs::write(&pass, "profile passphrase").unwrap();
    let mut args = vec![
        "broker",
        "register",
        "--url",
        &b.url,
        "--pin",
        &b.pin,
        "--tenant",
        "acme",
        "--email",
        email,
        "--password-file",
        pw.to_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
    ];
    if passphrase {
        args.extend(["--passphrase-file", pass.to_str().unwrap()]);
    }
    ok(&args);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&profile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the profile holds the key share");
    }
    let code = mailed(&b.outbox, email, "Verification code:");
    // With the passphrase user, the code comes from a file (kept out of the process
    // list); the others give it on the command line.
    let code_file = dir.join(format!("{email}.code"));
    std::fs::write(&code_file, format!("{code}\n")).unwrap();
    let verify: Vec<&str> = if passphrase {
        vec!["--code-file", code_file.to_str().unwrap()]
    } else {
        vec!["--code", &code]
    };
    ok(&[
        &["broker", "verify", "--profile", profile.to_str().unwrap()][..],
        &verify,
    ]
    .concat());
    // Verified: the profile no longer holds a registration key, and a second verify
    // says so.
    let text = std::fs::read_to_string(&profile).unwrap();
    assert!(!text.contains("\"registration\""), "{text}");
    let o = run(&[
        &["broker", "verify", "--profile", profile.to_str().unwrap()][..],
        &verify,
    ]
    .concat());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no registration to verify"));
    let mut login = vec![
        "broker",
        "login",
        "--profile",
        profile.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ];
    if passphrase {
        // Without the passphrase the sealed share cannot be used.
        let o = run(&login);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("--passphrase-file"));
        login.extend(["--passphrase-file", pass.to_str().unwrap()]);
    }
    ok(&login);
    profile
}

fn flow(b: &Broker, dir: &Path) {
    let alice = account(b, dir, "alice@example.test", false);
    let bob = account(b, dir, "bob@example.test", true);
    let a = alice.to_str().unwrap();
    let doc = dir.join("doc.bin");
    let content: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i.wrapping_mul(2654435761)).to_be_bytes())
        .collect();
    std::fs::write(&doc, &content).unwrap();
    let id = last_line(&ok(&[
        "broker",
        "upload",
        "--profile",
        a,
        doc.to_str().unwrap(),
    ]));
    assert_eq!(id.len(), 26, "{id}");
    assert!(ok(&["broker", "ls", "--profile", a]).contains("doc.bin"));
    let back = dir.join("back.bin");
    ok(&[
        "broker",
        "download",
        "--profile",
        a,
        &id,
        "-o",
        back.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&back).unwrap() == content);
    // Bob cannot read alice's file; nothing is written.
    let stolen = dir.join("stolen.bin");
    let o = run(&[
        "broker",
        "download",
        "--profile",
        bob.to_str().unwrap(),
        &id,
        "-o",
        stolen.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!stolen.exists());
    // Share with bob; a wrong code fails and writes nothing; the right one opens it.
    let share = last_line(&ok(&[
        "broker",
        "share",
        "--profile",
        a,
        &id,
        "--to",
        "bob@example.test",
        "--max-opens",
        "2",
    ]));
    let otp = mailed(&b.outbox, "bob@example.test", "One-time code:");
    assert_eq!(
        otp,
        mailed(&b.outbox, "alice@example.test", "One-time code:")
    );
    let out = dir.join("shared.bin");
    let o = run(&[
        "broker",
        "open-share",
        "--url",
        &b.url,
        "--pin",
        &b.pin,
        &share,
        "--otp",
        &format!("WRONG-{otp}"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong one-time code"));
    assert!(!out.exists());
    // The code from standard input (`--otp-file -`): nothing on the command line.
    let mut child = sc()
        .args([
            "broker",
            "open-share",
            "--url",
            &b.url,
            "--pin",
            &b.pin,
            &share,
            "--otp-file",
            "-",
            "-o",
            out.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{otp}\n").as_bytes())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == content);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a decrypted file is its owner's only");
    }
    assert!(ok(&["broker", "shares", "--profile", a]).contains("1/2"));
    // Revoked: closed.
    ok(&["broker", "unshare", "--profile", a, &share]);
    let o = run(&[
        "broker",
        "open-share",
        "--url",
        &b.url,
        "--pin",
        &b.pin,
        &share,
        "--otp",
        &otp,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    // Delete; then logout ends the login.
    ok(&["broker", "rm", "--profile", a, &id]);
    assert!(!ok(&["broker", "ls", "--profile", a]).contains("doc.bin"));
    ok(&["broker", "logout", "--profile", a]);
    let o = run(&["broker", "ls", "--profile", a]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("broker login"));
}

#[test]
fn broker_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = start(
        &data,
        &dir.path().join("outbox"),
        &["--max-stream-body", "2MiB"],
        &[],
    );
    flow(&b, dir.path());
    // No core dump of the broker's memory (the outbox key, data keys) is ever written.
    #[cfg(target_os = "linux")]
    {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", b.child.id())).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
        assert_eq!(core.split_whitespace().nth(5), Some("0"), "{core}");
    }
    // Registering again with the same unverified profile mails a new code; the first
    // stops working, the new one verifies.
    let dave = dir.path().join("dave.profile");
    let pw = dir.path().join("pw");
    let register = [
        "broker",
        "register",
        "--url",
        &b.url,
        "--pin",
        &b.pin,
        "--tenant",
        "acme",
        "--email",
        "dave@example.test",
        "--password-file",
        pw.to_str().unwrap(),
        "--profile",
        dave.to_str().unwrap(),
    ];
    ok(&register);
    let first = mailed(&b.outbox, "dave@example.test", "Verification code:");
    let profile_before = std::fs::read_to_string(&dave).unwrap();
    let o = run(&register);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("again"));
    assert_eq!(std::fs::read_to_string(&dave).unwrap(), profile_before);
    let mut second = first.clone();
    for _ in 0..100 {
        second = mailed(&b.outbox, "dave@example.test", "Verification code:");
        if second != first {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(first, second);
    // Not verified yet: no login with this profile.
    let o = run(&[
        "broker",
        "login",
        "--profile",
        dave.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("never verified"));
    let verify = |code: &str| {
        run(&[
            "broker",
            "verify",
            "--profile",
            dave.to_str().unwrap(),
            "--code",
            code,
        ])
    };
    assert!(!verify(&first).status.success());
    let o = verify(&second);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Verified: the profile is never registered over.
    let o = run(&register);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("verified"));
    // Over the channel's streamed-body limit: "too large", not a transfer failure.
    let carol = account(&b, dir.path(), "carol@example.test", false);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![1u8; 3 << 20]).unwrap();
    let o = run(&[
        "broker",
        "upload",
        "--profile",
        carol.to_str().unwrap(),
        big.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("413") && err.contains("larger than"), "{err}");
    // Sealed at rest in the default places.
    assert!(data.join("broker.db").exists());
    // Sessions stay in memory: nothing in the data directory could resume a login.
    let session_files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sessions"))
        .collect();
    assert!(session_files.is_empty(), "{session_files:?}");
    // The operator reads the audit log: every key use and share event, no secret.
    let audit = ok(&[
        "broker",
        "audit",
        "acme",
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "500",
    ]);
    for action in [
        "account.register",
        "account.verify",
        "login",
        "file.upload",
        "file.download",
        "share.create",
        "share.open.refused",
        "share.open",
        "share.revoke",
        "file.delete",
        "logout",
    ] {
        assert!(
            audit
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(action)),
            "no {action} in:\n{audit}"
        );
    }
    // A tenant with no events (or a mistyped one) is said so, not silent.
    let none = run(&["broker", "audit", "acmee", "--data", data.to_str().unwrap()]);
    assert!(none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no audit events for tenant \"acmee\""),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    // A second broker on the same SQLite database refuses to start (its budgets would
    // be separate).
    let port = free_port().to_string();
    let outbox2 = dir.path().join("outbox2");
    let second = run(&[
        "broker",
        "serve",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--data",
        data.to_str().unwrap(),
        "--outbox",
        outbox2.to_str().unwrap(),
    ]);
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another broker is serving"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(data.join("objects").is_dir());
}

#[test]
fn broker_on_postgres_and_s3() {
    let moto = moto::Moto::start();
    moto.create_bucket("broker-cli-test");
    let dir = tempfile::tempdir().unwrap();
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let schema = format!("broker_cli_{}", hex::encode(b));
    let pg = std::env::var("SESSIONCERT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let store = format!("{pg}?schema={schema}");
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ];
    let broker = start(
        &dir.path().join("data"),
        &dir.path().join("outbox"),
        &[
            "--store",
            &store,
            "--objects",
            "s3://broker-cli-test/acme-files",
        ],
        &env,
    );
    flow(&broker, dir.path());
    // The broker's tables are in PostgreSQL, the sessions beside them.
    let tables = std::process::Command::new("psql")
        .args([
            "-tA",
            &pg,
            "-c",
            &format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
            ),
        ])
        .output()
        .unwrap();
    let n: u32 = String::from_utf8_lossy(&tables.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(n >= 5, "broker tables in {schema}: {n}");
    drop(broker);
    let _ = std::process::Command::new("psql")
        .env("PGOPTIONS", "--client-min-messages=warning")
        .args([
            "-q",
            &pg,
            "-c",
            &format!("DROP SCHEMA \"{schema}\" CASCADE"),
        ])
        .status();
}

/// Notifications need a place, and an outbox of codes must not sit in the data
/// directory (a copy of it would open every live share).
#[test]
fn broker_serve_needs_an_outbox_outside_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&[
        "broker",
        "tenant",
        "create",
        "acme",
        "--data",
        data.to_str().unwrap(),
    ]);
    let serve = |extra: &[&str]| {
        let mut args = vec!["broker", "serve", "--addr", "127.0.0.1:0", "--data"];
        args.push(data.to_str().unwrap());
        args.extend_from_slice(extra);
        run(&args)
    };
    let outside = dir.path().join("mail");
    for (flag, value) in [
        ("--max-bytes-per-user", "0"),
        ("--share-max-expiry", "0s"),
        ("--uploads-at-once", "0"),
        ("--mails-per-hour", "-3"),
    ] {
        let o = serve(&["--outbox", outside.to_str().unwrap(), flag, value]);
        assert!(!o.status.success(), "{flag} {value} accepted");
        assert!(String::from_utf8_lossy(&o.stderr).contains(flag), "{flag}");
    }
    let o = serve(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--smtp") && err.contains("--outbox"), "{err}");
    let inside = data.join("outbox");
    let o = serve(&["--outbox", inside.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("inside --data"), "{err}");
}
