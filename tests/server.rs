//! The local server seen from raw HTTP: fault injection really drops connections (before or
//! after applying the request), and no object key can put a file outside the data directory.

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
