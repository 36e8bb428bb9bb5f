//! The README's "run it" command, `appendfs mount --embedded=DIR oss://BUCKET MOUNTPOINT`: the
//! built-in server keeps its data in DIR across mounts, and a mount started right after
//! `umount` (while the old daemon still drains and holds DIR) waits for it instead of failing.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A foreground `mount --embedded=DIR` daemon, unmounted (lazily if need be) when dropped.
struct Daemon {
    child: Child,
    /// None once the daemon exited: the mount point may hold another daemon's mount by then.
    mountpoint: Option<std::path::PathBuf>,
}

impl Daemon {
    fn start(data: &Path, mountpoint: &Path) -> Daemon {
        let child = Command::new(BIN)
            .args(["mount", &format!("--embedded={}", data.display())])
            .arg("oss://embedded-test")
            .arg(mountpoint)
            .arg("-f")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn appendfs");
        let d = Daemon {
            child,
            mountpoint: Some(mountpoint.to_path_buf()),
        };
        let deadline = Instant::now() + SHORT;
        while !is_mounted(mountpoint) {
            assert!(
                Instant::now() < deadline,
                "the embedded mount did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// Waits for the daemon to exit (after an unmount), bounded; its exit status.
    fn wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + SHORT;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.mountpoint = None;
                return st;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mp) = self.mountpoint.as_deref().filter(|mp| is_mounted(mp)) {
            lazy_unmount(mp);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_mount_right_after_umount_waits_for_the_data_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, mp) = (tmp.path().join("data"), tmp.path().join("mnt"));
    std::fs::create_dir(&mp).expect("mkdir");

    let first = Daemon::start(&data, &mp);
    sh_ok(&mp, "echo one >> app.log; echo two >> app.log");
    sh_ok(tmp.path(), "umount mnt");
    // At once: the first daemon is still on its way out, holding the data directory.
    let second = Daemon::start(&data, &mp);
    assert!(first.wait().success(), "the first daemon failed");
    assert_eq!(sh_ok(&mp, "cat app.log").stdout, b"one\ntwo\n");
    sh_ok(&mp, "echo three >> app.log");
    assert_eq!(sh_ok(&mp, "cat app.log").stdout, b"one\ntwo\nthree\n");
    sh_ok(tmp.path(), "umount mnt");
    assert!(second.wait().success(), "the second daemon failed");
}
