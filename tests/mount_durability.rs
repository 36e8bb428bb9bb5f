//! Nothing acknowledged is lost or duplicated, through real mounts: a server restarted under a
//! writer, failures reported once and only to their own handles, names another host just
//! created, creates and the startup check under faults, SIGTERM under a busy logger, SIGHUP,
//! stacked mounts, a shutdown against a server that never answers, renames under faults, and
//! two mounts with two writers each on one object under every fault at once.
//!
//! Run: `cargo test --test mount_durability -- --test-threads=2` (as root, with /dev/fuse).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use appendfs::oss::crc64;
use appendfs::server::FaultPlan;

mod common;
use common::*;

fn faults(spec: &str) -> FaultPlan {
    FaultPlan::parse(spec).expect("fault spec")
}

/// Finding 1: an `echo >>` running while the server is down for 3 s is delivered once the
/// server is back, and exits 0 only then.
#[test]
fn echo_while_the_server_restarts_is_delivered() {
    let mut oss = Oss::durable(|_| {});
    let m = Mount::bucket(&oss);
    sh_ok(m.dir(), "echo a >> f.log");
    oss.stop_server();
    let mnt = m.dir().to_path_buf();
    let echo = std::thread::spawn(move || sh_in(&mnt, "echo b >> f.log", Duration::from_secs(60)));
    std::thread::sleep(Duration::from_secs(3));
    oss.restart(None);
    let out = echo.join().expect("echo thread");
    assert!(out.ok(), "echo >> during the outage failed: {}", out.stderr);
    oss.assert_appendable("f.log", b"a\nb\n");
    assert!(m.rescued().is_empty());
    m.finish();
}

/// Finding 2: bytes that cannot be appended within the budget go to the rescue file; the next
/// `echo >>` fails visibly (once); later writers and their closes succeed and report only
/// their own bytes.
#[test]
fn a_failed_append_is_rescued_and_told_once() {
    let mut oss = Oss::durable(|_| {});
    let mut m = Mount::bucket_with(&oss, &["--retry-budget", "1s"]);
    sh_ok(m.dir(), "echo a >> f.log");
    oss.stop_server();
    // The shell ignores the error of the close behind `>>`: this echo "succeeds".
    let _ = sh_in(m.dir(), "echo lost >> f.log", Duration::from_secs(60));
    oss.restart(None);
    let told = sh_in(m.dir(), "echo next >> f.log", SHORT);
    assert!(
        !told.ok() && told.stderr.contains("Input/output error"),
        "the first echo after the hole must fail with EIO: {told:?}"
    );
    sh_ok(m.dir(), "echo after >> f.log");
    // A close (fsync) of a new handle reports only its own bytes: success.
    sh_ok(
        m.dir(),
        "printf 'dd\\n' | dd of=f.log oflag=append conv=notrunc,fsync status=none",
    );
    oss.assert_appendable("f.log", b"a\nafter\ndd\n");
    let recs = m.rescued();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].key, "f.log");
    assert_eq!(recs[0].position, 2);
    assert_eq!(recs[0].data, b"lost\n");
    let log = m.log();
    assert!(
        log.contains("rescue"),
        "the log names the rescue file:\n{log}"
    );
    // A rescue during the mount's life makes the exit status 1.
    let status = m.stop();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", m.log());
}

/// Finding 3: a name another mount just created, while this mount remembers it missing:
/// `echo >>` appends to it, and `O_CREAT|O_EXCL` is EEXIST.
#[test]
fn a_name_another_host_just_created() {
    let oss = Oss::start();
    let a = Mount::bucket(&oss);
    let b = Mount::bucket(&oss);
    assert!(!b.path("x.log").exists(), "missing at first");
    sh_ok(a.dir(), "echo a >> x.log");
    sh_ok(b.dir(), "echo b >> x.log");
    let excl = sh_in(
        b.dir(),
        "python3 -c \"import os; os.open('x.log', os.O_CREAT | os.O_EXCL | os.O_WRONLY)\"",
        SHORT,
    );
    assert!(
        !excl.ok() && excl.stderr.contains("FileExistsError"),
        "O_EXCL on an existing object must fail with EEXIST: {excl:?}"
    );
    oss.assert_appendable("x.log", b"a\nb\n");
    b.finish();
    a.finish();
}

/// Findings 4 and 5: the mount starts against a server answering 500 and 503 part of the
/// time, and `echo >> new` under 30 % 500s, then under 50 % lost responses, succeeds once
/// each.
#[test]
fn creates_and_the_startup_check_under_faults() {
    let mut oss = Oss::durable(|c| {
        c.faults = faults("error500:0.1,throttle503:0.05");
        c.fault_seed = 7;
    });
    let m = Mount::bucket(&oss);
    for (round, spec) in ["error500:0.3", "lost-response:0.5"]
        .into_iter()
        .enumerate()
    {
        oss.restart(Some(faults(spec)));
        for i in 0..20 {
            // Generous: half the answers lost means retries with backoff on every call.
            let cmd = format!("echo line{i} >> new{round}-{i}.log");
            let o = sh_in(m.dir(), &cmd, Duration::from_secs(120));
            assert!(o.ok(), "`{cmd}` under {spec} failed: {}", o.stderr);
        }
    }
    oss.restart(Some(FaultPlan::none()));
    for round in 0..2 {
        for i in 0..20 {
            oss.assert_appendable(
                &format!("new{round}-{i}.log"),
                format!("line{i}\n").as_bytes(),
            );
        }
    }
    m.finish();
}

/// A logger that keeps its file open and writes numbered lines as fast as it can, reporting
/// on stdout how many writes succeeded once one fails or it is told to stop.
fn start_logger(dir: &std::path::Path, file: &str) -> std::process::Child {
    let script = format!(
        r#"
import os, signal, sys
fd = os.open({file:?}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
n = 0
stop = False
def done(*_):
    global stop
    stop = True
signal.signal(signal.SIGUSR1, done)
while not stop:
    try:
        os.write(fd, b"line %08d\n" % n)
    except OSError as e:
        print("error", e.errno, file=sys.stderr)
        break
    n += 1
print(n, flush=True)
try:
    os.close(fd)
except OSError:
    pass
"#
    );
    Command::new("python3")
        .args(["-c", &script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the logger")
}

fn logger_count(child: &mut std::process::Child) -> u64 {
    let status = wait_timeout(child, Duration::from_secs(60)).expect("logger ends");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("count");
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("logger printed {line:?} ({status})"))
}

/// Finding 6: SIGTERM while a logger keeps writing: every write it saw succeed is on OSS or
/// in the rescue file, and the exit status says which.
#[test]
fn sigterm_under_a_busy_logger_loses_no_acknowledged_line() {
    let oss = Oss::start();
    let mut m = Mount::bucket(&oss);
    let mut logger = start_logger(m.dir(), "busy.log");
    std::thread::sleep(Duration::from_millis(1500));
    let status = m.stop().expect("the mount ends on SIGTERM");
    let acked = logger_count(&mut logger);
    assert!(acked > 0, "the logger wrote nothing");
    let mut have: Vec<u8> = oss.get("busy.log");
    let recs = m.rescued();
    for r in &recs {
        have.extend_from_slice(&r.data);
    }
    let text = String::from_utf8(have).unwrap();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in text.lines() {
        *seen.entry(l).or_default() += 1;
    }
    for n in 0..acked {
        let l = format!("line {n:08}");
        assert_eq!(
            seen.get(l.as_str()).copied().unwrap_or(0),
            1,
            "acknowledged {l:?} (of {acked}) not on OSS exactly once\n{}",
            m.log()
        );
    }
    assert_eq!(
        status.code(),
        Some(if recs.is_empty() { 0 } else { 1 }),
        "exit status must say whether bytes went to the rescue file"
    );
    let m2 = oss.head("busy.log");
    assert_eq!(m2.crc64, Some(crc64::checksum(&oss.get("busy.log"))));
}

/// Finding 6: SIGHUP reopens the log file and keeps the mount alive; a second mount on the
/// same directory is refused with a message.
#[test]
fn sighup_reopens_the_log_and_mounts_do_not_stack() {
    let oss = Oss::start();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("a.log");
    let log_arg = format!("--log-file={}", log.display());
    let m = Mount::bucket_with(&oss, &[log_arg.as_str()]);
    sh_ok(m.dir(), "echo one >> f.log");
    std::fs::rename(&log, logs.path().join("a.log.1")).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(m.pid().unwrap() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + SHORT;
    while !log.exists() {
        assert!(Instant::now() < deadline, "SIGHUP did not reopen the log");
        std::thread::sleep(Duration::from_millis(50));
    }
    sh_ok(m.dir(), "echo two >> f.log");
    oss.assert_appendable("f.log", b"one\ntwo\n");
    let again = run(
        &mut mount_command(
            &oss.endpoint(),
            &format!("oss://{BUCKET}"),
            m.dir(),
            &["-f"],
        ),
        SHORT,
    );
    assert!(
        !again.ok(),
        "a second mount on a mounted directory must fail"
    );
    assert!(
        again.stderr.contains("already holds a FUSE mount"),
        "{}",
        again.stderr
    );
    m.finish();
}

/// Finding 7: three dirty files and a server that accepts and never answers: the drain runs in
/// parallel under --shutdown-grace, the bytes go to the rescue file, the exit status is 1.
#[test]
fn shutdown_against_a_silent_server_ends_within_the_grace() {
    let mut oss = Oss::start();
    let mut m = Mount::bucket_with(&oss, &["--flush-interval", "60s", "--shutdown-grace", "3s"]);
    for i in 0..3 {
        sh_ok(m.dir(), &format!("echo start > f{i}.log"));
    }
    // Buffered (the flush interval is a minute) by a writer that keeps its file open.
    let mut feeders: Vec<Feeder> = (0..3)
        .map(|i| Feeder::open(m.dir(), &format!("f{i}.log")))
        .collect();
    for (i, f) in feeders.iter_mut().enumerate() {
        f.write(format!("pending {i}\n").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(300));
    oss.stop_server();
    let hole = std::net::TcpListener::bind(oss.addr).expect("bind the silent server");
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        hole.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(40);
        while Instant::now() < end {
            if let Ok((c, _)) = hole.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let started = Instant::now();
    let status = m.stop();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "shutdown took {took:?} with a 3 s grace"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", m.log());
    let recs = m.rescued();
    for i in 0..3 {
        let want = format!("pending {i}\n");
        assert!(
            recs.iter()
                .any(|r| r.key == format!("f{i}.log") && r.data == want.as_bytes()),
            "f{i}.log's buffered line is not in the rescue file: {recs:?}"
        );
    }
    drop(feeders);
    drop(held);
}

/// Finding 8: `mv` of appendable files under faults: each rename either happens whole (the
/// destination holds every byte, the source is gone) or not at all; never a partial copy.
#[test]
fn renames_under_faults_are_whole_or_nothing() {
    let mut oss = Oss::durable(|_| {});
    let m = Mount::bucket(&oss);
    let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(m.path("src.bin"), &body).unwrap();
    for i in 0..6 {
        sh_ok(m.dir(), &format!("cp src.bin s{i}.bin"));
    }
    oss.restart(Some(faults("error500:0.1,lost-response:0.1,reset:0.05")));
    for i in 0..6 {
        let _ = sh_in(
            m.dir(),
            &format!("mv s{i}.bin d{i}.bin"),
            Duration::from_secs(60),
        );
    }
    oss.restart(Some(FaultPlan::none()));
    for i in 0..6 {
        let (s, d) = (format!("s{i}.bin"), format!("d{i}.bin"));
        match (oss.missing(&s), oss.missing(&d)) {
            (true, false) => oss.assert_appendable(&d, &body),
            (false, true) => oss.assert_appendable(&s, &body),
            other => panic!("rename {i} left source/destination missing = {other:?}"),
        }
    }
    m.finish();
}

/// The issue's check: two mounts × two writers on one object under 10 % 500s, 5 % 503s, 5 %
/// resets and 10 % lost responses: every line once, in each writer's order, the object's CRC
/// equal to its content's, no write error.
#[test]
fn two_mounts_two_writers_under_every_fault() {
    let oss = Oss::durable(|c| {
        c.faults = faults("error500:0.1,throttle503:0.05,reset:0.05,lost-response:0.1");
        c.fault_seed = 3;
    });
    let a = Mount::bucket(&oss);
    let b = Mount::bucket(&oss);
    sh_ok(a.dir(), ": > shared.log");
    let per = 40;
    let writers: Vec<_> = [(&a, "a1"), (&a, "a2"), (&b, "b1"), (&b, "b2")]
        .into_iter()
        .map(|(m, id)| {
            let dir = m.dir().to_path_buf();
            let id = id.to_string();
            std::thread::spawn(move || {
                for n in 0..per {
                    sh_ok(&dir, &format!("echo {id}-{n:03} >> shared.log"));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let mut oss = oss;
    oss.restart(Some(FaultPlan::none()));
    let content = oss.get("shared.log");
    let text = String::from_utf8(content.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4 * per, "every line once: {text}");
    for id in ["a1", "a2", "b1", "b2"] {
        let mine: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(id))
            .collect();
        let want: Vec<String> = (0..per).map(|n| format!("{id}-{n:03}")).collect();
        assert_eq!(mine, want, "{id}'s lines once each, in order");
    }
    oss.assert_appendable("shared.log", &content);
    b.finish();
    a.finish();
}
