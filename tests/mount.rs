//! The mount, for real: every test starts its own in-process OSS-compatible server (memory
//! storage, one key pair), mounts it with the built `appendfs mount ... -f` binary as a child
//! process on its own temporary directory, and drives it with ordinary tools (`sh`, `echo >>`,
//! `cat`, `tail -f`, `dd`, `cp`, `cmp`, `mv`, `mkdir`, `ls`, `rm`, `rmdir`) and plain syscalls,
//! checking bytes and errno values on the mount and the objects as the OSS API (our client, and
//! the official `oss2` SDK when `.venv` exists) sees them.
//!
//! Nothing here may hang the run: every child process and every syscall on the mount has a time
//! limit, every mount is unmounted by a guard (SIGTERM, then `umount -l` and SIGKILL), and the
//! server outlives the mounts that use it (it is declared first, so it is dropped last).
//!
//! Run: `cargo test --test mount -- --test-threads=2` (as root, with /dev/fuse).

use appendfs::client::{CreateOptions, ObjectType};
use appendfs::oss::crc64;
use appendfs::server::{self};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::*;

// -------------------------------------------------------------------------------------------
// The Check list of the mount issue

/// `echo >>` three times: `cat` shows the three lines, and the API (our client, and the oss2
/// SDK) sees one Appendable object with the right length, next position and CRC-64 (also as
/// `user.oss.*` xattrs). Then bytes of a writer that keeps the file open: shown by this mount
/// at once (read-your-writes), not on OSS before the flush interval, and appended on SIGTERM,
/// after which the mount exits 0.
#[test]
fn echo_appends_make_one_appendable_object() {
    let oss = Oss::start();
    let m = Mount::new(
        &oss,
        &format!("oss://{BUCKET}"),
        &["--flush-interval", "10s"],
    );
    sh_ok(
        m.dir(),
        "echo 'first line' >> app.log && echo 'second line' >> app.log && echo 'third line' >> app.log",
    );
    let want = b"first line\nsecond line\nthird line\n";
    let cat = sh_ok(m.dir(), "cat app.log");
    assert_eq!(cat.stdout, want);
    let md = bounded("stat", SHORT, {
        let p = m.path("app.log");
        move || std::fs::metadata(p)
    })
    .expect("stat");
    assert_eq!(md.len(), want.len() as u64);
    assert_eq!(md.permissions().mode() & 0o777, 0o644);
    oss.assert_appendable("app.log", want);

    // The object type and next position as read-only xattrs.
    let xattr = |name: &str| get_xattr(m.path("app.log"), name).ok();
    assert_eq!(
        xattr("user.oss.object-type").as_deref(),
        Some(&b"Appendable"[..])
    );
    assert_eq!(
        xattr("user.oss.next-append-position").as_deref(),
        Some(want.len().to_string().as_bytes())
    );
    assert_eq!(
        xattr("user.oss.crc64").as_deref(),
        Some(crc64::checksum(want).to_string().as_bytes())
    );

    if let Some(py) = oss2_python() {
        // oss2 checks the body's CRC against x-oss-hash-crc64ecma itself (enable_crc).
        let o = oss2_run(
            &py,
            &oss,
            "app.log",
            r#"
h = b.head_object(key)
body = b.get_object(key).read()
print(json.dumps({"type": h.object_type, "length": h.content_length,
                  "next": int(h.headers["x-oss-next-append-position"]),
                  "crc": str(h.server_crc), "body": body.decode()}))
"#,
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json from oss2");
        assert_eq!(v["type"], "Appendable", "{v}");
        assert_eq!(v["length"], want.len(), "{v}");
        assert_eq!(v["next"], want.len(), "{v}");
        assert_eq!(v["crc"], crc64::checksum(want).to_string(), "{v}");
        assert_eq!(v["body"], std::str::from_utf8(want).unwrap(), "{v}");
    }

    // A writer that keeps the file open: its bytes wait in the append buffer (the flush
    // interval is 10 s here), yet this mount already shows them (size and content: read-your-
    // writes) while OSS does not have them. SIGTERM must then append them before exiting.
    let mut writer = Feeder::open(m.dir(), "app.log");
    writer.write(b"fourth line\n");
    let mut want4 = want.to_vec();
    want4.extend_from_slice(b"fourth line\n");
    let p = m.path("app.log");
    let len4 = want4.len() as u64;
    let (size, content) = bounded("read-your-writes", SHORT, move || {
        let deadline = Instant::now() + SHORT;
        loop {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if size >= len4 || Instant::now() > deadline {
                return (size, std::fs::read(&p).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert_eq!(size, len4, "stat counts the buffered bytes");
    assert_bytes(&content, &want4, "read-your-writes");
    assert_eq!(
        oss.head("app.log").size,
        want.len() as u64,
        "the buffered line reached OSS before the flush interval or a close"
    );
    m.finish();
    drop(writer);
    oss.assert_appendable("app.log", &want4);
}

/// `tail -f` on the mount follows lines appended (a) through the same mount, (b) through a
/// second mount of the bucket, (c) by an API program (our client), (d) by the oss2 SDK, (e) by
/// a writer on the second mount that keeps the file open: every line arrives, in order,
/// exactly once, within [`TAIL_BOUND`] of its append.
#[test]
fn tail_follows_appends_from_everywhere() {
    let oss = Oss::start();
    let a = Mount::bucket(&oss);
    let b = Mount::bucket(&oss);
    sh_ok(a.dir(), "echo start >> follow.log");
    let mut tail = Tail::follow(&a.path("follow.log"));
    tail.wait_for("start", SHORT);

    let mut expected = vec!["start".to_string()];
    let mut appended: Vec<(String, Instant)> = Vec::new();
    let py = oss2_python();
    // Last, a writer on the other mount that keeps the file open (`cat >> f`, like a logger):
    // nothing closes or syncs, so only the flush interval (1 s) sends its lines.
    let phases: &[&str] = if py.is_some() {
        &[
            "same-mount",
            "other-mount",
            "api",
            "oss2-sdk",
            "open-writer",
        ]
    } else {
        &["same-mount", "other-mount", "api", "open-writer"]
    };
    let mut feeder: Option<Feeder> = None;
    for phase in phases {
        for i in 0..4 {
            let line = format!("{phase}-{i}");
            // When the append returned (for a process, as it reports it, not when it exited).
            let done = match *phase {
                "same-mount" => {
                    sh_ok(a.dir(), &format!("echo {line} >> follow.log"));
                    Instant::now()
                }
                "other-mount" => {
                    sh_ok(b.dir(), &format!("echo {line} >> follow.log"));
                    Instant::now()
                }
                "api" => {
                    oss.append_at_end("follow.log", format!("{line}\n").as_bytes());
                    Instant::now()
                }
                "open-writer" => {
                    feeder
                        .get_or_insert_with(|| Feeder::open(b.dir(), "follow.log"))
                        .write(format!("{line}\n").as_bytes());
                    Instant::now()
                }
                _ => {
                    let o = oss2_run(
                        py.as_deref().expect("oss2"),
                        &oss,
                        "follow.log",
                        &format!(
                            r#"
h = b.head_object(key)
b.append_object(key, int(h.headers["x-oss-next-append-position"]), b"{line}\n", init_crc=h.server_crc)
import time
print(time.time())
"#
                        ),
                    );
                    // Wall-clock seconds when oss2 had the answer → an Instant.
                    let at: f64 = o.stdout().trim().parse().expect("time from python");
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64();
                    Instant::now() - Duration::from_secs_f64((now - at).max(0.0))
                }
            };
            appended.push((line.clone(), done));
            expected.push(line);
            // Appends at different points of tail's one-second polling cycle.
            std::thread::sleep(Duration::from_millis(330));
        }
    }
    let mut latencies: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for (line, at) in &appended {
        let arrived = tail.wait_for(line, SHORT);
        let phase = line.rsplit_once('-').unwrap().0.to_string();
        latencies
            .entry(phase)
            .or_default()
            .push(arrived.saturating_duration_since(*at));
    }
    // Closing the kept-open file flushes nothing new; late duplicates would show up within a
    // poll or two.
    feeder.take().expect("the open-writer phase ran").close();
    tail.settle(Duration::from_millis(2500));
    assert_eq!(
        tail.lines(),
        expected,
        "tail -f must output every line once, in order"
    );
    let mut all = Vec::new();
    for phase in phases {
        let mut l = latencies[*phase].clone();
        l.sort();
        eprintln!(
            "tail -f latency, appends via {phase}: min {:?}, median {:?}, max {:?}",
            l[0],
            percentile(&l, 0.5),
            l[l.len() - 1]
        );
        all.extend(l);
    }
    all.sort();
    let worst = all[all.len() - 1];
    assert!(
        worst < TAIL_BOUND,
        "append → tail -f latency {worst:?} is over {TAIL_BOUND:?}"
    );
    let content: String = expected.iter().map(|l| format!("{l}\n")).collect();
    oss.assert_appendable("follow.log", content.as_bytes());
    drop(tail);
    b.finish();
    a.finish();
}

/// Random writes and writes to objects that are not Appendable fail with EPERM and change
/// nothing; writes at the end are fine.
#[test]
fn random_writes_and_non_appendable_objects_are_refused() {
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    sh_ok(m.dir(), "printf 'abcdef\\n' >> f.log");
    let crc_before = oss.head("f.log").crc64;

    // dd seeks to 1 and writes there without O_APPEND.
    sh_fails(
        m.dir(),
        "dd if=/dev/zero of=f.log bs=1 count=2 seek=1 conv=notrunc",
        "Operation not permitted",
    );
    // The same as syscalls, for the errno.
    let p = m.path("f.log");
    let (mid, end) = bounded("pwrite", SHORT, move || {
        let f = OpenOptions::new()
            .write(true)
            .open(p)
            .expect("open for writing");
        (
            errno_of(f.write_at(b"zz", 1)),
            f.write_at(b"ghi\n", 7).map_err(|e| e.to_string()),
        )
    });
    assert_eq!(mid, Some(libc::EPERM), "pwrite in the middle");
    assert_eq!(end, Ok(4), "pwrite at the end is an append");
    let content = b"abcdef\nghi\n";
    assert_eq!(sh_ok(m.dir(), "cat f.log").stdout, content);
    oss.assert_appendable("f.log", content);
    assert_ne!(oss.head("f.log").crc64, crc_before);

    // Truncation to another size, chmod, hard links: refused.
    sh_fails(m.dir(), "truncate -s 3 f.log", "Operation not permitted");
    let p = m.path("f.log");
    let q = m.path("hard.log");
    let (trunc, chmod, link) = bounded("truncate/chmod/link", SHORT, move || {
        let f = OpenOptions::new().write(true).open(&p).expect("open");
        (
            errno_of(f.set_len(3)),
            errno_of(std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode(0o600),
            )),
            errno_of(std::fs::hard_link(&p, &q)),
        )
    });
    assert_eq!(trunc, Some(libc::EPERM), "ftruncate to 3");
    assert_eq!(chmod, Some(libc::EPERM), "chmod");
    assert_eq!(link, Some(libc::EPERM), "link");
    oss.assert_appendable("f.log", content);

    // An object made by PutObject is Normal: appending to it is refused, and it stays as it is.
    oss.put("put.txt", b"normal object\n");
    let before = oss.head("put.txt");
    assert_eq!(before.object_type, Some(ObjectType::Normal));
    sh_fails(m.dir(), "echo x >> put.txt", "Operation not permitted");
    let p = m.path("put.txt");
    let (append, write) = bounded("open put.txt", SHORT, move || {
        (
            errno_of(OpenOptions::new().append(true).open(&p)),
            errno_of(OpenOptions::new().write(true).open(&p)),
        )
    });
    assert_eq!(
        append,
        Some(libc::EPERM),
        "open(O_APPEND) of a Normal object"
    );
    assert_eq!(
        write,
        Some(libc::EPERM),
        "open(O_WRONLY) of a Normal object"
    );
    let after = oss.head("put.txt");
    assert_eq!(after.object_type, Some(ObjectType::Normal));
    assert_eq!(after.etag, before.etag);
    assert_eq!(after.crc64, before.crc64);
    assert_eq!(oss.get("put.txt"), b"normal object\n");
    assert_eq!(sh_ok(m.dir(), "cat put.txt").stdout, b"normal object\n");
    // The refusal is logged with the object and its type.
    let log = m.finish();
    assert!(
        log.lines()
            .any(|l| l.contains("put.txt") && l.contains("Normal") && l.contains("refusing")),
        "no log line names put.txt, its type and the refusal:\n{log}"
    );
}

/// `cp` of a 50 MiB random file in and `cat` out are byte-identical, and the object is one
/// Appendable object with the file's CRC-64.
#[test]
fn copy_50_mib_in_and_out() {
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    let scratch = tempfile::tempdir().expect("scratch dir");
    let src = scratch.path().join("random.bin");
    let mut data = vec![0u8; 50 << 20];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("random bytes");
    std::fs::write(&src, &data).expect("write the source file");
    let out = scratch.path().join("out.bin");
    let cp = run(
        Command::new("cp").arg(&src).arg(m.path("big.bin")),
        Duration::from_secs(90),
    );
    assert!(cp.ok(), "cp: {}", cp.stderr);
    let cmp = run(
        Command::new("cmp").arg(&src).arg(m.path("big.bin")),
        Duration::from_secs(90),
    );
    assert!(cmp.ok(), "cmp: {} {}", cmp.stdout(), cmp.stderr);
    let cat = sh_in(
        m.dir(),
        &format!("cat big.bin > '{}'", out.display()),
        Duration::from_secs(90),
    );
    assert!(cat.ok(), "cat: {}", cat.stderr);
    let back = std::fs::read(&out).expect("read back");
    assert!(back == data, "cat out differs from what cp put in");
    eprintln!(
        "50 MiB: cp in {:?}, cmp {:?}, cat out {:?}",
        cp.took, cmp.took, cat.took
    );
    let meta = oss.head("big.bin");
    assert_eq!(meta.object_type, Some(ObjectType::Appendable));
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.crc64, Some(crc64::checksum(&data)));
    m.finish();
}

/// `mv` of a file keeps its bytes and leaves an Appendable object with the same CRC-64;
/// `mkdir -p`, `ls`, `rm`, `rmdir` (ENOTEMPTY when something is below) behave; `echo x >
/// existing.log` replaces the file.
#[test]
fn mv_mkdir_ls_rm_rmdir_and_replace() {
    let oss = Oss::start();
    let m = Mount::bucket(&oss);

    // mv
    sh_ok(m.dir(), "printf 'one\\ntwo\\n' >> a.log");
    let crc = oss.head("a.log").crc64;
    sh_ok(m.dir(), "mv a.log b.log");
    assert_eq!(sh_ok(m.dir(), "ls").stdout(), "b.log\n");
    assert_eq!(sh_ok(m.dir(), "cat b.log").stdout, b"one\ntwo\n");
    let p = m.path("a.log");
    assert_eq!(
        bounded("stat a.log", SHORT, move || errno_of(std::fs::metadata(p))),
        Some(libc::ENOENT)
    );
    assert!(oss.missing("a.log"), "a.log must be gone after mv");
    oss.assert_appendable("b.log", b"one\ntwo\n");
    assert_eq!(oss.head("b.log").crc64, crc, "same CRC-64 after mv");
    // Still appendable under its new name.
    sh_ok(m.dir(), "echo three >> b.log");
    assert_eq!(sh_ok(m.dir(), "cat b.log").stdout, b"one\ntwo\nthree\n");
    oss.assert_appendable("b.log", b"one\ntwo\nthree\n");
    // mv onto an existing file replaces it.
    sh_ok(m.dir(), "echo other >> c.log && mv c.log b.log");
    assert_eq!(sh_ok(m.dir(), "ls").stdout(), "b.log\n");
    assert_eq!(sh_ok(m.dir(), "cat b.log").stdout, b"other\n");
    oss.assert_appendable("b.log", b"other\n");
    assert!(oss.missing("c.log"));

    // A directory: rename says EXDEV, and mv copies the tree instead (complaining on stderr
    // that it cannot preserve modes and the read-only user.oss.* xattrs, by design).
    sh_ok(
        m.dir(),
        "mkdir tree && echo f >> tree/f.log && mkdir tree/sub && echo g >> tree/sub/g.log",
    );
    let p = m.path("tree");
    let q = m.path("moved");
    assert_eq!(
        bounded("rename(dir)", SHORT, move || errno_of(std::fs::rename(
            p, q
        ))),
        Some(libc::EXDEV)
    );
    sh_ok(m.dir(), "mv tree moved");
    assert_eq!(
        sh_ok(
            m.dir(),
            "ls; find moved -type f | sort; cat moved/f.log moved/sub/g.log"
        )
        .stdout(),
        "b.log\nmoved\nmoved/f.log\nmoved/sub/g.log\nf\ng\n"
    );
    oss.assert_appendable("moved/f.log", b"f\n");
    oss.assert_appendable("moved/sub/g.log", b"g\n");
    assert!(oss.keys("tree").is_empty(), "{:?}", oss.keys("tree"));
    sh_ok(m.dir(), "rm -r moved");
    assert!(oss.keys("moved").is_empty(), "{:?}", oss.keys("moved"));

    // Removing a file that is open for writing: bytes still buffered are dropped (the object
    // is not brought back), and later writes through the handle fail with ESTALE.
    let p = m.path("open.log");
    let (removed, late) = bounded("rm while open", SHORT, move || {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&p)
            .expect("create");
        f.write_all(b"a\n").expect("write");
        let removed = std::fs::remove_file(&p).map_err(|e| e.to_string());
        let late = errno_of(f.write_all(b"b\n"));
        (removed, late)
    });
    assert_eq!(removed, Ok(()));
    assert_eq!(late, Some(libc::ESTALE), "write after unlink");
    std::thread::sleep(Duration::from_millis(1500)); // past the flush interval
    assert!(oss.missing("open.log"), "the removed object came back");
    assert_eq!(sh_ok(m.dir(), "ls").stdout(), "b.log\n");

    // Directories.
    sh_ok(m.dir(), "mkdir -p a/b/c");
    assert_eq!(sh_ok(m.dir(), "ls").stdout(), "a\nb.log\n");
    assert_eq!(sh_ok(m.dir(), "ls a").stdout(), "b\n");
    assert_eq!(sh_ok(m.dir(), "ls a/b").stdout(), "c\n");
    assert_eq!(sh_ok(m.dir(), "ls a/b/c").stdout(), "");
    assert!(sh_ok(m.dir(), "test -d a/b/c && echo dir").stdout() == "dir\n");
    sh_fails(m.dir(), "mkdir a", "File exists");
    sh_ok(m.dir(), "echo deep >> a/b/c/f.txt");
    assert_eq!(sh_ok(m.dir(), "ls a/b/c").stdout(), "f.txt\n");
    assert_eq!(sh_ok(m.dir(), "cat a/b/c/f.txt").stdout, b"deep\n");
    oss.assert_appendable("a/b/c/f.txt", b"deep\n");
    sh_fails(m.dir(), "rmdir a/b/c", "Directory not empty");
    sh_fails(m.dir(), "rmdir a", "Directory not empty");
    let p = m.path("a/b");
    assert_eq!(
        bounded("rmdir a/b", SHORT, move || errno_of(std::fs::remove_dir(p))),
        Some(libc::ENOTEMPTY)
    );
    sh_ok(m.dir(), "rm a/b/c/f.txt");
    assert!(oss.missing("a/b/c/f.txt"));
    assert_eq!(sh_ok(m.dir(), "ls a/b/c").stdout(), "");
    sh_fails(m.dir(), "cat a/b/c/f.txt", "No such file or directory");
    sh_ok(m.dir(), "rmdir a/b/c && rmdir a/b && rmdir a");
    sh_fails(m.dir(), "rmdir a", "No such file or directory");
    assert_eq!(sh_ok(m.dir(), "ls").stdout(), "b.log\n");
    assert_eq!(oss.keys(""), vec!["b.log".to_string()]);

    // `>` onto an existing file replaces it with exactly the new bytes.
    sh_ok(
        m.dir(),
        "printf 'old content, longer than x\\n' >> existing.log",
    );
    sh_ok(m.dir(), "echo x > existing.log");
    assert_eq!(sh_ok(m.dir(), "cat existing.log").stdout, b"x\n");
    oss.assert_appendable("existing.log", b"x\n");
    sh_ok(m.dir(), "echo y >> existing.log");
    assert_eq!(sh_ok(m.dir(), "cat existing.log").stdout, b"x\ny\n");
    oss.assert_appendable("existing.log", b"x\ny\n");
    m.finish();
}

/// `getxattr(path, name)`, bounded in time: the value, or the errno.
fn get_xattr(path: PathBuf, name: &str) -> Result<Vec<u8>, i32> {
    let name = name.to_string();
    bounded("getxattr", SHORT, move || {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
        let name = std::ffi::CString::new(name).expect("name");
        let mut buf = vec![0u8; 256];
        // SAFETY: valid NUL-terminated strings and a buffer of the given length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        buf.truncate(n as usize);
        Ok(buf)
    })
}

/// `-o noxattr` (`--no-xattrs`): no extended attribute is answered, not even `user.oss.*`
/// (ENOTSUP, so `cp -a` stays quiet), and appending and reading work as ever.
#[test]
fn no_xattrs_answers_none() {
    let oss = Oss::start();
    let m = Mount::new(&oss, &format!("oss://{BUCKET}"), &["-o", "noxattr"]);
    sh_ok(m.dir(), "echo line >> app.log");
    assert_eq!(sh_ok(m.dir(), "cat app.log").stdout, b"line\n");
    for name in ["user.oss.object-type", "security.selinux"] {
        assert_eq!(
            get_xattr(m.path("app.log"), name),
            Err(libc::EOPNOTSUPP),
            "{name}"
        );
    }
    oss.assert_appendable("app.log", b"line\n");
    m.finish();
}

/// The lines two writers append, checked: each exactly once, none torn, each writer's in order.
fn check_interleaved(content: &[u8], writers: &[&str], per_writer: usize, pad: &str) {
    let text = std::str::from_utf8(content).expect("UTF-8");
    assert!(text.ends_with('\n'), "content must end with a whole line");
    let lines: Vec<&str> = text.lines().collect();
    let mut next: BTreeMap<&str, usize> = writers.iter().map(|w| (*w, 0)).collect();
    for (i, line) in lines.iter().enumerate() {
        let (w, rest) = line
            .split_once('-')
            .unwrap_or_else(|| panic!("line {i} is torn: {line:?}"));
        let n = next
            .get_mut(w)
            .unwrap_or_else(|| panic!("line {i} is torn: {line:?}"));
        let want = format!("{w}-{:03}-{pad}", *n);
        assert_eq!(
            *line, want,
            "line {i}: torn, duplicated or out of order (writer {w} is at {})",
            *n
        );
        let _ = rest;
        *n += 1;
    }
    for (w, n) in next {
        assert_eq!(
            n, per_writer,
            "writer {w}: {n} of {per_writer} lines present"
        );
    }
    assert_eq!(lines.len(), writers.len() * per_writer);
    let switches = lines
        .windows(2)
        .filter(|w| w[0].split('-').next() != w[1].split('-').next())
        .count();
    eprintln!("{} lines, the writer changes {switches} times", lines.len());
    // Both writers ran at the same time, so their lines interleave. A writer that keeps
    // losing the position race and backs off each time only gets through once the other has
    // finished (one change): starvation.
    assert!(
        switches >= 10,
        "the writers' lines barely interleave ({switches} changes): one was starved"
    );
}

const PER_WRITER: usize = 200;

fn writer_loop(path: &str, id: &str, pad: &str) -> String {
    format!(
        "for i in $(seq -f %03g 0 {}); do echo \"{id}-$i-{pad}\" >> {path} || exit 1; done",
        PER_WRITER - 1
    )
}

/// Reads on the mount that is writing a file (read-your-writes) return exactly the bytes
/// written, also while chunks are being confirmed: the end of the file is re-read with O_DIRECT
/// (every read reaches the mount) while a kept-open writer appends a line every 2 ms, with a
/// 10 ms flush interval and a server that answers every request after 15 ms, so confirmations
/// land while reads wait for their GET.
#[test]
fn reads_during_appends_return_exact_bytes() {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let oss = Oss::start();
    let m = Mount::new(
        &oss,
        &format!("oss://{BUCKET}"),
        &["--flush-interval", "10ms"],
    );
    oss.server
        .as_ref()
        .unwrap()
        .set_faults(server::FaultPlan::parse("delay:15").unwrap());
    let lines: Vec<String> = (0..800)
        .map(|i| format!("{i:05}-{}\n", "r".repeat(58)))
        .collect();
    let full: Arc<Vec<u8>> = Arc::new(lines.concat().into_bytes());
    let mut feeder = Feeder::open(m.dir(), "busy.log");
    feeder.write(lines[0].as_bytes());
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (p, full, done) = (m.path("busy.log"), full.clone(), done.clone());
        std::thread::spawn(move || -> (u64, Vec<String>) {
            // `cat >> busy.log` creates the file once its shell runs.
            let deadline = Instant::now() + SHORT;
            let f = loop {
                match OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&p)
                {
                    Ok(f) => break f,
                    Err(e) if Instant::now() > deadline => panic!("open O_DIRECT: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            let mut buf = vec![0u8; 1 << 20];
            let (mut reads, mut wrong) = (0u64, Vec::new());
            while !done.load(Ordering::SeqCst) {
                let size = f.metadata().expect("fstat").len();
                let off = size.saturating_sub(64 << 10);
                let n = f.read_at(&mut buf, off).expect("pread");
                reads += 1;
                let want = &full[(off as usize).min(full.len())..];
                let got = &buf[..n];
                if !want.starts_with(got) {
                    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                    wrong.push(format!(
                        "pread({off}) returned {:?} at {}",
                        String::from_utf8_lossy(&got[at..(at + 12).min(got.len())]),
                        off as usize + at
                    ));
                }
            }
            (reads, wrong)
        })
    };
    for line in &lines[1..] {
        feeder.write(line.as_bytes());
        std::thread::sleep(Duration::from_millis(2));
    }
    feeder.close();
    done.store(true, Ordering::SeqCst);
    let (reads, wrong) = bounded("reader", SHORT, move || reader.join().expect("reader"));
    eprintln!("{reads} reads at the end of a file being appended to");
    assert!(
        wrong.is_empty(),
        "{} of {reads} reads returned bytes that are not the file's: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(reads >= 20, "only {reads} reads ran");
    oss.server
        .as_ref()
        .unwrap()
        .set_faults(server::FaultPlan::none());
    oss.assert_appendable("busy.log", &full);
    m.finish();
}

/// Two processes appending to one file through one mount: every line exactly once, none torn.
#[test]
fn two_appenders_on_one_mount() {
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    let pad = "x".repeat(100);
    let script = format!(
        "( {} ) & p1=$!; ( {} ) & p2=$!; wait $p1 || exit 1; wait $p2 || exit 1",
        writer_loop("shared.log", "P1", &pad),
        writer_loop("shared.log", "P2", &pad)
    );
    let o = sh_in(m.dir(), &script, Duration::from_secs(120));
    assert!(o.ok(), "writers failed: {}", o.stderr);
    eprintln!("2 × {PER_WRITER} appends through one mount: {:?}", o.took);
    let via_mount = sh_ok(m.dir(), "cat shared.log").stdout;
    check_interleaved(&via_mount, &["P1", "P2"], PER_WRITER, &pad);
    oss.assert_appendable("shared.log", &via_mount);
    m.finish();
}

/// Two mounts appending to one object with O_APPEND: every line exactly once, none torn.
#[test]
fn two_mounts_append_to_one_object() {
    let oss = Oss::start();
    let a = Mount::bucket(&oss);
    let b = Mount::bucket(&oss);
    let pad = "y".repeat(100);
    sh_ok(a.dir(), ": >> shared.log");
    let script = format!(
        "( {} ) & p1=$!; ( {} ) & p2=$!; wait $p1 || exit 1; wait $p2 || exit 1",
        writer_loop(&a.path("shared.log").to_string_lossy(), "A", &pad),
        writer_loop(&b.path("shared.log").to_string_lossy(), "B", &pad)
    );
    let before = oss.stats();
    let o = sh_in(a.dir(), &script, Duration::from_secs(150));
    assert!(o.ok(), "writers failed: {}", o.stderr);
    let delta = stats_delta(&before, &oss.stats());
    eprintln!(
        "2 mounts × {PER_WRITER} O_APPEND appends to one object: {:?}; requests {delta:?}",
        o.took
    );
    let content = oss.get("shared.log");
    check_interleaved(&content, &["A", "B"], PER_WRITER, &pad);
    oss.assert_appendable("shared.log", &content);
    // Each mount shows the other's appends within the metadata TTL (1 s): wait that out.
    std::thread::sleep(Duration::from_millis(1200));
    assert_bytes(
        &sh_ok(a.dir(), "cat shared.log").stdout,
        &content,
        "cat via mount A",
    );
    assert_bytes(
        &sh_ok(b.dir(), "cat shared.log").stdout,
        &content,
        "cat via mount B",
    );
    b.finish();
    a.finish();
}

/// A prefix holding 2,000 keys lists completely (several ListObjectsV2 pages) through a mount
/// of that prefix; keys outside it do not show.
#[test]
fn two_thousand_keys_list_completely() {
    let oss = Oss::start();
    let names: Vec<String> = (0..2000).map(|i| format!("key-{i:04}.log")).collect();
    let client = oss.client.clone();
    let keys: Vec<String> = names
        .iter()
        .map(|n| format!("many/{n}"))
        .chain(["many/sub/inner.log".into(), "elsewhere.log".into()])
        .collect();
    oss.call("create 2,002 objects", async move {
        let results: Vec<_> = futures::stream::iter(keys)
            .map(|k| {
                let c = client.clone();
                async move {
                    let r = c
                        .append_object(&k, 0, Bytes::from(k.clone()), &CreateOptions::default())
                        .await;
                    (k, r)
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for (k, r) in results {
            r.unwrap_or_else(|e| panic!("create {k}: {e}"));
        }
    });
    let m = Mount::new(&oss, &format!("oss://{BUCKET}/many"), &[]);
    let before = oss.stats();
    let ls = sh_ok(m.dir(), "ls -1");
    let lists = stats_delta(&before, &oss.stats())
        .get("ListObjectsV2")
        .copied()
        .unwrap_or(0);
    let mut want: Vec<String> = names.clone();
    want.push("sub".into());
    want.sort();
    let got: Vec<String> = ls.stdout().lines().map(str::to_string).collect();
    assert_eq!(got.len(), 2001, "ls shows {} entries", got.len());
    assert!(
        got == want,
        "ls output differs from the 2,001 expected names"
    );
    assert!(
        lists >= 2,
        "2,000 keys need at least two ListObjectsV2 pages; saw {lists} requests"
    );
    let count = sh_ok(m.dir(), "ls | wc -l").stdout();
    assert_eq!(count.trim(), "2001");
    assert_eq!(
        sh_ok(m.dir(), "cat key-1999.log").stdout,
        b"many/key-1999.log"
    );
    assert_eq!(sh_ok(m.dir(), "ls sub").stdout(), "inner.log\n");
    // telldir/seekdir across ListObjectsV2 pages: an offset the kernel was given resumes at
    // the same entry; rewinddir lists everything again.
    let seek = sh_ok(
        m.dir(),
        r#"perl -e 'opendir(my $d, ".") or die; my @seen;
            for (1..1500) { my $p = telldir($d); push @seen, [$p, scalar readdir($d)]; }
            for my $i (10, 700, 999, 1001, 1499, 3) {
                seekdir($d, $seen[$i][0]); my $n = readdir($d);
                die "entry $i: $n, was $seen[$i][1]\n" unless $n eq $seen[$i][1];
            }
            rewinddir($d); my ($all, %names) = (0);
            while (defined(my $n = readdir($d))) { $all++; $names{$n}++; }
            print $all, " ", scalar(keys %names), "\n"'"#,
    );
    assert_eq!(
        seek.stdout().trim(),
        "2003 2003",
        "2,001 names and . and .., each once"
    );
    // Files made through a prefix mount live under the prefix.
    sh_ok(m.dir(), "echo new >> new.log");
    oss.assert_appendable("many/new.log", b"new\n");
    assert!(oss.missing("new.log"));
    eprintln!(
        "ls of 2,000 keys: {:?} with {lists} ListObjectsV2 requests",
        ls.took
    );
    m.finish();
}

/// Once the mount knows the object's position, one `echo line >> f` costs one AppendObject and
/// no HEAD. Prints the full request delta of each step.
///
/// What the steps cost and why: creating costs a ListObjectsV2 and a HEAD (the kernel's lookup
/// of the new name, both answered "absent"), an empty AppendObject at position 0 (`create`
/// makes the object at once) and the AppendObject of the line. Later appends cost exactly one
/// AppendObject: the name is cached by the kernel (entry TTL = metadata TTL), `open` reuses the
/// mount's append stream, whose position and CRC come from the previous answer, and `close`
/// sends the line. Once the metadata TTL (1 s) has passed, the kernel looks the name up again
/// and the mount answers that from one fresh HEAD (the freshness rule), so a slow writer pays
/// one HEAD per TTL; the append itself still needs none.
#[test]
fn one_echo_costs_one_append_object() {
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    let step = |what: &str, script: &str| -> BTreeMap<String, u64> {
        let before = oss.stats();
        sh_ok(m.dir(), script);
        let d = stats_delta(&before, &oss.stats());
        eprintln!("requests for {what}: {d:?}");
        d
    };
    let one_append: BTreeMap<String, u64> = [("AppendObject".to_string(), 1)].into();
    let ten_appends: BTreeMap<String, u64> = [("AppendObject".to_string(), 10)].into();
    // The claims hold within the metadata TTL of the create; on a machine too loaded to run
    // the steps within it, start over on a new file rather than assert something else.
    let mut checked = None;
    for attempt in 0..4 {
        let file = format!("cost-{attempt}.log");
        let t0 = Instant::now();
        let create = step(
            "the first `echo >>` (creates)",
            &format!("echo one >> {file}"),
        );
        let second = step("the second `echo >>`", &format!("echo two >> {file}"));
        let third = step("one more `echo >>`", &format!("echo three >> {file}"));
        let more = step(
            "10 more `echo >>` in a row",
            &format!("for i in 1 2 3 4 5 6 7 8 9 10; do echo more-$i >> {file}; done"),
        );
        let took = t0.elapsed();
        if took > Duration::from_millis(800) {
            eprintln!("the steps took {took:?}, too close to the 1 s metadata TTL: again");
            continue;
        }
        assert_eq!(
            create.get("AppendObject"),
            Some(&2),
            "creating with `echo >>`: the empty object, then the line ({create:?})"
        );
        assert_eq!(second, one_append, "the second `echo >>`");
        assert_eq!(
            third, one_append,
            "one `echo >>` must cost exactly one AppendObject and no HEAD"
        );
        assert_eq!(more, ten_appends, "10 × `echo >>`");
        checked = Some(file);
        break;
    }
    let file = checked.expect("the steps never ran within the metadata TTL");
    // After the metadata TTL the kernel's lookup is answered from one fresh HEAD.
    std::thread::sleep(Duration::from_millis(1300));
    let stale = step(
        "one `echo >>` after the metadata TTL",
        &format!("echo late >> {file}"),
    );
    assert_eq!(stale.get("AppendObject"), Some(&1), "{stale:?}");
    assert!(
        stale.get("HeadObject").copied().unwrap_or(0) <= 1
            && stale
                .keys()
                .all(|k| k == "AppendObject" || k == "HeadObject"),
        "{stale:?}"
    );
    let mut want = b"one\ntwo\nthree\n".to_vec();
    for i in 1..=10 {
        want.extend_from_slice(format!("more-{i}\n").as_bytes());
    }
    want.extend_from_slice(b"late\n");
    oss.assert_appendable(&file, &want);
    m.finish();
}

// -------------------------------------------------------------------------------------------
// `appendfs mount` without -f: fails fast and clearly, or returns once live

/// A mount point for the background-mount tests, with a guard that ends whatever daemon
/// mounted there.
struct Background {
    dir: tempfile::TempDir,
    mountpoint: PathBuf,
}

impl Background {
    fn new() -> Background {
        let dir = tempfile::Builder::new()
            .prefix("appendfs-bg-")
            .tempdir()
            .expect("temp dir");
        let mountpoint = dir.path().canonicalize().unwrap().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        Background { dir, mountpoint }
    }

    /// `appendfs mount URL MOUNTPOINT --endpoint EP` (no -f) with these credentials.
    fn mount(&self, endpoint: &str, url: &str, key_id: Option<&str>, secret: Option<&str>) -> Out {
        let mut cmd = mount_command(endpoint, url, &self.mountpoint, &[]);
        cmd.env_remove("OSS_ACCESS_KEY_ID")
            .env_remove("OSS_ACCESS_KEY_SECRET");
        if let Some(k) = key_id {
            cmd.env("OSS_ACCESS_KEY_ID", k);
        }
        if let Some(s) = secret {
            cmd.env("OSS_ACCESS_KEY_SECRET", s);
        }
        run(&mut cmd, Duration::from_secs(30))
    }

    /// Daemons serving this mount point (found by their command line).
    fn daemons(&self) -> Vec<i32> {
        let mp = self.mountpoint.to_string_lossy().into_owned();
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
            if args.iter().any(|a| a == &mp)
                && args.iter().any(|a| a == "--foreground")
                && !is_gone(pid)
            {
                pids.push(pid);
            }
        }
        pids
    }
}

/// Exited (no such process, or a zombie nobody reaped).
fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for pid in self.daemons() {
            // SAFETY: kill(2) on a daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + UNMOUNT;
            while !is_gone(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !is_gone(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if is_mounted(&self.mountpoint) {
            lazy_unmount(&self.mountpoint);
        }
        let _ = &self.dir;
    }
}

/// Wrong secret, unknown key id, no credentials, missing bucket, dead endpoint: `appendfs
/// mount` (daemonizing) fails fast with a non-zero exit and a message naming the problem, and
/// nothing is mounted.
#[test]
fn background_mount_fails_fast_and_clearly() {
    let oss = Oss::start();
    let ep = oss.endpoint();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let url = format!("oss://{BUCKET}");
    /// What is wrong, endpoint, URL, key id, secret, and words the message must contain.
    type Case<'a> = (
        &'a str,
        &'a str,
        String,
        Option<&'a str>,
        Option<&'a str>,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            ep.as_str(),
            url.clone(),
            Some(AK),
            Some("not-the-secret"),
            vec!["OSS_ACCESS_KEY_SECRET", "signature"],
        ),
        (
            "unknown key id",
            ep.as_str(),
            url.clone(),
            Some("NOSUCHKEYID"),
            Some(SK),
            vec!["OSS_ACCESS_KEY_ID", "NOSUCHKEYID"],
        ),
        (
            "no credentials",
            ep.as_str(),
            url.clone(),
            None,
            None,
            vec!["OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"],
        ),
        (
            "missing bucket",
            ep.as_str(),
            "oss://no-such-bucket".into(),
            Some(AK),
            Some(SK),
            vec!["no-such-bucket", "does not exist"],
        ),
        (
            "dead endpoint",
            dead.as_str(),
            url.clone(),
            Some(AK),
            Some(SK),
            vec!["cannot connect", &dead],
        ),
    ];
    for (what, endpoint, url, key_id, secret, words) in cases {
        let bg = Background::new();
        let o = bg.mount(endpoint, &url, key_id, secret);
        let err = strip_ansi(&o.stderr);
        eprintln!(
            "{what}: exit {} after {:?}: {}",
            o.status,
            o.took,
            err.trim()
        );
        assert!(!o.ok(), "{what}: the mount must fail; stderr {err}");
        assert!(
            o.took < Duration::from_secs(10),
            "{what}: took {:?}; a bad configuration must fail fast",
            o.took
        );
        assert_eq!(
            err.matches("cannot mount").count(),
            1,
            "{what}: the error must be printed once, whole: {err}"
        );
        for w in words {
            assert!(
                err.contains(w),
                "{what}: the message must mention {w:?}: {err}"
            );
        }
        assert!(!is_mounted(&bg.mountpoint), "{what}: mounted anyway");
        assert!(bg.daemons().is_empty(), "{what}: a daemon stayed behind");
    }
}

/// With a good configuration `appendfs mount` (no -f) exits 0 once the mount is live; `umount`
/// then ends the daemon after flushing.
#[test]
fn background_mount_releases_the_callers_output_and_logs_to_its_file() {
    // `out=$(appendfs mount ...)` must return once the mount is live: the daemon may not keep
    // the caller's stdout/stderr pipe open. Its log goes to --log-file instead.
    let oss = Oss::start();
    let bg = Background::new();
    let log = bg.dir.path().join("daemon.log");
    let cmd = mount_command(
        &oss.endpoint(),
        &format!("oss://{BUCKET}"),
        &bg.mountpoint,
        &[&format!("--log-file={}", log.display())],
    );
    let line = format!(
        "out=$({} 2>&1); echo \"rc=$? out=[$out]\"",
        shell_words(&cmd)
    );
    let o = run(
        Command::new("sh")
            .arg("-c")
            .arg(&line)
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?)))),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("rc=0 out=[]"), "{stdout} {}", o.stderr);
    assert!(is_mounted(&bg.mountpoint));
    sh_ok(&bg.mountpoint, "echo logged >> l.log");
    let daemons = bg.daemons();
    let um = run(Command::new("umount").arg(&bg.mountpoint), SHORT);
    assert!(um.ok(), "umount: {}", um.stderr);
    let deadline = Instant::now() + UNMOUNT;
    while daemons.iter().any(|d| !is_gone(*d)) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit after umount"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).expect("the daemon wrote its log file");
    assert!(text.contains("mounted"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes in a log file");
}

/// A command line as `sh` would need it: program and arguments, each single-quoted.
fn shell_words(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn background_mount_returns_when_live_and_ends_on_umount() {
    let oss = Oss::start();
    let bg = Background::new();
    let o = bg.mount(
        &oss.endpoint(),
        &format!("oss://{BUCKET}"),
        Some(AK),
        Some(SK),
    );
    assert!(o.ok(), "appendfs mount failed: {}", strip_ansi(&o.stderr));
    assert!(
        is_mounted(&bg.mountpoint),
        "appendfs mount returned 0 before the mount was live"
    );
    eprintln!("background mount live after {:?}", o.took);
    let daemons = bg.daemons();
    assert_eq!(daemons.len(), 1, "one daemon expected: {daemons:?}");
    sh_ok(&bg.mountpoint, "echo daemon >> bg.log && cat bg.log");
    oss.assert_appendable("bg.log", b"daemon\n");
    let um = run(Command::new("umount").arg(&bg.mountpoint), SHORT);
    assert!(um.ok(), "umount: {}", um.stderr);
    let deadline = Instant::now() + UNMOUNT;
    while !is_gone(daemons[0]) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit within {UNMOUNT:?} of umount"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&bg.mountpoint));
    oss.assert_appendable("bg.log", b"daemon\n");
}

/// A server that fails mid-request (answers lost after applying, connections reset, 500s):
/// every `echo >>` through the mount still lands exactly once, and reads retry through 500s.
#[test]
fn appends_and_reads_survive_a_failing_server() {
    let oss = Oss::start();
    let m = Mount::bucket(&oss);
    sh_ok(m.dir(), ": >> flaky.log");
    let faults = appendfs::server::FaultPlan::parse("lost-response:0.2,reset:0.1,error500:0.1")
        .expect("fault plan");
    oss.server.as_ref().expect("running").set_faults(faults);
    let pad = "f".repeat(40);
    let o = sh_in(
        m.dir(),
        &format!(
            "for i in $(seq -f %03g 0 99); do echo \"F-$i-{pad}\" >> flaky.log || exit 1; done"
        ),
        Duration::from_secs(120),
    );
    assert!(o.ok(), "appends failed under faults: {}", o.stderr);
    let via_mount = sh_ok(m.dir(), "cat flaky.log").stdout;
    oss.server
        .as_ref()
        .expect("running")
        .set_faults(appendfs::server::FaultPlan::none());
    let expected: String = (0..100).map(|i| format!("F-{i:03}-{pad}\n")).collect();
    assert_bytes(
        &oss.get("flaky.log"),
        expected.as_bytes(),
        "object after faults",
    );
    assert_bytes(
        &via_mount,
        expected.as_bytes(),
        "cat through the mount under faults",
    );
    oss.assert_appendable("flaky.log", expected.as_bytes());
    m.finish();
}

/// Ownership and mode flags, the `-o` fstab form and a read-only mount.
#[test]
fn options_set_owner_modes_and_read_only() {
    use std::os::unix::fs::MetadataExt;
    let oss = Oss::start();
    oss.put("dir/seen.txt", b"hello\n");
    let m = Mount::new(
        &oss,
        &format!("oss://{BUCKET}"),
        &[
            "--uid",
            "1234",
            "--gid",
            "4321",
            "-o",
            "file_mode=0600,dir_mode=0700,ro",
        ],
    );
    let f = std::fs::metadata(m.path("dir/seen.txt")).expect("stat file");
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 4321, 0o600));
    assert_eq!(f.size(), 6);
    assert_eq!(
        f.blksize(),
        1024 * 1024,
        "st_blksize makes cat read 1 MiB at a time"
    );
    let d = std::fs::metadata(m.path("dir")).expect("stat dir");
    assert!(d.is_dir());
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (1234, 4321, 0o700));
    assert_eq!(std::fs::read(m.path("dir/seen.txt")).unwrap(), b"hello\n");
    let w = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("dir/seen.txt"));
    assert_eq!(
        errno_of(w),
        Some(libc::EROFS),
        "writes on a read-only mount"
    );
    let c = std::fs::File::create(m.path("new.txt"));
    assert_eq!(
        errno_of(c),
        Some(libc::EROFS),
        "create on a read-only mount"
    );
    assert!(oss.missing("new.txt"));
    m.finish();
}
