//! Mode, owner and times the ossfs way, and the log-host tools that depend on them, through
//! real mounts: logrotate (`create 0640 root adm`, `copytruncate` + `compress`), nginx's
//! reopen (create, then chown to the worker user), `rsync -a` twice, `touch -d`, and chmod
//! on objects that cannot take it. One core-level test checks the rules without a kernel.
//!
//! Run: `cargo test --test rotation -- --test-threads=2` (as root, with /dev/fuse; the tools
//! come from scripts/test.sh). A test whose tool is missing says so and passes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use appendfs::client::{Client, ClientConfig, CreateOptions};
use appendfs::fs::namespace::{PosixMeta, ROOT};
use appendfs::fs::{Core, FsConfig, OpenMode};
use appendfs::oss::Credentials;
use appendfs::server::{self, ServerConfig};
use bytes::Bytes;

mod common;
use common::*;

/// `S_IFREG | perm` in decimal, as ossfs writes `x-oss-meta-mode`.
fn ossfs_mode(perm: u32) -> String {
    (0o100000 | perm).to_string()
}

fn have(tool: &str) -> bool {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists());
    if !found {
        eprintln!("{tool} is not installed (scripts/test.sh installs it): skipping");
    }
    found
}

fn stat(dir: &Path, format: &str, file: &str) -> String {
    sh_ok(dir, &format!("stat -c '{format}' {file}"))
        .stdout()
        .trim()
        .to_string()
}

fn user_meta(oss: &Oss, key: &str) -> BTreeMap<String, String> {
    oss.head(key).user_meta
}

/// Polls `check` until it holds, at most `limit`.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An object another ossfs host wrote shows its mode, owner and mtime; one without them
/// shows the mount's defaults and Last-Modified; `ls -l` after a listing shows what the
/// last HEAD saw without a HEAD per file.
#[test]
fn stat_shows_ossfs_metadata_else_the_defaults() {
    let oss = Oss::start();
    let mut meta = BTreeMap::new();
    meta.insert("mode".to_string(), ossfs_mode(0o600));
    meta.insert("uid".to_string(), "33".to_string());
    meta.insert("gid".to_string(), "4".to_string());
    meta.insert("mtime".to_string(), "1700000000".to_string());
    let opts = CreateOptions {
        user_meta: meta,
        ..CreateOptions::default()
    };
    oss.call(
        "append",
        oss.client
            .append_object("ossfs.log", 0, Bytes::from_static(b"x\n"), &opts),
    )
    .expect("append with metadata");
    oss.put("plain.txt", b"plain\n");
    let m = Mount::bucket_with(&oss, &["--file-mode", "0640", "--uid", "7", "--gid", "8"]);
    assert_eq!(
        stat(m.dir(), "%a %u %g %Y", "ossfs.log"),
        "600 33 4 1700000000"
    );
    let plain = stat(m.dir(), "%a %u %g %Y", "plain.txt");
    assert!(plain.starts_with("640 7 8 "), "defaults: {plain}");
    // After a listing, within the metadata TTL, the values come from memory.
    let before = oss.stats().get("HeadObject").copied().unwrap_or(0);
    let ls = sh_ok(m.dir(), "ls -ln --time-style=+%s ossfs.log plain.txt").stdout();
    assert!(
        ls.contains("-rw------- 1 33 4 2 1700000000 ossfs.log"),
        "{ls}"
    );
    let heads = oss.stats().get("HeadObject").copied().unwrap_or(0) - before;
    assert!(heads <= 2, "ls -l of two files cost {heads} HEADs");
    m.finish();
}

/// `touch -d` on an empty appendable object stores the time (`x-oss-meta-mtime`), another
/// mount shows it; `touch` of a non-empty object another host wrote is refused, and
/// setting the time already shown is not.
#[test]
fn touch_stores_the_time() {
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    sh_ok(m.dir(), ": > t.log && touch -d @1577934245 t.log");
    assert_eq!(stat(m.dir(), "%Y", "t.log"), "1577934245");
    assert_eq!(user_meta(&oss, "t.log")["mtime"], "1577934245");
    sh_ok(m.dir(), "echo after >> t.log");
    oss.assert_appendable("t.log", b"after\n");
    // Not created by this mount and not empty: nothing could carry the change.
    oss.append_at_end("t.log", b"more\n");
    let other = Mount::bucket(&oss);
    assert_eq!(stat(other.dir(), "%Y", "t.log"), "1577934245");
    sh_fails(
        other.dir(),
        "touch -d @1600000000 t.log",
        "Operation not permitted",
    );
    sh_ok(other.dir(), "touch -d @1577934245 t.log");
    other.finish();
    m.finish();
}

/// chmod/chown to the value shown succeeds everywhere (no request); to another value: an
/// empty appendable object is recreated with it, a non-empty one this mount did not create
/// gives EPERM with a log line, unless a rename copies it; a Normal object gives EPERM.
#[test]
fn chmod_rules() {
    let oss = Oss::start();
    oss.put("normal.txt", b"n\n");
    oss.call(
        "append",
        oss.client.append_object(
            "old.log",
            0,
            Bytes::from_static(b"old\n"),
            &CreateOptions::default(),
        ),
    )
    .expect("append");
    let m = Mount::bucket(&oss);
    let before = oss.stats();
    sh_ok(
        m.dir(),
        "chmod 644 old.log normal.txt && chown 0:0 old.log normal.txt",
    );
    let after = oss.stats();
    for op in ["DeleteObject", "AppendObject", "CopyObject", "PutObject"] {
        assert_eq!(before.get(op), after.get(op), "{op} for a no-op chmod");
    }
    sh_fails(m.dir(), "chmod 600 old.log", "Operation not permitted");
    sh_fails(m.dir(), "chmod 600 normal.txt", "Operation not permitted");
    sh_fails(m.dir(), "chown 33 normal.txt", "Operation not permitted");
    assert!(
        m.log().contains("non-empty appendable object"),
        "{}",
        m.log()
    );
    assert!(m.log().contains("only Appendable objects"), "{}", m.log());
    // Empty: recreated carrying the value, same inode, still appendable.
    sh_ok(m.dir(), ": > e.log");
    let ino = stat(m.dir(), "%i", "e.log");
    sh_ok(m.dir(), "chmod 600 e.log && chown 33:4 e.log");
    assert_eq!(
        stat(m.dir(), "%i %a %u %g", "e.log"),
        format!("{ino} 600 33 4")
    );
    let um = user_meta(&oss, "e.log");
    assert_eq!(
        (um["mode"].as_str(), um["uid"].as_str(), um["gid"].as_str()),
        (ossfs_mode(0o600).as_str(), "33", "4")
    );
    // Written: now refused even though this mount made it (nothing would carry it)...
    sh_ok(m.dir(), "echo data >> e.log");
    sh_fails(m.dir(), "chmod 640 e.log", "Operation not permitted");
    // ...but a temp file made with O_EXCL (mkstemp, as rsync does) keeps the change on its
    // inode until the rename writes it.
    let made = sh_ok(
        m.dir(),
        "t=$(mktemp -p . .tmp.XXXXXX) && echo data >> $t && chmod 640 $t && chown 33:4 $t && echo $t",
    )
    .stdout();
    let t = made.trim();
    let ino = stat(m.dir(), "%i", t);
    assert_eq!(stat(m.dir(), "%a %u %g", t), "640 33 4");
    assert!(
        !user_meta(&oss, t.trim_start_matches("./")).contains_key("mode"),
        "not stored before the rename"
    );
    sh_ok(m.dir(), &format!("mv {t} renamed.log"));
    assert_eq!(
        stat(m.dir(), "%i %a %u %g", "renamed.log"),
        format!("{ino} 640 33 4")
    );
    let um = user_meta(&oss, "renamed.log");
    assert_eq!(
        (um["mode"].clone(), um["uid"].clone(), um["gid"].clone()),
        (ossfs_mode(0o640), "33".into(), "4".into())
    );
    oss.assert_appendable("renamed.log", b"data\n");
    // `cp -p` creates its copy with O_EXCL too: the values are shown here, and stored only
    // if the file is renamed later (documented: lost at unmount otherwise).
    let src = tempfile::tempdir().expect("source dir");
    sh_ok(
        src.path(),
        "echo copy > c.txt && chmod 600 c.txt && touch -d @1500000000 c.txt",
    );
    sh_ok(
        m.dir(),
        &format!("cp -p {}/c.txt c.txt", src.path().display()),
    );
    assert_eq!(stat(m.dir(), "%a %Y", "c.txt"), "600 1500000000");
    assert!(!user_meta(&oss, "c.txt").contains_key("mode"));
    // Another mount sees what was stored.
    let other = Mount::bucket(&oss);
    assert_eq!(stat(other.dir(), "%a %u %g", "renamed.log"), "640 33 4");
    other.finish();
    m.finish();
}

fn write_conf(dir: &Path, body: &str) -> PathBuf {
    let conf = dir.join("logrotate.conf");
    std::fs::write(&conf, body).expect("write logrotate.conf");
    conf
}

/// logrotate with `create 0640 root adm`: rotated, the new file has the mode and group
/// asked for, `postrotate` ran, and the new file takes appends.
#[test]
fn logrotate_create() {
    if !have("logrotate") {
        return;
    }
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    sh_ok(m.dir(), "echo one >> app.log && echo two >> app.log");
    let tmp = tempfile::tempdir().expect("temp dir");
    let ran = tmp.path().join("postrotate.ran");
    let conf = write_conf(
        tmp.path(),
        &format!(
            "{log} {{\n    create 0640 root adm\n    rotate 3\n    postrotate\n        echo done > {ran}\n    endscript\n}}\n",
            log = m.path("app.log").display(),
            ran = ran.display()
        ),
    );
    let out = run(
        Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(tmp.path().join("state"))
            .arg(&conf),
        Duration::from_secs(60),
    );
    assert!(out.ok(), "logrotate failed: {}\n{}", out.stderr, m.log());
    assert!(ran.exists(), "postrotate did not run");
    oss.assert_appendable("app.log.1", b"one\ntwo\n");
    assert_eq!(stat(m.dir(), "%a %U %G %s", "app.log"), "640 root adm 0");
    assert_eq!(user_meta(&oss, "app.log")["mode"], ossfs_mode(0o640));
    assert_eq!(user_meta(&oss, "app.log")["gid"], "4");
    sh_ok(m.dir(), "echo three >> app.log");
    oss.assert_appendable("app.log", b"three\n");
    m.finish();
}

/// logrotate with `copytruncate` + `compress`: the copy is compressed with the log's mode,
/// the log is emptied in place and keeps taking appends, `postrotate` ran.
#[test]
fn logrotate_copytruncate_compress() {
    if !have("logrotate") {
        return;
    }
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    sh_ok(
        m.dir(),
        ": > c.log && chmod 640 c.log && echo first >> c.log && echo second >> c.log",
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let ran = tmp.path().join("postrotate.ran");
    let conf = write_conf(
        tmp.path(),
        &format!(
            "{log} {{\n    copytruncate\n    compress\n    rotate 2\n    postrotate\n        echo done > {ran}\n    endscript\n}}\n",
            log = m.path("c.log").display(),
            ran = ran.display()
        ),
    );
    let out = run(
        Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(tmp.path().join("state"))
            .arg(&conf),
        Duration::from_secs(60),
    );
    assert!(out.ok(), "logrotate failed: {}\n{}", out.stderr, m.log());
    assert!(ran.exists(), "postrotate did not run");
    let unzipped = sh_ok(m.dir(), "gzip -dc c.log.1.gz").stdout();
    assert_eq!(unzipped, "first\nsecond\n");
    assert!(
        !m.path("c.log.1").exists(),
        "the uncompressed copy is removed"
    );
    assert_eq!(stat(m.dir(), "%a", "c.log.1.gz"), "640");
    assert_eq!(stat(m.dir(), "%a %s", "c.log"), "640 0");
    // Truncated in place: the replacement carries the log's mode, and so does the copy.
    assert_eq!(user_meta(&oss, "c.log")["mode"], ossfs_mode(0o640));
    assert_eq!(user_meta(&oss, "c.log.1.gz")["mode"], ossfs_mode(0o640));
    sh_ok(m.dir(), "echo third >> c.log");
    oss.assert_appendable("c.log", b"third\n");
    m.finish();
}

/// What nginx's reopen does to a new log (create, then chown to the worker user), as a
/// shell does it.
#[test]
fn create_then_chown_as_nginx_reopens() {
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    sh_ok(
        m.dir(),
        "echo old >> access.log && mv access.log access.log.1 && : > access.log && chown www-data access.log",
    );
    assert_eq!(stat(m.dir(), "%U %s", "access.log"), "www-data 0");
    assert_eq!(user_meta(&oss, "access.log")["uid"], "33");
    sh_ok(m.dir(), "echo new >> access.log");
    oss.assert_appendable("access.log", b"new\n");
    oss.assert_appendable("access.log.1", b"old\n");
    m.finish();
}

/// nginx stopped (by its own pid, from its pid file) when the test ends.
struct Nginx {
    conf: PathBuf,
    pid_file: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = run(
            Command::new("nginx")
                .arg("-c")
                .arg(&self.conf)
                .args(["-s", "quit"]),
            SHORT,
        );
        let deadline = Instant::now() + SHORT;
        while self.pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the nginx master this test started; no memory involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn http_get(port: u16, path: &str) -> String {
    let path = path.to_string();
    bounded("HTTP GET", SHORT, move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
        s.set_read_timeout(Some(SHORT)).expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

/// A real nginx logging into the mount: `mv access.log access.log.1`, `nginx -s reopen`
/// (its master creates the new log and chowns it to www-data; the workers, as www-data,
/// reopen it), and the next request lands in the new file.
#[test]
fn nginx_reopen_after_mv() {
    if !have("nginx") {
        return;
    }
    let oss = Oss::start();
    let m = Mount::bucket_with(&oss, &["--allow-other"]);
    // The workers (www-data) must reach the mount point.
    let parent = m.dir().parent().expect("mount parent").to_path_buf();
    sh_ok(&parent, &format!("chmod 755 {}", parent.display()));
    let tmp = tempfile::Builder::new()
        .prefix("appendfs-nginx-")
        .tempdir()
        .expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let t = tmp.path().display();
    let conf = tmp.path().join("nginx.conf");
    let pid_file = tmp.path().join("nginx.pid");
    std::fs::write(
        &conf,
        format!(
            "user www-data;\nworker_processes 1;\npid {t}/nginx.pid;\nerror_log {t}/error.log;\n\
             events {{ worker_connections 16; }}\n\
             http {{\n  access_log {log};\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n\
             fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
            log = m.path("access.log").display()
        ),
    )
    .expect("nginx.conf");
    let started = run(
        Command::new("nginx").arg("-c").arg(&conf),
        Duration::from_secs(30),
    );
    let _nginx = Nginx {
        conf: conf.clone(),
        pid_file: pid_file.clone(),
    };
    assert!(started.ok(), "nginx did not start: {}", started.stderr);
    assert!(http_get(port, "/before").contains("200 OK"));
    eventually("first request logged", Duration::from_secs(10), || {
        oss.head("access.log").size > 0
    });
    sh_ok(m.dir(), "mv access.log access.log.1");
    let reopen = run(
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .args(["-s", "reopen"]),
        SHORT,
    );
    assert!(reopen.ok(), "nginx -s reopen: {}", reopen.stderr);
    eventually("new access.log owned by www-data", SHORT, || {
        sh_in(m.dir(), "stat -c %U access.log", SHORT)
            .stdout()
            .trim()
            == "www-data"
    });
    // The workers reopen after the master: keep asking until a request lands in the new file.
    eventually("a request logged in the new access.log", SHORT, || {
        http_get(port, "/after");
        std::fs::read_to_string(m.path("access.log")).is_ok_and(|s| s.contains("GET /after"))
    });
    let old = String::from_utf8_lossy(&oss.get("access.log.1")).into_owned();
    assert!(
        old.contains("GET /before") && !old.contains("GET /after"),
        "{old}"
    );
    let errors = std::fs::read_to_string(tmp.path().join("error.log")).unwrap_or_default();
    assert!(
        !errors.contains("[alert]") && !errors.contains("[emerg]"),
        "nginx errors: {errors}"
    );
    drop(_nginx);
    m.finish();
}

/// `rsync -a` of a directory into the mount, twice: the second run sends nothing, and
/// modes, owners and times are as rsync set them (stored, so another mount shows them).
#[test]
fn rsync_twice_sends_nothing_the_second_time() {
    if !have("rsync") {
        return;
    }
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    let src = tempfile::tempdir().expect("source dir");
    let s = src.path();
    sh_ok(
        s,
        "chmod 755 . && printf 'alpha\\n' > a.txt && printf 'beta beta\\n' > b.log && : > empty \
         && chmod 600 a.txt && chmod 640 b.log && chown 33:4 b.log \
         && touch -d '2021-03-04 05:06:07.123456789' a.txt && touch -d @1600000000 b.log empty",
    );
    let rsync = |what: &str| {
        let out = run(
            Command::new("rsync")
                .args(["-a", "--stats"])
                .arg(format!("{}/", s.display()))
                .arg(format!("{}/", m.path("dst").display())),
            Duration::from_secs(120),
        );
        assert!(
            out.ok(),
            "{what} rsync failed ({}): {}\n{}",
            out.status,
            out.stderr,
            m.log()
        );
        out.stdout()
    };
    let first = rsync("first");
    assert!(
        first.contains("Number of regular files transferred: 3"),
        "{first}"
    );
    let want = stat(s, "%n %a %u %g %s %.9Y", "a.txt b.log empty");
    let dst = m.path("dst");
    assert_eq!(stat(&dst, "%n %a %u %g %s %.9Y", "a.txt b.log empty"), want);
    let second = rsync("second");
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "second run sent files:\n{second}"
    );
    oss.assert_appendable("dst/b.log", b"beta beta\n");
    let other = Mount::bucket(&oss);
    assert_eq!(
        stat(
            &other.path("dst"),
            "%n %a %u %g %s %.9Y",
            "a.txt b.log empty"
        ),
        want
    );
    other.finish();
    m.finish();
}

/// The same rules on the core, without a kernel: no request for the value shown, recreate
/// when empty, pending until a rename, EPERM otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_rules() {
    let creds = Credentials::new("AKIDROT", "rot-secret");
    let srv = server::start(
        ServerConfig {
            credentials: Some(creds.clone()),
            buckets: vec!["bkt".into()],
            ..ServerConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("server");
    let client = Client::with_credentials(
        ClientConfig::new(&srv.endpoint(), "bkt").expect("cfg"),
        creds,
    )
    .expect("client");
    let core = Core::new(
        Arc::new(client.clone()),
        FsConfig {
            max_dirty: 1 << 24,
            ..fs_config(
                std::env::temp_dir()
                    .join(format!("appendfs-rotation-rescue-{}", std::process::id())),
                1 << 20,
                Duration::from_millis(50),
                Duration::from_secs(30),
            )
        },
    );
    let rw = OpenMode {
        write: true,
        read: true,
    };
    let mode = |m: u16| PosixMeta {
        mode: Some(m),
        ..PosixMeta::default()
    };
    // Exclusive, as a temp file is made.
    let (attr, fh) = core.create(ROOT, "f.log", true, rw).await.expect("create");
    let writes = |s: &std::collections::BTreeMap<String, u64>| {
        ["DeleteObject", "AppendObject"]
            .iter()
            .map(|k| s.get(*k).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let before = writes(&srv.stats());
    let same = core
        .setattr(attr.ino, None, mode(0o644))
        .await
        .expect("same");
    assert_eq!(same.mode, 0o644);
    assert_eq!(
        writes(&srv.stats()),
        before,
        "no request for the value shown"
    );
    let a = core
        .setattr(attr.ino, None, mode(0o600))
        .await
        .expect("empty");
    assert_eq!((a.ino, a.mode), (attr.ino, 0o600));
    let head = client.head_object("f.log").await.expect("head");
    assert_eq!(head.user_meta["mode"], ossfs_mode(0o600));
    core.write(fh, 0, Bytes::from_static(b"x\n"), true)
        .await
        .expect("write");
    // Buffered bytes make it non-empty even before they reach OSS.
    let a = core
        .setattr(attr.ino, None, mode(0o640))
        .await
        .expect("pending");
    assert_eq!(a.mode, 0o640);
    core.flush(fh).await.expect("flush");
    core.release(fh).await.expect("release");
    core.rename(ROOT, "f.log", ROOT, "g.log", false)
        .await
        .expect("rename");
    let head = client.head_object("g.log").await.expect("head");
    assert_eq!(head.user_meta["mode"], ossfs_mode(0o640));
    // Created without O_EXCL and written, or not created by this core: EPERM.
    let (plain, pfh) = core.create(ROOT, "p.log", false, rw).await.expect("create");
    core.write(pfh, 0, Bytes::from_static(b"p\n"), true)
        .await
        .expect("write");
    core.release(pfh).await.expect("release");
    let e = core
        .setattr(plain.ino, None, mode(0o600))
        .await
        .expect_err("non-empty, not a temp file");
    assert_eq!(e.errno(), libc::EPERM);
    client
        .append_object(
            "h.log",
            0,
            Bytes::from_static(b"h\n"),
            &CreateOptions::default(),
        )
        .await
        .expect("append");
    let h = core.lookup(ROOT, "h.log").await.expect("lookup");
    let e = core
        .setattr(h.ino, None, mode(0o600))
        .await
        .expect_err("non-empty, not created here");
    assert_eq!(e.errno(), libc::EPERM);
}
