//! The object storage layer: a local directory and a real S3-compatible server (moto),
//! roundtrips across several parts, atomic visibility, cleanup after aborts, drops and
//! crashes, backpressure, and key checks.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use sessioncert_broker_server::objects::{
    Objects, ObjectsError, ObjectsSpec, S3Options, PART_SIZE, UPLOAD_MEMORY_BOUND,
};
use sha2::{Digest, Sha256};

#[path = "support/moto.rs"]
mod moto;
use moto::Moto;

const MIB: usize = 1024 * 1024;

/// Deterministic pseudo-random bytes (xorshift64*), so a misplaced part shows in the hash.
fn pseudo_random(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Writes `data` in uneven chunks (so pieces straddle part boundaries) and finishes.
async fn upload(objects: &Objects, key: &str, data: &Bytes) -> u64 {
    let mut writer = objects.writer(key).await.unwrap();
    for chunk in data.chunks(1_000_003) {
        writer
            .write(data.slice_ref(chunk))
            .await
            .expect("write a chunk");
    }
    writer.finish().await.expect("finish the upload")
}

/// Reads an object back as (size announced, bytes read, chunks, sha256).
async fn download(objects: &Objects, key: &str) -> (u64, u64, usize, Vec<u8>) {
    let mut reader = objects.get(key).await.expect("get the object");
    let size = reader.size;
    let (mut read, mut chunks, mut hash) = (0u64, 0usize, Sha256::new());
    while let Some(chunk) = reader.next().await {
        let chunk = chunk.expect("read a chunk");
        read += chunk.len() as u64;
        chunks += 1;
        hash.update(&chunk);
    }
    (size, read, chunks, hash.finalize().to_vec())
}

/// Every regular file under `dir`, recursively.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

fn assert_not_found(result: Result<impl std::fmt::Debug, ObjectsError>, key: &str) {
    match result {
        Err(ObjectsError::NotFound(k)) => assert_eq!(k, key),
        other => panic!("expected NotFound({key}), got {other:?}"),
    }
}

/// Waits (bounded) for `check` to hold; spawned aborts run in the background.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn spec_parsing() {
    let s3 = |b: &str, p: &str| ObjectsSpec::S3 {
        bucket: b.into(),
        prefix: p.into(),
    };
    assert_eq!(
        "s3://bucket".parse::<ObjectsSpec>().unwrap(),
        s3("bucket", "")
    );
    assert_eq!(
        "s3://bucket/".parse::<ObjectsSpec>().unwrap(),
        s3("bucket", "")
    );
    assert_eq!(
        "s3://my-bucket/broker/Prod/"
            .parse::<ObjectsSpec>()
            .unwrap(),
        s3("my-bucket", "broker/Prod")
    );
    assert_eq!(
        "/var/lib/sessioncert/objects"
            .parse::<ObjectsSpec>()
            .unwrap(),
        ObjectsSpec::Dir("/var/lib/sessioncert/objects".into())
    );
    assert_eq!(
        "objects".parse::<ObjectsSpec>().unwrap(),
        ObjectsSpec::Dir("objects".into())
    );
    for bad in [
        "",
        "s3://",
        "s3:///prefix",
        "s3://bucket//prefix",
        "s3://bucket/a/../b",
        "s3://user:secret@bucket/p",
        "s3://bucket/a b",
    ] {
        match bad.parse::<ObjectsSpec>() {
            Err(ObjectsError::Config(msg)) => assert!(!msg.contains("secret"), "{msg}"),
            other => panic!("{bad:?} should be refused, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn dir_roundtrip_list_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("objects");
    let objects = Objects::open(&ObjectsSpec::Dir(dir.clone())).await.unwrap();
    assert!(dir.is_dir(), "open creates the directory");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    assert!(
        objects.describe().starts_with("dir /"),
        "{}",
        objects.describe()
    );

    // 20 MiB and a bit: two full parts and a short last one.
    let data = pseudo_random(20 * MIB + 12_345, 1);
    let key = "u1/file-0001.bin";

    // Midway (one full part sent to the staging file), nothing is visible.
    let mut writer = objects.writer(key).await.unwrap();
    writer.write(data.slice(..9 * MIB)).await.unwrap();
    assert!(objects.list("").await.unwrap().is_empty());
    assert_not_found(objects.get(key).await, key);
    let staged = files_in(&dir);
    assert_eq!(staged.len(), 1, "one staging file: {staged:?}");
    assert!(staged[0].to_string_lossy().contains('#'), "{staged:?}");
    writer.write(data.slice(9 * MIB..)).await.unwrap();
    assert_eq!(writer.finish().await.unwrap(), data.len() as u64);

    let (size, read, chunks, hash) = download(&objects, key).await;
    assert_eq!(size, data.len() as u64);
    assert_eq!(read, size);
    assert!(chunks > 1, "the download streams in chunks");
    assert_eq!(hash, Sha256::digest(&data).to_vec());

    // Uneven writes give the same object.
    assert_eq!(
        upload(&objects, "u1/file-0002.bin", &data).await,
        data.len() as u64
    );
    assert_eq!(
        download(&objects, "u1/file-0002.bin").await.3,
        Sha256::digest(&data).to_vec()
    );

    // Small and empty objects.
    assert_eq!(
        upload(&objects, "u10/a.b_c-d", &Bytes::from_static(b"hello")).await,
        5
    );
    assert_eq!(
        objects
            .writer("u2/empty")
            .await
            .unwrap()
            .finish()
            .await
            .unwrap(),
        0
    );
    let (size, read, _, hash) = download(&objects, "u2/empty").await;
    assert_eq!((size, read), (0, 0));
    assert_eq!(hash, Sha256::digest(b"").to_vec());

    // Replacing an object: the old one stays readable until the new one is finished.
    let mut writer = objects.writer("u10/a.b_c-d").await.unwrap();
    writer.write(Bytes::from_static(b"world!")).await.unwrap();
    assert_eq!(download(&objects, "u10/a.b_c-d").await.1, 5);
    assert_eq!(writer.finish().await.unwrap(), 6);
    assert_eq!(download(&objects, "u10/a.b_c-d").await.1, 6);

    // Listing: whole segments, sorted.
    assert_eq!(
        objects.list("").await.unwrap(),
        [
            "u1/file-0001.bin",
            "u1/file-0002.bin",
            "u10/a.b_c-d",
            "u2/empty"
        ]
    );
    assert_eq!(
        objects.list("u1").await.unwrap(),
        ["u1/file-0001.bin", "u1/file-0002.bin"]
    );
    assert_eq!(
        objects.list("u1/").await.unwrap(),
        objects.list("u1").await.unwrap()
    );
    assert!(objects.list("u3").await.unwrap().is_empty());

    // Delete, twice; then it is gone everywhere.
    objects.delete(key).await.unwrap();
    objects.delete(key).await.unwrap();
    assert_not_found(objects.get(key).await, key);
    assert_eq!(objects.list("u1").await.unwrap(), ["u1/file-0002.bin"]);
    for k in ["u1/file-0002.bin", "u10/a.b_c-d", "u2/empty"] {
        objects.delete(k).await.unwrap();
    }
    assert!(objects.list("").await.unwrap().is_empty());
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
    assert_not_found(objects.get("never/written").await, "never/written");
}

#[tokio::test]
async fn bad_keys_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = Objects::open(&ObjectsSpec::Dir(tmp.path().into()))
        .await
        .unwrap();
    let long = "a".repeat(600);
    let long_segment = format!("u/{}", "b".repeat(250));
    for key in [
        "",
        "/abs",
        "trailing/",
        "a//b",
        "..",
        "a/../b",
        "./a",
        "a/.",
        "Upper",
        "sp ace",
        "hash#1",
        "back\\slash",
        "nul\0",
        "é",
        "a:b",
        long.as_str(),
        long_segment.as_str(),
    ] {
        let bad = |r: Result<(), ObjectsError>| match r {
            Err(ObjectsError::BadKey(k)) => assert_eq!(k, key),
            other => panic!("{key:?} should be a bad key, got {other:?}"),
        };
        bad(objects.writer(key).await.map(drop));
        bad(objects.get(key).await.map(drop));
        bad(objects.delete(key).await);
        if !key.is_empty() && key != "trailing/" {
            bad(objects.list(key).await.map(drop));
        }
    }
    assert!(files_in(tmp.path()).is_empty());
}

#[tokio::test]
async fn dir_dropped_and_aborted_writers_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let objects = Objects::open(&ObjectsSpec::Dir(dir.clone())).await.unwrap();
    let data = pseudo_random(9 * MIB, 2);

    let mut writer = objects.writer("u1/aborted").await.unwrap();
    writer.write(data.clone()).await.unwrap();
    assert_eq!(files_in(&dir).len(), 1, "a part reached the staging file");
    writer.abort().await.unwrap();
    assert!(objects.list("").await.unwrap().is_empty());
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
    assert_not_found(objects.get("u1/aborted").await, "u1/aborted");

    let mut writer = objects.writer("u1/dropped").await.unwrap();
    writer.write(data.clone()).await.unwrap();
    assert_eq!(files_in(&dir).len(), 1);
    drop(writer);
    assert!(objects.list("").await.unwrap().is_empty());
    eventually("the dropped upload's staging file is removed", || {
        files_in(&dir).is_empty()
    })
    .await;
    assert_not_found(objects.get("u1/dropped").await, "u1/dropped");

    // A writer dropped before any part was sent.
    let mut writer = objects.writer("u1/small").await.unwrap();
    writer.write(Bytes::from_static(b"abc")).await.unwrap();
    drop(writer);
    eventually("the small dropped upload is removed", || {
        files_in(&dir).is_empty()
    })
    .await;
    assert!(objects.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn dir_crash_leftovers_are_invisible_and_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("objects");
    let spec = ObjectsSpec::Dir(dir.clone());
    let objects = Objects::open(&spec).await.unwrap();

    assert_eq!(
        upload(&objects, "u1/kept", &Bytes::from_static(b"kept")).await,
        4
    );

    // A "crash": an upload whose writer is never dropped, so nothing cleans up.
    let mut writer = objects.writer("u1/crashed").await.unwrap();
    writer.write(pseudo_random(9 * MIB, 3)).await.unwrap();
    std::mem::forget(writer);
    // Leftovers as the library names them (KEY#N), from earlier crashes.
    std::fs::create_dir_all(dir.join("u2/deep")).unwrap();
    std::fs::write(dir.join("u2/deep/file#1"), b"partial").unwrap();
    std::fs::write(dir.join("u1/kept#12"), b"partial").unwrap();
    // Not a staging name: an operator's file, left alone.
    std::fs::write(dir.join("u2/notes#draft"), b"keep").unwrap();

    eventually("the forgotten upload's part is on disk", || {
        files_in(&dir)
            .iter()
            .any(|f| f.to_string_lossy().contains("crashed#"))
    })
    .await;
    assert_eq!(objects.list("").await.unwrap(), ["u1/kept"]);
    assert_not_found(objects.get("u1/crashed").await, "u1/crashed");

    // The restart, once the leftovers are old; a fresh staging file is another
    // instance's live upload on the same directory and stays.
    drop(objects);
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for f in files_in(&dir) {
        if f.to_string_lossy().contains('#') && !f.ends_with("notes#draft") {
            let file = std::fs::File::options().write(true).open(&f).unwrap();
            file.set_modified(hour_ago).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("u3")).unwrap();
    std::fs::write(dir.join("u3/live#7"), b"another instance's upload").unwrap();
    let objects = Objects::open(&spec).await.unwrap();
    assert_eq!(objects.list("").await.unwrap(), ["u1/kept"]);
    std::fs::remove_file(dir.join("u3/live#7")).unwrap();
    assert_eq!(
        files_in(&dir),
        [dir.join("u1/kept"), dir.join("u2/notes#draft")]
    );
    assert_eq!(download(&objects, "u1/kept").await.1, 4);
}

#[tokio::test]
async fn write_waits_for_the_part_in_flight() {
    // Every part upload takes 300 ms; writing five parts at once must wait for four of
    // them (one uploads while the next fills), not queue them all.
    let delay = Duration::from_millis(300);
    let store = ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_put_per_call: delay,
            ..ThrottleConfig::default()
        },
    );
    let objects = Objects::from_store(Arc::new(store), "throttled memory");
    assert_eq!(objects.describe(), "throttled memory");
    assert_eq!(UPLOAD_MEMORY_BOUND, 2 * PART_SIZE);

    let data = pseudo_random(5 * PART_SIZE, 4);
    let mut writer = objects.writer("u1/slow").await.unwrap();
    let started = Instant::now();
    writer.write(data.clone()).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= delay * 4,
        "write returned after {waited:?}: it queued parts instead of waiting"
    );
    assert!(objects.list("").await.unwrap().is_empty());
    assert_eq!(writer.finish().await.unwrap(), data.len() as u64);
    assert_eq!(
        download(&objects, "u1/slow").await.3,
        Sha256::digest(&data).to_vec()
    );
}

// ---- S3, against moto's server -------------------------------------------------------

fn options(moto: &Moto) -> S3Options {
    S3Options {
        endpoint: Some(moto.endpoint()),
        access_key: Some(moto::ACCESS_KEY.into()),
        secret_key: Some(moto::SECRET_KEY.into()),
        session_token: None,
        region: Some("us-east-1".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_roundtrip_list_delete_abort() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let bucket = "sessioncert-objects";
    tokio::task::block_in_place(|| moto.create_bucket(bucket));
    let options = options(&moto);

    let spec: ObjectsSpec = format!("s3://{bucket}/broker/v1/").parse().unwrap();
    let objects = Objects::open_with(&spec, &options).await.unwrap();
    let described = objects.describe();
    assert!(
        described.starts_with("s3://sessioncert-objects/broker/v1 (endpoint http://127.0.0.1:"),
        "{described}"
    );
    assert!(!described.contains("test-secret") && !described.contains("TESTACCESS"));

    // Three parts (8 + 8 + 1 MiB and a bit); invisible until finished.
    let data = pseudo_random(2 * PART_SIZE + MIB + 4321, 5);
    let key = "u1/file-0001.bin";
    let mut writer = objects.writer(key).await.unwrap();
    writer.write(data.slice(..9 * MIB)).await.unwrap();
    assert!(objects.list("").await.unwrap().is_empty());
    assert_not_found(objects.get(key).await, key);
    writer.write(data.slice(9 * MIB..)).await.unwrap();
    assert_eq!(writer.finish().await.unwrap(), data.len() as u64);
    let (size, read, chunks, hash) = download(&objects, key).await;
    assert_eq!((size, read), (data.len() as u64, data.len() as u64));
    assert!(chunks > 1, "the download streams");
    assert_eq!(hash, Sha256::digest(&data).to_vec());

    assert_eq!(
        upload(&objects, "u10/small", &Bytes::from_static(b"hello")).await,
        5
    );
    assert_eq!(
        objects
            .writer("u2/empty")
            .await
            .unwrap()
            .finish()
            .await
            .unwrap(),
        0
    );
    assert_eq!(download(&objects, "u2/empty").await.1, 0);
    assert_eq!(
        objects.list("").await.unwrap(),
        ["u1/file-0001.bin", "u10/small", "u2/empty"]
    );
    assert_eq!(objects.list("u1").await.unwrap(), ["u1/file-0001.bin"]);

    // The prefix maps keys: the bucket's root sees them under it, the prefixed store
    // sees nothing outside it.
    let root = Objects::open_with(&format!("s3://{bucket}").parse().unwrap(), &options)
        .await
        .unwrap();
    assert_eq!(upload(&root, "other/x", &Bytes::from_static(b"x")).await, 1);
    assert_eq!(
        root.list("broker").await.unwrap(),
        [
            "broker/v1/u1/file-0001.bin",
            "broker/v1/u10/small",
            "broker/v1/u2/empty"
        ]
    );
    assert_eq!(objects.list("").await.unwrap().len(), 3);

    objects.delete(key).await.unwrap();
    objects.delete(key).await.unwrap();
    assert_not_found(objects.get(key).await, key);
    assert_eq!(objects.list("").await.unwrap(), ["u10/small", "u2/empty"]);

    // An aborted upload (one part sent) leaves no object and no pending upload.
    assert_eq!(
        tokio::task::block_in_place(|| moto.pending_uploads(bucket)),
        0
    );
    let mut writer = objects.writer("u3/aborted").await.unwrap();
    writer.write(pseudo_random(9 * MIB, 6)).await.unwrap();
    assert_eq!(
        tokio::task::block_in_place(|| moto.pending_uploads(bucket)),
        1
    );
    writer.abort().await.unwrap();
    assert_eq!(
        tokio::task::block_in_place(|| moto.pending_uploads(bucket)),
        0
    );
    assert!(objects.list("u3").await.unwrap().is_empty());
    assert_not_found(objects.get("u3/aborted").await, "u3/aborted");

    // So does a dropped one, once its spawned abort ran.
    let mut writer = objects.writer("u3/dropped").await.unwrap();
    writer.write(pseudo_random(9 * MIB, 7)).await.unwrap();
    drop(writer);
    assert!(objects.list("u3").await.unwrap().is_empty());
    eventually("the dropped S3 upload is aborted", || {
        tokio::task::block_in_place(|| moto.pending_uploads(bucket)) == 0
    })
    .await;
    assert_not_found(objects.get("u3/dropped").await, "u3/dropped");

    // A missing bucket fails at open.
    match Objects::open_with(&"s3://no-such-bucket".parse().unwrap(), &options).await {
        Err(ObjectsError::Config(msg)) => {
            assert!(msg.contains("no-such-bucket"), "{msg}");
            assert!(!msg.contains("test-secret-access-key"), "{msg}");
        }
        other => panic!("a missing bucket should fail open, got {other:?}"),
    }
}

#[tokio::test]
async fn s3_unreachable_endpoint_fails_at_open_without_secrets() {
    // A port in the project's range with nothing listening on it.
    let port = {
        let listener = (19000..19500)
            .rev()
            .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .expect("a free port");
        listener.local_addr().unwrap().port()
    };
    let options = S3Options {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        access_key: Some("AKIDSHOULDNOTLEAK".into()),
        secret_key: Some("secret-should-not-leak".into()),
        session_token: None,
        region: None,
    };
    let started = Instant::now();
    match Objects::open_with(&"s3://bucket/p".parse().unwrap(), &options).await {
        Err(ObjectsError::Config(msg)) => {
            assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
            assert!(!msg.contains("SHOULDNOTLEAK") && !msg.contains("should-not-leak"));
        }
        other => panic!("an unreachable endpoint should fail open, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "open gave up late"
    );

    // Credentials in the endpoint URL are refused outright.
    let options = S3Options {
        endpoint: Some("http://user:pass@127.0.0.1:1".into()),
        ..S3Options::default()
    };
    match Objects::open_with(&"s3://bucket".parse().unwrap(), &options).await {
        Err(ObjectsError::Config(msg)) => assert!(!msg.contains("pass"), "{msg}"),
        other => panic!("credentials in the endpoint should be refused, got {other:?}"),
    }
    let debug = format!(
        "{:?}",
        S3Options {
            secret_key: Some("hidden-value".into()),
            ..S3Options::default()
        }
    );
    assert!(!debug.contains("hidden-value"), "{debug}");
}
