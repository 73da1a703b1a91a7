//! The record store under pressure: retention by count, bytes and age, a
//! full queue (bodies dropped first, then records, proxying unslowed), and
//! a `kill -9` in the middle of traffic.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sluice::config::{DataDir, Recording};
use sluice::Proxy;

use crate::support::admin::{get_json, metrics};
use crate::support::client::{exchange, get_once, Client};
use crate::support::{origin, proxy};

async fn proxy_with(tweak: impl FnOnce(&mut Recording)) -> Proxy {
    proxy::start(|c| {
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.record = Recording {
            data_dir: DataDir::Memory,
            ..Recording::default()
        };
        tweak(&mut c.record);
    })
    .await
}

async fn stored(admin: SocketAddr) -> Vec<Value> {
    get_json(admin, "/api/records?limit=1000")
        .await
        .get("records")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Polls until `cond(records)` holds; panics with the last view after 10 s.
async fn wait_until(admin: SocketAddr, what: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = stored(admin).await;
        if cond(&rows) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after 10 s ({} records)",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A POST of `size` bytes to the echo origin through `proxy`.
async fn post(proxy: SocketAddr, origin: SocketAddr, path: &str, size: usize) -> u16 {
    let mut raw = format!(
        "POST http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    raw.extend(std::iter::repeat_n(b'z', size));
    exchange(proxy, &raw).await.unwrap().status
}

/// Polls `/metrics` until the writer has handled `n` records (stored, or
/// stored and deleted by retention); panics after 10 s.
async fn wait_written(admin: SocketAddr, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(admin).await;
        let written =
            m.must("sluice_records", &[]) + m.must("sluice_records_retention_deleted_total", &[]);
        if written >= n as f64 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "the writer handled {written} of {n} records in 10 s:\n{}",
                m.0
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The database, its WAL and the segment files holding headers and bodies.
fn store_bytes(dir: &Path) -> u64 {
    let segments: u64 = std::fs::read_dir(dir.join("records.blobs"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    segments
        + ["records.db", "records.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest() {
    let origin = origin::http().await;
    let proxy = proxy_with(|r| r.retain_records = 50).await;
    let admin = proxy.admin_addr.unwrap();
    let mut c = Client::connect(proxy.addr).await.unwrap();
    for i in 0..200 {
        assert_eq!(
            c.get(origin, &format!("/small?n={i}"))
                .await
                .unwrap()
                .status,
            200
        );
    }
    // Retention runs right after each batch commits: a reader may see a
    // batch before the cut that follows it, never for long.
    let rows = wait_until(admin, "newest stored, 50 kept", |rows| {
        rows.len() <= 50
            && rows
                .first()
                .is_some_and(|r| r["url"].as_str().unwrap().ends_with("n=199"))
    })
    .await;
    assert!(rows.len() <= 50, "{} records kept", rows.len());
    let oldest = rows.last().unwrap()["url"].as_str().unwrap().to_string();
    let n: usize = oldest.rsplit('=').next().unwrap().parse().unwrap();
    assert!(n >= 150, "oldest kept is n={n}");
}

#[tokio::test]
async fn retention_by_age_deletes_old_records() {
    let origin = origin::http().await;
    let proxy = proxy_with(|r| r.retain_age = Duration::from_secs(1)).await;
    let admin = proxy.admin_addr.unwrap();
    for i in 0..10 {
        get_once(proxy.addr, origin, &format!("/small?old={i}"))
            .await
            .unwrap();
    }
    wait_until(admin, "old stored", |rows| rows.len() == 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    get_once(proxy.addr, origin, "/small?new").await.unwrap();
    let rows = wait_until(admin, "only the new one", |rows| {
        rows.len() == 1 && rows[0]["url"].as_str().unwrap().ends_with("?new")
    })
    .await;
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn retention_by_bytes_bounds_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin::http().await;
    let limit: u64 = 2 * 1024 * 1024;
    let proxy = proxy_with(|r| {
        r.data_dir = DataDir::Path(dir.path().to_path_buf());
        r.retain_bytes = limit;
    })
    .await;
    let admin = proxy.admin_addr.unwrap();
    // 300 exchanges x 2 bodies x 16 KiB: about 9.4 MiB captured, nearly
    // five times the limit.
    let mut peak = 0;
    for i in 0..300 {
        assert_eq!(
            post(proxy.addr, origin, &format!("/echo?b={i}"), 16 * 1024).await,
            200
        );
        if i % 20 == 0 {
            peak = peak.max(store_bytes(dir.path()));
        }
    }
    // Wait for the writer through /metrics, which reads counters and file
    // sizes, never the store: a records query overlapping the writer's
    // commits holds a WAL snapshot, so no checkpoint can restart the WAL
    // and it grows past the budget (seen: up to 6.7 MB when the writer
    // lagged the proxy), which is not what this test measures.
    wait_written(admin, 300).await;
    peak = peak.max(store_bytes(dir.path()));
    wait_until(admin, "last stored", |rows| {
        rows.first()
            .is_some_and(|r| r["url"].as_str().unwrap().ends_with("b=299"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    peak = peak.max(store_bytes(dir.path()));
    assert!(
        peak as f64 <= limit as f64 * 1.05,
        "store reached {peak} bytes, limit {limit}"
    );
    let rows = stored(admin).await;
    assert!(rows.len() >= 20, "only {} records kept", rows.len());
    assert!(rows.len() < 300, "nothing was deleted");
    let m = metrics(admin).await;
    assert!(m.must("sluice_records_retention_deleted_total", &[]) > 0.0);
}

#[tokio::test]
async fn a_full_queue_drops_bodies_first_then_records_and_never_slows_proxying() {
    let origin = origin::http().await;
    let proxy = proxy_with(|r| {
        r.queue_records = 100;
        r.queue_body_bytes = 256 * 1024;
    })
    .await;
    let admin = proxy.admin_addr.unwrap();
    // The writer stands still, as behind a stalled disk.
    proxy.recorder.set_paused(true);
    let started = std::time::Instant::now();
    for i in 0..150 {
        assert_eq!(
            post(proxy.addr, origin, &format!("/echo?q={i}"), 4 * 1024).await,
            200
        );
    }
    let took = started.elapsed();
    let m = metrics(admin).await;
    // 4 KiB each way: 32 records fit the 256 KiB body budget, the next 68
    // queue without bodies, the last 50 find the queue full.
    assert_eq!(
        m.must("sluice_records_dropped_total", &[("what", "record")]),
        50.0
    );
    assert_eq!(
        m.must("sluice_records_dropped_total", &[("what", "body")]),
        68.0
    );
    assert_eq!(m.must("sluice_records_queue", &[]), 100.0);
    proxy.recorder.set_paused(false);
    let rows = wait_until(admin, "queue drained", |rows| rows.len() == 100).await;
    let with_body = |id: &Value| {
        let id = id.clone();
        async move {
            let d = get_json(admin, &format!("/api/records/{id}")).await;
            (
                d["request"]["body"]["captured"].as_u64().unwrap(),
                d["request"]["body"]["dropped"].as_bool().unwrap(),
            )
        }
    };
    // Oldest kept still has its body; the newest kept lost it, flagged.
    assert_eq!(with_body(&rows[99]["id"]).await, (4096, false));
    assert_eq!(with_body(&rows[0]["id"]).await, (0, true));
    assert!(rows[0]["url"].as_str().unwrap().ends_with("q=99"));
    // For the record: 150 proxied requests with a stalled writer.
    eprintln!("150 requests with the writer paused took {took:?}");
}

#[tokio::test]
async fn kill_9_loses_at_most_the_last_second_and_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let origin = origin::http().await;
    let mut first = proxy::spawn(&["--data-dir", &data]).await;
    let admin = first.admin.unwrap();
    let mut c = Client::connect(first.addr).await.unwrap();
    for i in 0..300 {
        assert_eq!(
            c.get(origin, &format!("/small?before={i}"))
                .await
                .unwrap()
                .status,
            200
        );
    }
    // More than a second passes between these and the kill.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for i in 0..100 {
        assert_eq!(
            c.get(origin, &format!("/small?late={i}"))
                .await
                .unwrap()
                .status,
            200
        );
    }
    let pid = first.pid();
    first.signal(libc::SIGKILL);
    // Killed by the signal: no exit code, and the process is gone (reaped).
    assert_eq!(first.wait_exit(Duration::from_secs(5)), None);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    drop(first);

    let second = proxy::spawn(&["--data-dir", &data]).await;
    let admin2 = second.admin.unwrap();
    assert_ne!(admin, admin2);
    let all = get_json(admin2, "/api/records?limit=1000&url=before=").await;
    let before = all["records"].as_array().unwrap();
    assert_eq!(
        before.len(),
        300,
        "records older than a second survive kill -9"
    );
    let max_id = before
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .max()
        .unwrap();
    // New records continue after the old ids.
    get_once(second.addr, origin, "/small?after").await.unwrap();
    let after = wait_until(admin2, "new record", |rows| {
        rows.iter()
            .any(|r| r["url"].as_str().unwrap().ends_with("?after"))
    })
    .await;
    let new_id = after
        .iter()
        .find(|r| r["url"].as_str().unwrap().ends_with("?after"))
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    assert!(new_id > max_id);
    drop(second);
    // The file itself is sound.
    let conn = rusqlite::Connection::open(dir.path().join("records.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn a_store_that_is_not_a_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("records.db"), vec![0x42u8; 8192]).unwrap();
    let origin = origin::http().await;
    let proxy = proxy_with(|r| r.data_dir = DataDir::Path(dir.path().to_path_buf())).await;
    let admin = proxy.admin_addr.unwrap();
    get_once(proxy.addr, origin, "/small?fresh").await.unwrap();
    wait_until(admin, "recorded in a new store", |rows| rows.len() == 1).await;
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept beside the new one");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), vec![0x42u8; 8192]);
}

#[tokio::test]
async fn an_unwritable_data_dir_is_a_clear_start_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let bad = file.path().join("sub");
    let err = proxy::try_start(|c| {
        c.record.data_dir = DataDir::Path(bad.clone());
    })
    .await
    .err()
    .expect("start fails");
    let text = err.to_string();
    assert!(
        text.contains("data folder") && text.contains("sub"),
        "{text}"
    );
}

// Issue 11, finding 5: one data dir, one instance ------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_one_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let first = proxy::spawn(&["--data-dir", &data]).await;
    let token_before = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    // The second one must stop at once, before it touches the store or
    // the token file (on a shared dir it would overwrite both).
    let run = proxy::run_cli(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data-dir",
            &data,
        ],
        Duration::from_secs(10),
    )
    .await;
    assert!(matches!(run.code, Some(c) if c != 0), "{run:?}");
    let want = format!("data dir {data} is in use by sluice pid {}", first.pid());
    assert!(
        run.stderr.contains(&want),
        "want {want:?} in:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("sluice listening"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin.token")).unwrap(),
        token_before,
        "the holder's token file is untouched"
    );
    // The lock dies with its holder: a new instance starts (kill -9 too).
    drop(first);
    let again = proxy::spawn(&["--data-dir", &data]).await;
    assert!(again.admin.is_some());
    // In-process instances take the same lock.
    let e = proxy::try_start(|c| {
        c.record.data_dir = DataDir::Path(dir.path().to_path_buf());
    })
    .await
    .err()
    .expect("a second in-process instance is refused too");
    assert!(
        e.to_string().contains(&format!("pid {}", again.pid())),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_records_db_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious.txt");
    std::fs::write(&target, b"not for sluice to overwrite\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(&target, data.join("records.db")).unwrap();
    let data_s = data.to_str().unwrap().to_string();
    let run = proxy::run_cli(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data-dir",
            &data_s,
        ],
        Duration::from_secs(10),
    )
    .await;
    assert!(matches!(run.code, Some(c) if c != 0), "{run:?}");
    assert!(
        run.stderr.contains("records.db") && run.stderr.contains("symbolic link"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"not for sluice to overwrite\n",
        "the link's target is untouched (not moved aside, not a database)"
    );
    assert!(
        std::fs::symlink_metadata(data.join("records.db"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself is left for the user to look at"
    );
}
