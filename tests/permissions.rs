//! `--allow-other` shares a mount with every local user, and the kernel (the mount always uses
//! `default_permissions`) holds each of them to the modes and owner the mount shows:
//! `--file-mode`, `--dir-mode`, `--uid`, `--gid`. Other users run through `runuser`.
//!
//! Run: `cargo test --test permissions` (as root, with /dev/fuse).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

mod common;
use common::*;

const DENIED: &str = "Permission denied";

/// `sh -c script` as `user`, from `/` (so only the paths in the script are checked), bounded.
fn as_user(user: &str, script: &str) -> Out {
    run(
        Command::new("runuser")
            .args(["-u", user, "--", "sh", "-c", script])
            .current_dir("/"),
        SHORT,
    )
}

fn as_user_ok(user: &str, script: &str) -> Out {
    let o = as_user(user, script);
    assert!(
        o.ok(),
        "as {user}: `{script}` failed ({}): {}",
        o.status,
        o.stderr
    );
    o
}

fn as_user_denied(user: &str, script: &str) -> Out {
    let o = as_user(user, script);
    assert!(
        !o.ok() && o.stderr.contains(DENIED),
        "as {user}: `{script}` must fail with {DENIED:?}; got {} stdout {:?} stderr {:?}",
        o.status,
        o.stdout(),
        o.stderr
    );
    o
}

/// An Appendable object holding `data`, as an SDK program would create it.
fn appendable(oss: &Oss, key: &str, data: &[u8]) {
    let options = appendfs::client::CreateOptions::default();
    let create = oss
        .client
        .append_object(key, 0, bytes::Bytes::copy_from_slice(data), &options);
    oss.call("AppendObject", create)
        .unwrap_or_else(|e| panic!("AppendObject {key} at 0: {e}"));
}

/// A mount other users can reach: tempfile makes the mount's parent directory 0700.
fn shared_mount(oss: &Oss, extra: &[&str]) -> Mount {
    let m = Mount::bucket_with(oss, extra);
    let parent = m.dir().parent().expect("mount point has a parent");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
        .expect("open the mount's parent directory to other users");
    m
}

/// 0600 files in a 0700 tree owned by root: `nobody` can neither read, append, create nor
/// delete, although `--allow-other` lets it into the mount; root can do all of it.
#[test]
fn private_modes_keep_other_users_out() {
    let oss = Oss::start();
    appendable(&oss, "secret.log", b"root only\n");
    oss.put("d/", b"");
    let m = shared_mount(
        &oss,
        &["--allow-other", "--file-mode", "0600", "--dir-mode", "0700"],
    );
    let f = m.path("secret.log");
    let d = m.path("d");
    let (f, d) = (f.display(), d.display());

    as_user_denied("nobody", &format!("cat {f}"));
    as_user_denied("nobody", &format!("echo intruder >> {f}"));
    as_user_denied("nobody", &format!("echo x > {d}/new.log"));
    as_user_denied("nobody", &format!("rm -f {f}"));
    as_user_denied("nobody", &format!("mkdir {d}/sub"));
    // Nothing of that reached OSS.
    oss.assert_appendable("secret.log", b"root only\n");
    assert!(oss.missing("d/new.log"), "nobody created d/new.log");
    assert!(oss.missing("d/sub/"), "nobody created d/sub/");

    // The owner (root) can do all of it.
    sh_ok(
        m.dir(),
        "cat secret.log >/dev/null && echo more >> secret.log",
    );
    sh_ok(m.dir(), "echo x >> d/new.log && rm d/new.log");
    oss.assert_appendable("secret.log", b"root only\nmore\n");
    assert!(oss.missing("d/new.log"));
    m.finish();
}

/// Files readable by all (0644, 0755): `nobody` reads, but cannot append, create or delete.
#[test]
fn shared_read_only_modes_let_others_read_only() {
    let oss = Oss::start();
    appendable(&oss, "pub.log", b"for all\n");
    let m = shared_mount(
        &oss,
        &["--allow-other", "--file-mode", "0644", "--dir-mode", "0755"],
    );
    let f = m.path("pub.log");
    let f = f.display();
    let root = m.dir().display();

    let read = as_user_ok("nobody", &format!("cat {f}"));
    assert_bytes(&read.stdout, b"for all\n", "nobody reading a 0644 file");
    as_user_ok("nobody", &format!("ls {root} >/dev/null"));
    as_user_denied("nobody", &format!("echo intruder >> {f}"));
    as_user_denied("nobody", &format!("echo x > {root}/new.log"));
    as_user_denied("nobody", &format!("rm -f {f}"));
    oss.assert_appendable("pub.log", b"for all\n");
    assert!(oss.missing("new.log"));
    m.finish();
}

/// `--uid`/`--gid` name the owner: that user (here `daemon`, uid 1) reads, appends, creates
/// and deletes in a 0700 tree of 0600 files; `nobody` still cannot. The file mode alone
/// decides for a file others may reach: 0600 files in a 0755 directory stay unreadable.
#[test]
fn the_owner_named_by_uid_can_and_others_cannot() {
    let oss = Oss::start();
    appendable(&oss, "mine.log", b"daemon's\n");
    let m = shared_mount(
        &oss,
        &[
            "--allow-other",
            "--uid",
            "1",
            "--gid",
            "1",
            "--file-mode",
            "0600",
            "--dir-mode",
            "0700",
        ],
    );
    let root = m.dir().display();
    let read = as_user_ok("daemon", &format!("cat {root}/mine.log"));
    assert_bytes(
        &read.stdout,
        b"daemon's\n",
        "the owner reading its 0600 file",
    );
    as_user_ok("daemon", &format!("echo more >> {root}/mine.log"));
    as_user_ok("daemon", &format!("echo new >> {root}/new.log"));
    as_user_ok("daemon", &format!("mkdir {root}/sub && rmdir {root}/sub"));
    as_user_denied("nobody", &format!("cat {root}/mine.log"));
    as_user_denied("nobody", &format!("rm -f {root}/new.log"));
    as_user_ok("daemon", &format!("rm {root}/new.log"));
    oss.assert_appendable("mine.log", b"daemon's\nmore\n");
    assert!(oss.missing("new.log"));
    m.finish();

    // Traversal allowed, the file itself private: the file's bits refuse.
    let m = shared_mount(
        &oss,
        &["--allow-other", "--file-mode", "0600", "--dir-mode", "0755"],
    );
    let root = m.dir().display();
    as_user_ok("nobody", &format!("test -e {root}/mine.log"));
    as_user_denied("nobody", &format!("cat {root}/mine.log"));
    as_user_denied("nobody", &format!("echo intruder >> {root}/mine.log"));
    oss.assert_appendable("mine.log", b"daemon's\nmore\n");
    m.finish();
}

/// A refusal the kernel decides is not the daemon's to log, and two things that used to warn on
/// every use stay quiet: `isatty()` of a writer (an ioctl on the file) and a clean `umount`.
#[test]
fn isatty_and_a_clean_umount_log_no_warnings() {
    let oss = Oss::start();
    let mut m = shared_mount(&oss, &["--allow-other"]);
    // `test -t 1` is isatty(1): a TCGETS ioctl on the FUSE file; it must say "not a tty".
    let o = sh_in(m.dir(), "echo a >> w.log; test -t 1 >> w.log", SHORT);
    assert!(!o.ok(), "isatty() on a mount file said it is a terminal");
    as_user_denied("nobody", &format!("echo b >> {}/w.log", m.dir().display()));
    oss.assert_appendable("w.log", b"a\n");
    let out = run(Command::new("umount").arg(m.dir()), UNMOUNT);
    assert!(out.ok(), "umount: {}", out.stderr);
    let child = m.child.as_mut().expect("the mount's process");
    let status = wait_timeout(child, UNMOUNT).expect("the daemon exits after umount");
    assert!(status.success(), "exit status after umount: {status}");
    let log = m.log();
    for noise in ["Unmount failed", "ioctl", "WARN"] {
        assert!(!log.contains(noise), "{noise:?} in the log:\n{log}");
    }
}
