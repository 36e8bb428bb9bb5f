//! Mounting the Linux way: `mount -t fuse.appendfs`, an fstab line through `mount -T`, the
//! helper form `appendfs SOURCE DIR -o ...` run with no PATH and no HOME (as mount(8) and
//! mount.fuse3 may run it), and a dead mount point named as such. Credentials come through
//! the environment, a passwd file and a credential process, one each.
//!
//! mount(8) finds `/sbin/mount.fuse3` (Debian's `fuse3`; scripts/test.sh installs it), which
//! runs `/bin/sh -c 'TYPE SOURCE DIR -o OPTS'` for `-t fuse.TYPE`. mount(8) removes PATH from
//! the environment, so sh searches its built-in default (`/usr/local/sbin:/usr/local/bin:
//! /usr/sbin:/usr/bin:/sbin:/bin`) and nothing a test could put on PATH. So each test links
//! the built binary as `/usr/local/sbin/appendfs-test-PID-N` and mounts with `-t
//! fuse.appendfs-test-PID-N`: the same path through mount(8) and mount.fuse3 as
//! `fuse.appendfs`, without shadowing an installed appendfs or racing another checkout's test
//! run. The link is removed by the test's guard.
//!
//! Every mount is on its own temporary directory; a guard unmounts it (`umount`, then
//! `umount -l`) and ends its daemon (SIGTERM, then SIGKILL); every blocking step has a limit.
//! Run as root with /dev/fuse: `cargo test --test mount_helper`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use appendfs::client::{Client, ClientConfig, Credentials};
use appendfs::server::{self, RunningServer, ServerConfig};

const BIN: &str = env!("CARGO_BIN_EXE_appendfs");
const AK: &str = "HELPERTESTKEYID";
const SK: &str = "helper-test-secret";
const BUCKET: &str = "helper-bkt";
const LIMIT: Duration = Duration::from_secs(20);

struct Out {
    code: Option<i32>,
    text: String,
}

/// Runs `cmd` to completion within `limit` (killed after), stdout and stderr together.
fn run(cmd: &mut Command, limit: Duration) -> Out {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out");
    let f = std::fs::File::create(&path).expect("out file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("dup"))
        .stderr(f)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    let _ = std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut text));
    Out { code, text }
}

fn mount_entry(mountpoint: &Path) -> Option<String> {
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(want.as_str()))
        .map(str::to_string)
}

/// Daemons serving `mountpoint`, found by their command line.
fn daemons(mountpoint: &Path) -> Vec<i32> {
    let mp = mountpoint.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("appendfs"))
            && args.iter().any(|a| a == &mp)
            && !gone(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|st| st == 'Z' || st == 'X'),
        Err(_) => true,
    }
}

fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).expect("path");
    // SAFETY: umount2 reads a NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A server, a temporary directory with a mount point, and the binary linked under a
/// unique name where sh's default PATH finds it.
struct Setup {
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    client: Client,
    root: PathBuf,
    mountpoint: PathBuf,
    /// `appendfs-test-PID-N`; `-t fuse.NAME` runs it.
    helper: String,
    _dir: tempfile::TempDir,
}

fn helper_link(name: &str) -> PathBuf {
    Path::new("/usr/local/sbin").join(name)
}

impl Setup {
    fn new() -> Setup {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = ServerConfig {
            credentials: Some(Credentials::new(AK, SK)),
            buckets: vec![BUCKET.into()],
            ..ServerConfig::default()
        };
        let server = rt
            .block_on(server::start(config, "127.0.0.1:0".parse().unwrap()))
            .expect("server");
        let cc = ClientConfig::new(&server.endpoint(), BUCKET).expect("client config");
        let client = Client::with_credentials(cc, Credentials::new(AK, SK)).expect("client");
        let dir = tempfile::Builder::new()
            .prefix("appendfs-helper-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        let mountpoint = root.join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let helper = format!(
            "appendfs-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        std::fs::create_dir_all("/usr/local/sbin").expect("/usr/local/sbin");
        let _ = std::fs::remove_file(helper_link(&helper));
        std::os::unix::fs::symlink(BIN, helper_link(&helper)).expect("helper link");
        Setup {
            rt,
            server: Some(server),
            client,
            root,
            mountpoint,
            helper,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        self.server.as_ref().expect("running").endpoint()
    }

    fn put(&self, key: &str, data: &[u8]) {
        let o = appendfs::client::CreateOptions::default();
        self.rt
            .block_on(async {
                tokio::time::timeout(
                    LIMIT,
                    self.client
                        .put_object(key, bytes::Bytes::copy_from_slice(data), &o),
                )
                .await
            })
            .expect("in time")
            .expect("put");
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.rt
            .block_on(async {
                tokio::time::timeout(LIMIT, self.client.get_object_bytes(key, None)).await
            })
            .expect("in time")
            .expect("get")
            .data
            .to_vec()
    }

    /// `-t` value that runs this test's link.
    fn fstype(&self) -> String {
        format!("fuse.{}", self.helper)
    }

    /// mount(8) with nothing inherited (no keys, and no PATH: mount would drop it anyway).
    fn mount_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("mount");
        cmd.args(args).env_clear();
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("mount.log")).unwrap_or_default()
    }

    fn require_live(&self, out: &Out) {
        assert_eq!(
            out.code,
            Some(0),
            "mount failed: {}\nlog:\n{}",
            out.text,
            self.log()
        );
        assert!(
            wait_until(LIMIT, || mount_entry(&self.mountpoint).is_some()),
            "not mounted:\n{}",
            self.log()
        );
    }

    /// `umount DIR`, bounded, then waits for the daemon to flush and exit.
    fn unmount(&self) {
        let out = run(Command::new("umount").arg(&self.mountpoint), LIMIT);
        assert_eq!(out.code, Some(0), "umount: {}", out.text);
        assert!(
            wait_until(LIMIT, || daemons(&self.mountpoint).is_empty()),
            "daemon still running after umount:\n{}",
            self.log()
        );
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if mount_entry(&self.mountpoint).is_some() {
            let _ = run(Command::new("umount").arg(&self.mountpoint), LIMIT);
            if mount_entry(&self.mountpoint).is_some() {
                lazy_unmount(&self.mountpoint);
            }
        }
        for pid in daemons(&self.mountpoint) {
            // SAFETY: kill(2) on a daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if !wait_until(LIMIT, || gone(pid)) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_file(helper_link(&self.helper));
        if let Some(s) = self.server.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await
            });
        }
    }
}

fn require_mount_fuse3() {
    assert!(
        Path::new("/sbin/mount.fuse3").exists() || Path::new("/usr/sbin/mount.fuse3").exists(),
        "mount -t fuse.* needs mount.fuse3 from Debian's fuse3 (scripts/test.sh installs it)"
    );
}

/// `mount -t fuse.appendfs oss://BUCKET DIR -o endpoint=...,allow_other,...` with mount(8)'s
/// and systemd's own options mixed in; keys from the environment. Writes reach OSS and
/// `umount` ends the daemon after flushing.
#[test]
fn mount_t_fuse_appendfs() {
    require_mount_fuse3();
    let s = Setup::new();
    let opts = format!(
        "endpoint={},allow_other,flush-interval=100ms,_netdev,nofail,nonempty,x-systemd.automount,log_file={}",
        s.endpoint(),
        s.root.join("mount.log").display()
    );
    let mp = s.mountpoint.display().to_string();
    let fstype = s.fstype();
    let mut cmd = s.mount_cmd(&["-t", &fstype, &format!("oss://{BUCKET}"), &mp, "-o", &opts]);
    cmd.env("OSS_ACCESS_KEY_ID", AK)
        .env("OSS_ACCESS_KEY_SECRET", SK);
    let out = run(&mut cmd, LIMIT);
    s.require_live(&out);
    let entry = mount_entry(&s.mountpoint).expect("mounted");
    let fields: Vec<&str> = entry.split(' ').collect();
    assert!(fields[2].starts_with("fuse"), "{entry}");
    assert!(fields[3].split(',').any(|o| o == "allow_other"), "{entry}");

    let f = s.mountpoint.join("helper.log");
    let write = run(
        Command::new("/bin/sh").arg("-c").arg(format!(
            "echo one >> '{0}' && echo two >> '{0}'",
            f.display()
        )),
        LIMIT,
    );
    assert_eq!(write.code, Some(0), "{}", write.text);
    s.unmount();
    assert_eq!(s.get("helper.log"), b"one\ntwo\n");
}

/// An fstab line, read by `mount -T FILE DIR`: prefix, `ro`, `noauto`, keys from a passwd
/// file given as `passwd_file=`. The prefix's object is readable; writing is refused (EROFS).
#[test]
fn fstab_entry_through_mount_t_file() {
    require_mount_fuse3();
    let s = Setup::new();
    s.put("sub/seen.txt", b"seen\n");
    let passwd = s.root.join("passwd-ossfs");
    std::fs::write(&passwd, format!("# test keys\n{BUCKET}:{AK}:{SK}\n")).unwrap();
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
    let fstab = s.root.join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# appendfs test\noss://{BUCKET}/sub {mp} {fstype} _netdev,noauto,ro,endpoint={ep},passwd_file={pw},log_file={log} 0 0\n",
            mp = s.mountpoint.display(),
            fstype = s.fstype(),
            ep = s.endpoint(),
            pw = passwd.display(),
            log = s.root.join("mount.log").display(),
        ),
    )
    .unwrap();
    let mp = s.mountpoint.display().to_string();
    let fstab_arg = fstab.display().to_string();
    let out = run(&mut s.mount_cmd(&["-T", &fstab_arg, &mp]), LIMIT);
    s.require_live(&out);
    let entry = mount_entry(&s.mountpoint).expect("mounted");
    let fields: Vec<&str> = entry.split(' ').collect();
    assert!(fields[3].split(',').any(|o| o == "ro"), "{entry}");
    assert!(
        s.log().contains("passwd file"),
        "credentials source not logged:\n{}",
        s.log()
    );

    let seen = std::fs::read(s.mountpoint.join("seen.txt")).expect("read through the mount");
    assert_eq!(seen, b"seen\n");
    let err = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(s.mountpoint.join("new.txt"))
        .expect_err("read-only mount");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    s.unmount();
}

/// The helper form exactly as mount.fuse3 runs it, but with no PATH and no HOME at all; keys
/// from a credential process named by absolute path. Then the daemon is killed with SIGKILL
/// and a new mount on the dead mount point says what it is and how to clear it.
#[test]
fn helper_form_without_path_and_dead_mount_point() {
    let s = Setup::new();
    let creds = s.root.join("creds.json");
    std::fs::write(
        &creds,
        format!(r#"{{"AccessKeyId":"{AK}","AccessKeySecret":"{SK}"}}"#),
    )
    .unwrap();
    let mp = s.mountpoint.display().to_string();
    let opts = format!(
        "rw,dev,suid,endpoint={},credential_process=/bin/cat {},log_file={}",
        s.endpoint(),
        creds.display(),
        s.root.join("mount.log").display()
    );
    let args = [format!("oss://{BUCKET}"), mp.clone(), "-o".into(), opts];
    let out = run(Command::new(BIN).args(&args).env_clear(), LIMIT);
    s.require_live(&out);
    assert!(s.log().contains("credential process"), "{}", s.log());
    std::fs::write(s.mountpoint.join("nopath.txt"), b"no PATH needed\n").expect("write");
    assert_eq!(
        std::fs::read(s.mountpoint.join("nopath.txt")).expect("read"),
        b"no PATH needed\n"
    );

    // kill -9: the kernel mount stays, dead.
    for pid in daemons(&s.mountpoint) {
        // SAFETY: kill(2) on the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(wait_until(LIMIT, || daemons(&s.mountpoint).is_empty()));
    let again = run(Command::new(BIN).args(&args).env_clear(), LIMIT);
    assert_eq!(again.code, Some(1), "{}", again.text);
    for words in [
        "dead FUSE mount",
        &format!("umount -l {mp}"),
        "fusermount3 -u",
    ] {
        assert!(
            again.text.contains(words),
            "{words:?} missing: {}",
            again.text
        );
    }
    lazy_unmount(&s.mountpoint);
    assert!(wait_until(LIMIT, || mount_entry(&s.mountpoint).is_none()));
}
