//! The local server seen from raw HTTP: fault injection really drops connections (before or
//! after applying the request), no object key can put a file outside the data directory,
//! `latency` / `bandwidth` shape answers only when set, and the accounting counts rejected
//! requests and body bytes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use appendfs::server::{self, FaultPlan, ServerConfig, Storage};

fn anonymous(storage: Storage) -> ServerConfig {
    ServerConfig {
        storage,
        anonymous: true,
        buckets: vec!["bkt".into()],
        ..ServerConfig::default()
    }
}

/// Sends one raw HTTP/1.1 request and returns everything the server wrote before closing.
fn raw(addr: std::net::SocketAddr, request: &str, body: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn append_req(key: &str, position: u64, body: &[u8]) -> String {
    format!(
        "POST /bkt/{key}?append&position={position} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
}

fn head_len(addr: std::net::SocketAddr, key: &str) -> Option<u64> {
    let resp = raw(
        addr,
        &format!("HEAD /bkt/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        b"",
    );
    let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_drops_before_applying_and_lost_response_after() {
    let srv = server::start(anonymous(Storage::Memory), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = srv.addr();

    srv.set_faults(FaultPlan::parse("reset:1").unwrap());
    let out = tokio::task::spawn_blocking(move || raw(addr, &append_req("f", 0, b"abc"), b"abc"))
        .await
        .unwrap();
    assert!(
        out.is_empty(),
        "reset must close without an answer, got {out:?}"
    );
    srv.set_faults(FaultPlan::none());
    assert_eq!(
        tokio::task::spawn_blocking(move || head_len(addr, "f"))
            .await
            .unwrap(),
        None
    );

    srv.set_faults(FaultPlan::parse("lost-response:1").unwrap());
    let out = tokio::task::spawn_blocking(move || raw(addr, &append_req("f", 0, b"abc"), b"abc"))
        .await
        .unwrap();
    assert!(out.is_empty(), "lost-response must close without an answer");
    srv.set_faults(FaultPlan::none());
    assert_eq!(
        tokio::task::spawn_blocking(move || head_len(addr, "f"))
            .await
            .unwrap(),
        Some(3),
        "lost-response applies the request"
    );

    srv.set_faults(FaultPlan::parse("error500:1").unwrap());
    let out = tokio::task::spawn_blocking(move || raw(addr, &append_req("f", 3, b"de"), b"de"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 500"), "{text}");
    assert!(text.contains("<Code>InternalError</Code>"), "{text}");
    srv.set_faults(FaultPlan::none());
    assert_eq!(
        tokio::task::spawn_blocking(move || head_len(addr, "f"))
            .await
            .unwrap(),
        Some(3)
    );
    // Only the lost-response append reached the operation; injected resets and 500s did not.
    assert_eq!(
        srv.stats().get("AppendObject"),
        Some(&1),
        "{:?}",
        srv.stats()
    );
    srv.shutdown().await;
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_stay_inside_the_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data-dir");
    let srv = server::start(
        anonymous(Storage::Dir(data.clone())),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = srv.addr();
    let keys = [
        "..%2F..%2Fescape",
        "../../escape2",
        "a/../../../escape3",
        "%2Fabs%2Fpath",
        "a",
        "a%2Fb",
        "sp%20ace%25.log",
        "%E6%97%A5%E5%BF%97",
    ];
    for (i, k) in keys.iter().enumerate() {
        let body = format!("body{i}");
        let out = tokio::task::spawn_blocking({
            let k = k.to_string();
            move || raw(addr, &append_req(&k, 0, body.as_bytes()), body.as_bytes())
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out);
        // hyper normalises nothing, so `..` segments reach us as part of the key.
        assert!(text.starts_with("HTTP/1.1 200"), "{k}: {text}");
    }
    srv.shutdown().await;
    let mut all = Vec::new();
    files_under(root.path(), &mut all);
    for f in &all {
        assert!(
            f.starts_with(&data),
            "file outside the data dir: {}",
            f.display()
        );
    }
    // One data file per object, plus the index.
    assert_eq!(all.len(), keys.len() + 1, "{all:?}");

    // Reopen: every object is still there with its bytes.
    let srv = server::start(
        anonymous(Storage::Dir(data)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = srv.addr();
    for k in keys {
        let got = tokio::task::spawn_blocking(move || head_len(addr, k))
            .await
            .unwrap();
        assert_eq!(got, Some(5), "{k}");
    }
    srv.shutdown().await;
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = std::time::Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// The body of a raw HTTP/1.1 answer (everything after the blank line).
fn body_of(resp: &[u8]) -> &[u8] {
    resp.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |i| &resp[i + 4..])
}

async fn shaped(latency: Option<Duration>, bandwidth: Option<u64>) -> server::RunningServer {
    let srv = server::start(
        ServerConfig {
            latency,
            bandwidth,
            ..anonymous(Storage::Memory)
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let data: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let attrs = appendfs::server::store::CreateAttrs {
        content_type: "application/octet-stream".into(),
        storage_class: "Standard".into(),
        ..Default::default()
    };
    srv.store()
        .put("bkt", "big", data.into(), &attrs, false)
        .unwrap();
    srv
}

const GET_BIG: &str = "GET /bkt/big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
const HEAD_BIG: &str = "HEAD /bkt/big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_bandwidth_shape_only_when_asked() {
    let slow_first_byte = shaped(Some(Duration::from_millis(50)), None).await;
    let narrow = shaped(None, Some(16 * 1024 * 1024)).await;
    let plain = shaped(None, None).await;
    let (a, b, c) = (slow_first_byte.addr(), narrow.addr(), plain.addr());
    let check = |resp: &[u8], head: bool| {
        let text = String::from_utf8_lossy(&resp[..resp.len().min(200)]).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body = body_of(resp);
        if head {
            assert!(body.is_empty());
        } else {
            assert_eq!(body.len(), 16 * 1024 * 1024);
            assert!(body.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
        }
    };
    let timings = tokio::task::spawn_blocking(move || {
        let (r1, head_latency) = timed(|| raw(a, HEAD_BIG, b""));
        let (r2, get_narrow) = timed(|| raw(b, GET_BIG, b""));
        let (r3, head_plain) = timed(|| raw(c, HEAD_BIG, b""));
        let (r4, get_plain) = timed(|| raw(c, GET_BIG, b""));
        check(&r1, true);
        check(&r2, false);
        check(&r3, true);
        check(&r4, false);
        (head_latency, get_narrow, head_plain, get_plain)
    })
    .await
    .unwrap();
    let (head_latency, get_narrow, head_plain, get_plain) = timings;
    eprintln!(
        "HEAD --latency 50ms: {head_latency:?}; GET 16 MiB --bandwidth 16MiB: {get_narrow:?}; \
         unshaped HEAD {head_plain:?}, GET {get_plain:?}"
    );
    assert!(
        head_latency >= Duration::from_millis(50),
        "{head_latency:?}"
    );
    // 16 MiB at 16 MiB/s is a second, less the 50 ms the token bucket may hold at the start.
    assert!(get_narrow >= Duration::from_millis(800), "{get_narrow:?}");
    // Only loose upper bounds: the machine is shared.
    assert!(head_plain < Duration::from_millis(500), "{head_plain:?}");
    assert!(get_plain < Duration::from_millis(500), "{get_plain:?}");
    for s in [slow_first_byte, narrow, plain] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_rejected_requests_and_bytes() {
    let open = server::start(anonymous(Storage::Memory), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let locked = server::start(
        ServerConfig {
            credentials: Some(appendfs::oss::Credentials::new("AKIDSTATS", "stats-secret")),
            buckets: vec!["bkt".into()],
            ..ServerConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let (o, l) = (open.addr(), locked.addr());
    let stats_json = tokio::task::spawn_blocking(move || {
        let put = raw(
            o,
            "PUT /bkt/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            b"hello",
        );
        assert!(String::from_utf8_lossy(&put).starts_with("HTTP/1.1 200"));
        let get = raw(
            o,
            "GET /bkt/k HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            b"",
        );
        assert_eq!(body_of(&get), b"hello");
        // POST without a sub-resource: 405, after reading (and counting) its small body.
        let post = raw(
            o,
            "POST /bkt/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            b"abc",
        );
        assert!(String::from_utf8_lossy(&post).starts_with("HTTP/1.1 405"));
        // Unsigned against a server with credentials: 403 before the operation runs.
        let denied = raw(
            l,
            "GET /bkt/k HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            b"",
        );
        assert!(String::from_utf8_lossy(&denied).starts_with("HTTP/1.1 403"));
        let stats = |addr| {
            let r = raw(
                addr,
                "GET /_appendfs/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                b"",
            );
            serde_json::from_slice::<serde_json::Value>(body_of(&r)).unwrap()
        };
        (stats(o), stats(l))
    })
    .await
    .unwrap();
    let (open_json, locked_json) = stats_json;
    let t = open.traffic();
    assert_eq!(serde_json::to_value(&t).unwrap(), open_json);
    let put = &t.operations["PutObject"];
    assert_eq!(
        (put.requests, put.status_2xx, put.bytes_received),
        (1, 1, 5)
    );
    let get = &t.operations["GetObject"];
    assert_eq!((get.requests, get.status_2xx), (1, 1));
    // The GET answered with the 5 stored bytes.
    assert_eq!(get.bytes_sent, 5);
    let unknown = &t.operations["Unknown"];
    assert_eq!((unknown.requests, unknown.status_4xx), (1, 1));
    assert_eq!(unknown.bytes_received, 3);
    assert!(unknown.bytes_sent > 0, "the 405 has an XML body");
    assert_eq!(t.total.requests, 3);
    assert_eq!(t.total.bytes_received, 8);
    // The old per-operation counts keep their meaning: requests that reached the operation.
    assert_eq!(open.stats().get("Unknown"), None);
    assert_eq!(open.stats().get("PutObject"), Some(&1));

    assert_eq!(locked_json["operations"]["GetObject"]["4xx"], 1);
    assert_eq!(locked_json["operations"]["GetObject"]["2xx"], 0);
    assert_eq!(locked_json["total"]["requests"], 1);
    assert_eq!(
        locked.stats().get("GetObject"),
        None,
        "{:?}",
        locked.stats()
    );
    open.shutdown().await;
    locked.shutdown().await;
}
