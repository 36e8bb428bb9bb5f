//! Helpers shared by the real-mount tests: bounded execution of commands and syscalls,
//! an in-process OSS-compatible server with our client, foreground mounts on their own
//! temporary directories unmounted by guards, `tail -f` and long-lived writers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use appendfs::client::{Client, ClientConfig, CreateOptions, Credentials, ObjectMeta, ObjectType};
use appendfs::oss::crc64;
use appendfs::server::{self, RunningServer, ServerConfig};
use bytes::Bytes;

pub const BIN: &str = env!("CARGO_BIN_EXE_appendfs");
pub const AK: &str = "MOUNTTESTKEYID";
pub const SK: &str = "mount-test-secret";
pub const BUCKET: &str = "mnt-bkt";

/// Time limits. Generous: the point is that nothing waits forever, not to race the machine.
pub const MOUNT_LIVE: Duration = Duration::from_secs(20);
pub const UNMOUNT: Duration = Duration::from_secs(20);
pub const SHORT: Duration = Duration::from_secs(20);
pub const API: Duration = Duration::from_secs(30);
/// Bound on append → `tail -f` output. GNU tail polls `fstat` once a second on FUSE, the
/// mount's HEAD cache is at most 1 s old (metadata TTL) and a writer that keeps its file open
/// sends after at most 1 s (flush interval): about 3 s is the worst expected case.
pub const TAIL_BOUND: Duration = Duration::from_secs(5);

// -------------------------------------------------------------------------------------------
// Bounded execution

/// Runs `f` on its own thread and waits at most `limit` for it: a syscall stuck on a broken
/// mount fails the test instead of hanging it (the mount guard then detaches the mount, which
/// releases the thread).
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Waits for `child` at most `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Kills a child's whole process group (children are started with `process_group(0)`).
pub fn kill_group(child: &Child, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe { libc::kill(-(child.id() as i32), signal) };
}

#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub took: Duration,
}

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs a command to completion within `limit` (killing its process group otherwise, and
/// failing). Output goes to anonymous temporary files, not pipes, so a grandchild that keeps
/// them open (a daemonized mount) cannot block the reading.
pub fn run(cmd: &mut Command, limit: Duration) -> Out {
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let Some(status) = wait_timeout(&mut child, limit) else {
        kill_group(&child, libc::SIGKILL);
        let _ = wait_timeout(&mut child, Duration::from_secs(5));
        panic!("{shown} did not finish within {limit:?}");
    };
    let took = started.elapsed();
    let mut stdout = Vec::new();
    out.rewind().expect("rewind");
    out.read_to_end(&mut stdout).expect("read stdout");
    let mut stderr = String::new();
    err.rewind().expect("rewind");
    let mut raw = Vec::new();
    err.read_to_end(&mut raw).expect("read stderr");
    stderr.push_str(&String::from_utf8_lossy(&raw));
    Out {
        status,
        stdout,
        stderr,
        took,
    }
}

/// `sh -c script` in `dir`, bounded.
pub fn sh_in(dir: &Path, script: &str, limit: Duration) -> Out {
    run(
        Command::new("sh").arg("-c").arg(script).current_dir(dir),
        limit,
    )
}

/// As [`sh_in`], and it must succeed.
pub fn sh_ok(dir: &Path, script: &str) -> Out {
    let o = sh_in(dir, script, SHORT);
    assert!(
        o.ok(),
        "`{script}` in {} failed ({}): {}",
        dir.display(),
        o.status,
        o.stderr
    );
    o
}

/// As [`sh_in`], and it must fail with `message` (the strerror text) on stderr.
pub fn sh_fails(dir: &Path, script: &str, message: &str) -> Out {
    let o = sh_in(dir, script, SHORT);
    assert!(
        !o.ok(),
        "`{script}` succeeded but should have failed with {message:?}; stdout {:?}",
        o.stdout()
    );
    assert!(
        o.stderr.contains(message),
        "`{script}` failed ({}) without {message:?}: {:?}",
        o.status,
        o.stderr
    );
    o
}

pub fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

pub fn is_mounted(mountpoint: &Path) -> bool {
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// umount2(MNT_DETACH): never blocks.
pub fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).expect("path");
    // SAFETY: umount2 reads a NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Byte equality with a readable failure: lengths and the first difference.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let show = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.min(b.len())..(at + 80).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: {} bytes, {} expected; first difference at {at}: {:?} instead of {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// -------------------------------------------------------------------------------------------
// The server and the API side

/// An in-process server on 127.0.0.1 with the test bucket, and our client for it.
pub struct Oss {
    pub rt: Option<tokio::runtime::Runtime>,
    pub server: Option<RunningServer>,
    pub client: Client,
    /// What the server was started with, for a restart on the same port.
    pub config: ServerConfig,
    pub addr: std::net::SocketAddr,
    /// The data directory of a durable server (kept for as long as the server).
    pub data: Option<tempfile::TempDir>,
}

impl Oss {
    pub fn start() -> Oss {
        Oss::start_with(|_| {})
    }

    /// A server whose configuration `adjust` changes first (faults, storage, shaping).
    pub fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Oss {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = ServerConfig {
            credentials: Some(Credentials::new(AK, SK)),
            buckets: vec![BUCKET.into()],
            ..ServerConfig::default()
        };
        adjust(&mut config);
        let server = rt
            .block_on(server::start(
                config.clone(),
                "127.0.0.1:0".parse().unwrap(),
            ))
            .expect("the local server starts");
        let addr = server.addr();
        let mut cc = ClientConfig::new(&server.endpoint(), BUCKET).expect("client config");
        cc.request_timeout = Duration::from_secs(20);
        let client = Client::with_credentials(cc, Credentials::new(AK, SK)).expect("client");
        Oss {
            rt: Some(rt),
            server: Some(server),
            client,
            config,
            addr,
            data: None,
        }
    }

    /// A server keeping its objects in a temporary data directory, so that a restart (to
    /// change faults, or as an outage) keeps them.
    pub fn durable(adjust: impl FnOnce(&mut ServerConfig)) -> Oss {
        let data = tempfile::tempdir().expect("data dir");
        let dir = data.path().to_path_buf();
        let mut oss = Oss::start_with(|c| {
            c.storage = appendfs::server::Storage::Dir(dir);
            adjust(c);
        });
        oss.data = Some(data);
        oss
    }

    /// Stops the server (its port then refuses connections).
    pub fn stop_server(&mut self) {
        if let (Some(rt), Some(srv)) = (self.rt.as_ref(), self.server.take()) {
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), srv.shutdown()).await
            });
        }
    }

    /// Starts the server again on the same port with the same configuration (and, with a
    /// data directory, the same objects). `faults` replaces the fault plan.
    pub fn restart(&mut self, faults: Option<appendfs::server::FaultPlan>) {
        assert!(
            !matches!(self.config.storage, appendfs::server::Storage::Memory),
            "a memory server loses its objects on restart: use Oss::durable"
        );
        self.stop_server();
        if let Some(f) = faults {
            self.config.faults = f;
        }
        let rt = self.rt.as_ref().expect("runtime");
        let deadline = Instant::now() + SHORT;
        let server = loop {
            match rt.block_on(server::start(self.config.clone(), self.addr)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart on {}: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot restart the server on {}: {e}", self.addr),
            }
        };
        self.server = Some(server);
    }

    pub fn endpoint(&self) -> String {
        self.server.as_ref().expect("running").endpoint()
    }

    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.server.as_ref().expect("running").stats()
    }

    /// Runs an API call on the server's runtime, bounded.
    pub fn call<F: Future>(&self, what: &str, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("runtime")
            .block_on(async { tokio::time::timeout(API, f).await })
            .unwrap_or_else(|_| panic!("{what}: no answer within {API:?}"))
    }

    pub fn head(&self, key: &str) -> ObjectMeta {
        self.call("HEAD", self.client.head_object(key))
            .unwrap_or_else(|e| panic!("HEAD {key}: {e}"))
    }

    pub fn missing(&self, key: &str) -> bool {
        match self.call("HEAD", self.client.head_object(key)) {
            Ok(_) => false,
            Err(e) if e.is_no_such_key() => true,
            Err(e) => panic!("HEAD {key}: {e}"),
        }
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        self.call("GET", self.client.get_object_bytes(key, None))
            .unwrap_or_else(|e| panic!("GET {key}: {e}"))
            .data
            .to_vec()
    }

    pub fn put(&self, key: &str, data: &[u8]) {
        self.call(
            "PUT",
            self.client
                .put_object(key, Bytes::copy_from_slice(data), &CreateOptions::default()),
        )
        .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
    }

    /// Appends at the object's next position as an SDK program would (HEAD, then append).
    pub fn append_at_end(&self, key: &str, data: &[u8]) {
        let pos = self.head(key).next_append_position.expect("appendable");
        let out = self
            .call(
                "AppendObject",
                self.client.append_object(
                    key,
                    pos,
                    Bytes::copy_from_slice(data),
                    &CreateOptions::default(),
                ),
            )
            .unwrap_or_else(|e| panic!("AppendObject {key} at {pos}: {e}"));
        assert_eq!(out.next_position, pos + data.len() as u64);
    }

    /// The object must be Appendable, hold exactly `content`, and carry its CRC-64.
    pub fn assert_appendable(&self, key: &str, content: &[u8]) {
        let m = self.head(key);
        assert_eq!(m.object_type, Some(ObjectType::Appendable), "{key}: {m:?}");
        assert_eq!(m.size, content.len() as u64, "{key} length");
        assert_eq!(
            m.next_append_position,
            Some(content.len() as u64),
            "{key} next append position"
        );
        assert_eq!(
            m.crc64,
            Some(crc64::checksum(content)),
            "{key}: CRC-64 of the object is not the CRC-64 of the expected content"
        );
        assert_bytes(&self.get(key), content, &format!("{key} via GetObject"));
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (entries, _) = self
            .call("list", self.client.list_all(prefix, None))
            .expect("list");
        entries.into_iter().map(|e| e.key).collect()
    }
}

impl Drop for Oss {
    fn drop(&mut self) {
        if let (Some(rt), Some(srv)) = (self.rt.as_ref(), self.server.take()) {
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), srv.shutdown()).await
            });
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Stats after minus stats before, zero entries left out.
pub fn stats_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The official Python SDK (`oss2`) from the project's venv, when scripts/setup-python.sh made
/// one: an outside view of the objects the mount writes.
pub fn oss2_python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let ok = py.is_file() && run(Command::new(&py).args(["-c", "import oss2"]), SHORT).ok();
    if !ok {
        eprintln!(
            "note: no oss2 in {} (scripts/setup-python.sh makes it); SDK cross-checks skipped",
            py.display()
        );
    }
    ok.then_some(py)
}

pub const OSS2_PRELUDE: &str = r#"
import json, os, sys, oss2
ep, bucket, key = sys.argv[1], sys.argv[2], sys.argv[3]
b = oss2.Bucket(oss2.Auth(os.environ["OSS_ACCESS_KEY_ID"], os.environ["OSS_ACCESS_KEY_SECRET"]),
                ep, bucket, connect_timeout=10, enable_crc=True)
"#;

pub fn oss2_run(py: &Path, oss: &Oss, key: &str, body: &str) -> Out {
    let script = format!("{OSS2_PRELUDE}{body}");
    let o = run(
        Command::new(py)
            .args(["-c", &script, &oss.endpoint(), BUCKET, key])
            .env("OSS_ACCESS_KEY_ID", AK)
            .env("OSS_ACCESS_KEY_SECRET", SK)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy"),
        SHORT,
    );
    assert!(o.ok(), "oss2 script failed: {}", o.stderr);
    o
}

// -------------------------------------------------------------------------------------------
// Mounts

pub fn mount_command(oss_endpoint: &str, url: &str, mountpoint: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg(url)
        .arg(mountpoint)
        .args(["--endpoint", oss_endpoint])
        .args(extra)
        .env("OSS_ACCESS_KEY_ID", AK)
        .env("OSS_ACCESS_KEY_SECRET", SK)
        .env_remove("OSS_SESSION_TOKEN")
        .env_remove("OSS_ENDPOINT")
        .env_remove("OSS_REGION")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
    cmd
}

/// A foreground mount (`appendfs mount ... -f`) on its own temporary directory.
pub struct Mount {
    pub child: Option<Child>,
    pub mountpoint: PathBuf,
    pub log: PathBuf,
    /// `--state-dir`: the rescue file goes under `state/rescue`.
    pub state: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Mount {
    pub fn new(oss: &Oss, url: &str, extra: &[&str]) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("appendfs-mount-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let mountpoint = root.join("mnt");
        std::fs::create_dir(&mountpoint).expect("mount point");
        let log = root.join("mount.log");
        let state = root.join("state");
        let log_file = File::create(&log).expect("log file");
        let mut cmd = mount_command(&oss.endpoint(), url, &mountpoint, extra);
        cmd.arg("--state-dir")
            .arg(&state)
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file)
            .process_group(0);
        // If this test process dies without running its guards (killed, or aborted by a panic
        // during a panic), the mount still ends itself: SIGTERM flushes and unmounts.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start appendfs mount");
        let mut m = Mount {
            child: Some(child),
            mountpoint,
            log,
            state,
            _dir: dir,
        };
        let deadline = Instant::now() + MOUNT_LIVE;
        while !is_mounted(&m.mountpoint) {
            if let Some(st) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "appendfs mount exited ({st}) before the mount was live:\n{}",
                    m.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mount not live within {MOUNT_LIVE:?}:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// Mounts the whole test bucket with default options.
    pub fn bucket(oss: &Oss) -> Mount {
        Mount::new(oss, &format!("oss://{BUCKET}"), &[])
    }

    /// Mounts the whole test bucket with extra options.
    pub fn bucket_with(oss: &Oss, extra: &[&str]) -> Mount {
        Mount::new(oss, &format!("oss://{BUCKET}"), extra)
    }

    pub fn dir(&self) -> &Path {
        &self.mountpoint
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGTERM, then waits: the mount must flush, unmount and exit. Falls back to a lazy
    /// unmount and SIGKILL. Returns the exit status when it exited on its own.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let status = wait_timeout(&mut child, UNMOUNT);
        if status.is_none() || is_mounted(&self.mountpoint) {
            eprintln!(
                "mount on {} did not end cleanly ({status:?}); detaching it",
                self.mountpoint.display()
            );
            lazy_unmount(&self.mountpoint);
            kill_group(&child, libc::SIGKILL);
            let _ = wait_timeout(&mut child, Duration::from_secs(5));
        }
        status
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Records of the rescue file(s) this mount wrote.
    pub fn rescued(&self) -> Vec<appendfs::fs::append::rescue::Record> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.state.join("rescue")) {
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).expect("read the rescue file");
                out.extend(
                    appendfs::fs::append::rescue::parse(&bytes).expect("the rescue file parses"),
                );
            }
        }
        out
    }

    /// Ends the mount and requires the clean end of the contract: exit status 0, unmounted.
    pub fn finish(mut self) -> String {
        let status = self.stop();
        let log = self.log();
        assert!(
            status.is_some_and(|s| s.success()),
            "appendfs mount did not exit 0 after SIGTERM ({status:?}):\n{log}"
        );
        assert!(!is_mounted(&self.mountpoint), "still mounted after exit");
        log
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- log of the mount on {} (last {} lines) ----",
                self.mountpoint.display(),
                tail.len()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        // The TempDir is removed after this, with the mount already gone.
    }
}

/// `tail -f FILE`, its output lines timestamped as they arrive.
pub struct Tail {
    pub child: Child,
    pub rx: mpsc::Receiver<(Instant, String)>,
    pub seen: Vec<(Instant, String)>,
}

impl Tail {
    pub fn follow(file: &Path) -> Tail {
        let mut child = Command::new("tail")
            .arg("-f")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start tail");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Tail {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until `line` has been output; returns when it arrived.
    pub fn wait_for(&mut self, line: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((t, _)) = self.seen.iter().find(|(_, l)| l == line) {
                return *t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(x) => self.seen.push(x),
                Err(_) => panic!(
                    "tail -f did not output {line:?} within {limit:?}; it output {:?}",
                    self.lines()
                ),
            }
        }
    }

    /// Collects whatever arrives during `d`.
    pub fn settle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(x) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(x);
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.seen.iter().map(|(_, l)| l.clone()).collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        kill_group(&self.child, libc::SIGKILL);
        let _ = wait_timeout(&mut self.child, Duration::from_secs(5));
    }
}

/// A writer that keeps its file open, as a logger does: `exec cat >> FILE` fed through a pipe.
/// It lives in its own process: a descriptor held by this multi-threaded test process would
/// be closed in every child another test spawns (close-on-exec), and each such close is a
/// FUSE FLUSH that sends the buffered bytes, hiding what the flush interval alone does.
pub struct Feeder {
    pub child: Child,
}

impl Feeder {
    pub fn open(dir: &Path, file: &str) -> Feeder {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec cat >> {file}"))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start cat");
        Feeder { child }
    }

    /// Hands `data` to cat, which writes it with one write() (it arrives whole in the pipe).
    pub fn write(&mut self, data: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("piped");
        stdin.write_all(data).expect("feed cat");
        stdin.flush().expect("feed cat");
    }

    /// Closes cat's input; cat then closes the file (a FLUSH) and exits.
    pub fn close(mut self) {
        drop(self.child.stdin.take());
        let status = wait_timeout(&mut self.child, SHORT);
        assert!(
            status.is_some_and(|s| s.success()),
            "cat >> did not end well: {status:?}"
        );
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_group(&self.child, libc::SIGKILL);
            let _ = wait_timeout(&mut self.child, Duration::from_secs(5));
        }
    }
}

/// A core's configuration for tests without a mount: owner root, modes 0644/0755, a 1 s
/// metadata TTL, 1 MiB of cache and of dirty bytes, no shared bound, new objects with OSS's
/// defaults; the stream's chunk size, flush interval and retry budget given. Tests set what
/// they need on top (`FsConfig { cache_size: .., ..fs_config(..) }`).
pub fn fs_config(
    rescue_dir: PathBuf,
    chunk_size: u64,
    flush_interval: Duration,
    give_up_after: Duration,
) -> appendfs::fs::FsConfig {
    appendfs::fs::FsConfig {
        prefix: String::new(),
        uid: 0,
        gid: 0,
        file_mode: 0o644,
        dir_mode: 0o755,
        metadata_ttl: Duration::from_secs(1),
        cache_size: 1 << 20,
        max_dirty: 1 << 20,
        max_memory: None,
        read_only: false,
        stream: appendfs::fs::StreamConfig {
            chunk_size,
            flush_interval,
            create: CreateOptions::default(),
            give_up_after,
        },
        rescue_dir,
    }
}
