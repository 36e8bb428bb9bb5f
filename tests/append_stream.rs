//! The append stream against the local server over real HTTP, no kernel: exactly-once under
//! injected faults, a foreign writer racing an O_APPEND stream, a positional writer whose object
//! changed, write boundaries kept inside chunks, and the dirty-bytes bound.

use std::sync::Arc;
use std::time::Duration;

use appendfs::client::{Client, ClientConfig, CreateOptions};
use appendfs::fs::append::budget::DirtyBudget;
use appendfs::fs::append::rescue::Rescue;
use appendfs::fs::append::{AppendStream, Shared, StreamConfig, WriteMark};
use appendfs::fs::FsError;
use appendfs::oss::{crc64, Credentials, ObjectType};
use appendfs::server::{self, FaultPlan, RunningServer, ServerConfig};
use bytes::Bytes;

fn creds() -> Credentials {
    Credentials::new("AKIDSTREAM", "stream-secret")
}

async fn setup() -> (RunningServer, Client) {
    let srv = server::start(
        ServerConfig {
            credentials: Some(creds()),
            buckets: vec!["bkt".into()],
            fault_seed: 11,
            ..ServerConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut cfg = ClientConfig::new(&srv.endpoint(), "bkt").unwrap();
    cfg.request_timeout = Duration::from_secs(5);
    let client = Client::with_credentials(cfg, creds()).unwrap();
    (srv, client)
}

fn stream_cfg(chunk: u64, interval_ms: u64) -> Arc<StreamConfig> {
    Arc::new(StreamConfig {
        chunk_size: chunk,
        flush_interval: Duration::from_millis(interval_ms),
        create: CreateOptions::default(),
        give_up_after: Duration::from_secs(60),
    })
}

/// A stream over the HTTP client, with a rescue file in a fresh temporary directory.
fn start(
    key: &str,
    position: u64,
    crc: u64,
    client: &Client,
    config: Arc<StreamConfig>,
    budget: Arc<DirtyBudget>,
) -> Arc<AppendStream> {
    let dir = std::env::temp_dir().join(format!("appendfs-stream-rescue-{}", std::process::id()));
    let shared = Arc::new(Shared {
        store: Arc::new(client.clone()),
        config,
        budget,
        rescue: Arc::new(Rescue::new(dir)),
        cancel: tokio::sync::watch::channel(false).1,
    });
    AppendStream::start(key.to_string(), position, crc, shared)
}

async fn content(client: &Client, key: &str) -> Bytes {
    client.get_object_bytes(key, None).await.unwrap().data
}

async fn flush_all(stream: &AppendStream, last: u64) -> Result<(), FsError> {
    let mut mark = WriteMark {
        last_end: last,
        flushed: 0,
    };
    tokio::time::timeout(Duration::from_secs(60), stream.flush(0, &mut mark))
        .await
        .expect("flush timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_faults() {
    let (srv, client) = setup().await;
    client
        .append_object("log", 0, Bytes::new(), &CreateOptions::default())
        .await
        .unwrap();
    let stream = start(
        "log",
        0,
        0,
        &client,
        stream_cfg(256, 5),
        Arc::new(DirtyBudget::new(1 << 20)),
    );
    // Every kind of ambiguity: answers lost after applying, connections reset before, 500s.
    srv.set_faults(
        FaultPlan::parse("lost-response:0.25,reset:0.1,error500:0.1,throttle503:0.05").unwrap(),
    );
    let mut expected = Vec::new();
    let mut last = 0;
    for i in 0..400 {
        let line = format!("line {i:04} {}\n", "x".repeat(i % 37));
        expected.extend_from_slice(line.as_bytes());
        last = stream.write(0, line.as_bytes(), true).await.unwrap();
        if i % 50 == 49 {
            flush_all(&stream, last).await.unwrap();
        }
    }
    flush_all(&stream, last).await.unwrap();
    srv.set_faults(FaultPlan::none());
    let got = content(&client, "log").await;
    assert_eq!(got.len(), expected.len(), "no byte lost or duplicated");
    assert_eq!(got.as_ref(), expected.as_slice());
    let head = client.head_object("log").await.unwrap();
    assert_eq!(head.crc64, Some(crc64::checksum(&expected)));
    assert_eq!(
        stream.remote(),
        (expected.len() as u64, crc64::checksum(&expected))
    );
    let stats = srv.stats();
    eprintln!("server requests under faults: {stats:?}");
    assert!(
        stats.get("HeadObject").copied().unwrap_or(0) > 0,
        "ambiguous outcomes were checked with HEAD"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_mode_moves_past_a_foreign_writer() {
    let (srv, client) = setup().await;
    client
        .append_object(
            "shared",
            0,
            Bytes::from_static(b"start\n"),
            &CreateOptions::default(),
        )
        .await
        .unwrap();
    let crc = crc64::checksum(b"start\n");
    let stream = start(
        "shared",
        6,
        crc,
        &client,
        stream_cfg(1 << 20, 5),
        Arc::new(DirtyBudget::new(1 << 20)),
    );
    let mut mine = Vec::new();
    for i in 0..30 {
        // Another host appends between our flushes, so our known position goes stale.
        let meta = client.head_object("shared").await.unwrap();
        let theirs = format!("other {i}\n");
        client
            .append_object(
                "shared",
                meta.size,
                Bytes::from(theirs),
                &CreateOptions::default(),
            )
            .await
            .unwrap();
        let line = format!("mine {i}\n");
        mine.push(line.clone());
        let end = stream.write(0, line.as_bytes(), true).await.unwrap();
        flush_all(&stream, end).await.unwrap();
    }
    let text = String::from_utf8(content(&client, "shared").await.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 61, "{text}");
    let my_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("mine"))
        .collect();
    let expect: Vec<String> = (0..30).map(|i| format!("mine {i}")).collect();
    assert_eq!(my_lines, expect, "each of ours exactly once, in order");
    for i in 0..30 {
        assert_eq!(
            lines.iter().filter(|l| **l == format!("other {i}")).count(),
            1
        );
    }
    let head = client.head_object("shared").await.unwrap();
    assert_eq!(head.crc64, Some(crc64::checksum(text.as_bytes())));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positional_writer_fails_when_the_object_changed() {
    let (srv, client) = setup().await;
    client
        .append_object(
            "pos",
            0,
            Bytes::from_static(b"abc"),
            &CreateOptions::default(),
        )
        .await
        .unwrap();
    let stream = start(
        "pos",
        3,
        crc64::checksum(b"abc"),
        &client,
        stream_cfg(1 << 20, 5),
        Arc::new(DirtyBudget::new(1 << 20)),
    );
    client
        .append_object(
            "pos",
            3,
            Bytes::from_static(b"XYZ"),
            &CreateOptions::default(),
        )
        .await
        .unwrap();
    // Not at the end as this stream knows it: refused at once with EPERM.
    let e = stream.write(10, b"nope", false).await.unwrap_err();
    assert_eq!(e.errno(), libc::EPERM);
    let end = stream.write(3, b"def", false).await.unwrap();
    let err = flush_all(&stream, end).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert_eq!(
        content(&client, "pos").await.as_ref(),
        b"abcXYZ",
        "nothing of ours was written over theirs"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_kept_whole_inside_chunks() {
    let (srv, client) = setup().await;
    let meta = client
        .append_object("w", 0, Bytes::new(), &CreateOptions::default())
        .await
        .unwrap();
    assert_eq!(meta.next_position, 0);
    // 100-byte chunks, 30-byte writes: 3 writes per AppendObject, never a split write.
    let stream = start(
        "w",
        0,
        0,
        &client,
        stream_cfg(100, 10_000),
        Arc::new(DirtyBudget::new(1 << 20)),
    );
    let before = srv.stats().get("AppendObject").copied().unwrap_or(0);
    let mut last = 0;
    for i in 0..9 {
        last = stream
            .write(0, format!("{i:029}\n").as_bytes(), true)
            .await
            .unwrap();
    }
    flush_all(&stream, last).await.unwrap();
    let appends = srv.stats()["AppendObject"] - before;
    assert_eq!(appends, 3, "9 writes of 30 bytes in 100-byte chunks");
    // A write larger than a chunk is the one case that is split.
    let big = vec![b'z'; 250];
    let last = stream.write(0, &big, true).await.unwrap();
    flush_all(&stream, last).await.unwrap();
    assert_eq!(srv.stats()["AppendObject"] - before, 6);
    assert_eq!(content(&client, "w").await.len(), 270 + 250);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_triggers_a_flush_and_dirty_bytes_stay_bounded() {
    let (srv, client) = setup().await;
    client
        .append_object("age", 0, Bytes::new(), &CreateOptions::default())
        .await
        .unwrap();
    let budget = Arc::new(DirtyBudget::new(4096));
    let stream = start("age", 0, 0, &client, stream_cfg(1024, 50), budget.clone());
    stream.write(0, b"fresh\n", true).await.unwrap();
    // No flush call: the 50 ms interval alone must send it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.head_object("age").await.unwrap().size < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flush interval never sent the bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Slow server: writers must wait instead of buffering without bound.
    srv.set_faults(FaultPlan::parse("delay:20").unwrap());
    let watcher = {
        let budget = budget.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..300 {
                peak = peak.max(budget.used());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            peak
        })
    };
    let mut last = 0;
    for _ in 0..200 {
        last = stream.write(0, &[b'q'; 100], true).await.unwrap();
    }
    flush_all(&stream, last).await.unwrap();
    let peak = watcher.await.unwrap();
    assert!(peak <= 4096, "dirty bytes peaked at {peak}");
    assert_eq!(budget.used(), 0);
    let meta = client.head_object("age").await.unwrap();
    assert_eq!(
        (meta.size, meta.object_type),
        (6 + 20_000, Some(ObjectType::Appendable))
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_lines_from_two_writers_are_all_kept() {
    // Two mounts (two streams) appending the same line: a 409 caused by the other writer's
    // identical bytes must not be mistaken for our own earlier success.
    let (srv, client) = setup().await;
    client
        .append_object("hb", 0, Bytes::new(), &CreateOptions::default())
        .await
        .unwrap();
    let budget = Arc::new(DirtyBudget::new(1 << 20));
    let a = start("hb", 0, 0, &client, stream_cfg(1 << 20, 5), budget.clone());
    let b = start("hb", 0, 0, &client, stream_cfg(1 << 20, 5), budget);
    let run = |s: Arc<AppendStream>| async move {
        for _ in 0..150 {
            let end = s.write(0, b"heartbeat\n", true).await.unwrap();
            flush_all(&s, end).await.unwrap();
        }
    };
    tokio::join!(run(a), run(b));
    let got = content(&client, "hb").await;
    assert_eq!(
        got.len(),
        300 * 10,
        "every heartbeat of both writers exactly once"
    );
    assert!(got.chunks(10).all(|l| l == b"heartbeat\n"));
    srv.shutdown().await;
}
