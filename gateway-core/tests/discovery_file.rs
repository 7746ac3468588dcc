//! File discovery: a real file rewritten by atomic rename and in place, watched with `notify`.
mod discovery_common;
use discovery_common::{ep, until_set, updates};
use gateway_core::discovery::file::FileSource;
use gateway_core::discovery::{self, FileSpec, Source, SourceSpec};
use gateway_core::observability::Metrics;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polling every 60 s: within the bounds below only a change notification can explain an update.
fn spec(path: &Path) -> FileSpec {
    FileSpec {
        path: path.to_path_buf(),
        interval: Duration::from_secs(60),
        debounce: Duration::from_millis(50),
    }
}

fn atomic_write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn in_place_write(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn atomic_rename_and_in_place_writes_are_both_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.txt");
    std::fs::write(&path, "127.0.0.1:9001\n127.0.0.1:9002 2\n").unwrap();
    let h = discovery::spawn(
        "f",
        discovery::build(&SourceSpec::File(spec(&path))).unwrap(),
        None,
    );
    let mut rx = h.subscribe();
    until_set(
        &mut rx,
        &[ep("127.0.0.1:9001", 1), ep("127.0.0.1:9002", 2)],
        Duration::from_secs(5),
    )
    .await;

    atomic_write(&path, "- address: 127.0.0.1:9003\n  weight: 4\n");
    let t1 = until_set(&mut rx, &[ep("127.0.0.1:9003", 4)], Duration::from_secs(10)).await;
    in_place_write(
        &path,
        r#"[{"address": "127.0.0.1:9004"}, {"address": "[::1]:9005", "weight": 2}]"#,
    );
    let t2 = until_set(
        &mut rx,
        &[ep("127.0.0.1:9004", 1), ep("[::1]:9005", 2)],
        Duration::from_secs(10),
    )
    .await;
    // and a second atomic replace (the watch must survive the first rename)
    atomic_write(&path, "127.0.0.1:9006\n");
    let t3 = until_set(&mut rx, &[ep("127.0.0.1:9006", 1)], Duration::from_secs(10)).await;
    eprintln!("applied after: rename {t1:?}, in place {t2:?}, rename again {t3:?}");
    // an explicit empty list empties the set
    atomic_write(&path, "[]\n");
    until_set(&mut rx, &[], Duration::from_secs(10)).await;
}

#[tokio::test]
async fn garbage_keeps_the_last_good_set_and_the_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eps.yaml");
    std::fs::write(&path, "- address: 127.0.0.1:9101\n").unwrap();
    let m = Metrics::new().unwrap();
    let h = discovery::spawn(
        "f",
        discovery::build(&SourceSpec::File(spec(&path))).unwrap(),
        Some(m.discovery("f", "file")),
    );
    let mut rx = h.subscribe();
    let good = [ep("127.0.0.1:9101", 1)];
    until_set(&mut rx, &good, Duration::from_secs(5)).await;

    let garbage = "- address: 127.0.0.1:9102\n- address: not-an-ip:80\n";
    atomic_write(&path, garbage);
    let deadline = Instant::now() + Duration::from_secs(10);
    while updates(&m, "f", "file", "failure") < 1 {
        assert!(
            Instant::now() < deadline,
            "garbage not noticed: {}",
            m.render()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.current().as_deref(), Some(&good[..]));
    // the error the runner logs
    let e = FileSource::new(spec(&path))
        .fetch()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("{}:2: ", path.display())), "{e}");
    assert!(e.contains("not-an-ip:80"), "{e}");

    // an emptied file (a reader racing an in-place rewrite) and a removed file: still the last good set
    in_place_write(&path, "");
    let f = updates(&m, "f", "file", "failure");
    std::fs::remove_file(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while updates(&m, "f", "file", "failure") < f + 1 {
        assert!(
            Instant::now() < deadline,
            "removal not noticed: {}",
            m.render()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.current().as_deref(), Some(&good[..]));

    // fixed: applied
    atomic_write(&path, "127.0.0.1:9103\n");
    until_set(&mut rx, &[ep("127.0.0.1:9103", 1)], Duration::from_secs(10)).await;
}

#[tokio::test]
async fn polling_interval_is_the_fallback_without_notifications() {
    // the file appears in a directory created after the source: nothing to watch at start, so only
    // the interval can pick it up
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("later");
    let path = sub.join("eps.txt");
    let mut s = spec(&path);
    s.interval = Duration::from_millis(200);
    let src = FileSource::new(s.clone());
    assert!(!src.is_watching());
    let h = discovery::spawn("f", Box::new(src), None);
    let mut rx = h.subscribe();
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(&path, "127.0.0.1:9201\n").unwrap();
    until_set(&mut rx, &[ep("127.0.0.1:9201", 1)], Duration::from_secs(5)).await;
}
