//! `--metrics-addr` through real mounts: the `/metrics` counters match the requests a test made
//! (and the server's own count), other paths are 404, a stalled server shows up as a backlog
//! warning (once per threshold while it lasts, then "cleared"), and unmount logs a summary.
//!
//! Run: `cargo test --test metrics` (as root, with /dev/fuse).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use appendfs::server::FaultPlan;

mod common;
use common::*;

/// The metrics address the mount logged (it was started on port 0).
fn metrics_addr(m: &Mount) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = m.log();
        if let Some(addr) = log
            .split("serving metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split("/metrics").next())
        {
            return addr.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Sample lines `name{labels} value` of the exposition, by `name{labels}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn sum(s: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            (k.as_str() == name || k.starts_with(&format!("{name}{{")))
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn counters_match_the_requests_made() {
    let oss = Oss::start();
    let m = Mount::bucket_with(&oss, &["--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&m);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let lines = ["one\n", "two two\n", "three three three\n"];
    sh_ok(
        m.dir(),
        "echo one >> a.log && echo 'two two' >> a.log && echo 'three three three' >> a.log && cat a.log",
    );
    let written: usize = lines.iter().map(|l| l.len()).sum();

    let (status, text) = http_get(&addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    let s = samples(&text);
    let server = oss.stats();
    let appends = sum(&s, "appendfs_oss_requests_total", &["op=\"AppendObject\""]) as u64;
    // Three appends and the create (an empty append at position 0).
    assert!(appends >= 3, "{text}");
    assert_eq!(
        Some(&appends),
        server.get("AppendObject"),
        "server: {server:?}\n{text}"
    );
    assert_eq!(
        sum(
            &s,
            "appendfs_oss_requests_total",
            &["op=\"AppendObject\"", "outcome=\"ok\""]
        ) as u64,
        appends,
        "{text}"
    );
    assert_eq!(
        sum(&s, "appendfs_appended_bytes_total", &[]) as usize,
        written,
        "{text}"
    );
    let gets = sum(&s, "appendfs_oss_requests_total", &["op=\"GetObject\""]) as u64;
    assert!(gets >= 1, "cat must have read from OSS: {text}");
    assert_eq!(
        Some(&gets),
        server.get("GetObject"),
        "server: {server:?}\n{text}"
    );
    let sent = oss.server.as_ref().unwrap().traffic();
    let get_bytes = sent.operations.get("GetObject").map_or(0, |t| t.bytes_sent);
    assert_eq!(
        sum(&s, "appendfs_read_bytes_total", &[]) as u64,
        get_bytes,
        "{text}"
    );
    assert!(get_bytes >= written as u64, "{get_bytes}");
    // Every AppendObject round trip is in the histogram.
    assert_eq!(
        sum(&s, "appendfs_append_latency_seconds_count", &[]) as u64,
        appends,
        "{text}"
    );
    assert_eq!(sum(&s, "appendfs_buffered_bytes", &[]), 0.0, "{text}");
    assert_eq!(
        sum(&s, "appendfs_oldest_unsent_age_seconds", &[]),
        0.0,
        "{text}"
    );
    // Read through the test's own client only now: the server counts its GET too.
    assert_eq!(oss.get("a.log"), lines.concat().as_bytes());

    // A refusal by design is counted by errno.
    sh_fails(
        m.dir(),
        "printf x | dd of=a.log bs=1 seek=1 conv=notrunc",
        "not permitted",
    );
    let (_, text) = http_get(&addr, "/metrics");
    let s = samples(&text);
    assert!(
        sum(
            &s,
            "appendfs_fs_errors_total",
            &["errno=\"EPERM\"", "class=\"refusal\""]
        ) >= 1.0,
        "{text}"
    );

    let (status, _) = http_get(&addr, "/");
    assert_eq!(status, 404);
    let (status, _) = http_get(&addr, "/metrics/x");
    assert_eq!(status, 404);

    let log = m.finish();
    let summary = log
        .lines()
        .find(|l| l.contains("counters at unmount"))
        .unwrap_or_else(|| panic!("no summary at unmount:\n{log}"));
    assert!(
        summary.contains(&format!("appended_bytes={written}")) && summary.contains("AppendObject="),
        "{summary}"
    );
    assert!(!log.contains(SK), "the secret must never be logged");
}

#[test]
fn a_stalled_server_shows_as_a_backlog_warning() {
    let oss = Oss::start();
    // -o form, and a 1 s threshold so the test takes seconds.
    let m = Mount::bucket_with(
        &oss,
        &[
            "-o",
            "metrics_addr=127.0.0.1:0",
            "--backlog-warn-after",
            "1s",
        ],
    );
    let addr = metrics_addr(&m);
    sh_ok(m.dir(), ": >> b.log");
    // Every request now waits 6 s before it is answered.
    oss.server
        .as_ref()
        .unwrap()
        .set_faults(FaultPlan::parse("delay:6000").unwrap());
    let mut feeder = Feeder::open(m.dir(), "b.log");
    for i in 0..20 {
        feeder.write(format!("line {i}\n").as_bytes());
    }
    let stalled = Instant::now();
    let warning = "writer backlog";
    let deadline = stalled + Duration::from_secs(5);
    while !m.log().contains(warning) {
        assert!(
            Instant::now() < deadline,
            "no backlog warning within 5 s:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, text) = http_get(&addr, "/metrics");
    let s = samples(&text);
    assert!(
        sum(&s, "appendfs_oldest_unsent_age_seconds", &[]) >= 1.0,
        "{text}"
    );
    assert!(sum(&s, "appendfs_buffered_bytes", &[]) > 0.0, "{text}");

    oss.server.as_ref().unwrap().set_faults(FaultPlan::none());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m.log().contains("writer backlog cleared") {
        assert!(
            Instant::now() < deadline,
            "the backlog never cleared:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lasted = stalled.elapsed().as_secs();
    let log = m.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("writer backlog:"))
        .count() as u64;
    // While it lasts (more than once), but once per threshold, not per write.
    assert!(
        warnings >= 2 && warnings <= lasted + 2,
        "{warnings} warnings in {lasted} s:\n{log}"
    );
    feeder.close();
    let log = m.finish();
    assert!(log.contains("counters at unmount"), "{log}");
}
