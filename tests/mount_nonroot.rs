//! A mount by a user who is not root: fuser opens `/dev/fuse`, its mount(2) is refused, and it
//! mounts through the setuid `fusermount3` instead; `fusermount3 -u` by that user ends the
//! mount and the daemon drains and exits 0. This host's `/dev/fuse` may be mode 0600 (then no
//! user but root can mount FUSE at all, fusermount3 included), so the test runs in a private
//! mount namespace where a 0666 node of the same device (the usual udev rule) is bound over
//! `/dev/fuse`; nothing outside the namespace changes.
//!
//! Run: `cargo test --test mount_nonroot` (as root, with /dev/fuse, unshare, runuser and
//! fusermount3).

use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_user_mounts_through_fusermount3() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to set up the namespace and to become nobody");
        return;
    }
    for tool in ["unshare", "runuser", "fusermount3", "mknod"] {
        if !have(tool) {
            eprintln!("skipped: {tool} is missing");
            return;
        }
    }
    let oss = Oss::start();
    let dir = tempfile::Builder::new()
        .prefix("appendfs-nonroot-")
        .tempdir()
        .expect("temp dir");
    let root = dir.path().canonicalize().expect("canonical temp dir");
    let script = format!(
        r#"set -e
chmod 755 {root}
mkdir {root}/mnt {root}/state {root}/dev
chown nobody {root}/mnt {root}/state
mknod -m 666 {root}/dev/fuse c 10 229
mount --bind {root}/dev/fuse /dev/fuse
as_nobody() {{ runuser -u nobody -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME={root}/state "$@"; }}
as_nobody OSS_ACCESS_KEY_ID={AK} OSS_ACCESS_KEY_SECRET={SK} RUST_LOG=info \
    {BIN} mount oss://{BUCKET} {root}/mnt --endpoint {endpoint} --state-dir {root}/state \
    --log-file {root}/state/mount.log -f &
daemon=$!
for i in $(seq 100); do grep -q " {root}/mnt fuse.appendfs " /proc/self/mounts && break; sleep 0.1; done
grep " {root}/mnt fuse.appendfs " /proc/self/mounts
as_nobody sh -c 'echo hi from nobody >> {root}/mnt/a.log && cat {root}/mnt/a.log'
as_nobody fusermount3 -u {root}/mnt
rc=0; wait $daemon || rc=$?
echo "daemon exit $rc"
"#,
        root = root.display(),
        endpoint = oss.endpoint(),
    );
    let out = run(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(&script),
        Duration::from_secs(60),
    );
    let log = std::fs::read_to_string(root.join("state/mount.log")).unwrap_or_default();
    let stdout = out.stdout();
    assert!(out.ok(), "{out:?}\nmount log:\n{log}");
    assert!(
        stdout.contains("user_id=65534"),
        "mounted as nobody: {stdout}\n{log}"
    );
    assert!(stdout.contains("hi from nobody"), "{stdout}\n{log}");
    assert!(stdout.contains("daemon exit 0"), "{stdout}\n{log}");
    assert_eq!(oss.get("a.log"), b"hi from nobody\n");
    assert!(log.contains("all data appended"), "{log}");
}
