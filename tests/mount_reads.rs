//! Reads never lie, through real mounts, with two mounts of one bucket standing in for two
//! hosts: a copytruncate rotation seen from the other host gives the new bytes or an error,
//! never NUL bytes; `tail -F` on the other host follows a rotation from the new file's first
//! byte; a file deleted on one host leaves `ls` on the other.
//!
//! Run: `cargo test --test mount_reads -- --test-threads=2` (as root, with /dev/fuse).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Finding 1: host B saw a 3 MB log; host A truncates it and appends a line (copytruncate);
/// `cat` on B prints the new line or fails, never NULs.
#[test]
fn copytruncate_elsewhere_never_shows_zeros() {
    let oss = Oss::start();
    let a = Mount::bucket(&oss);
    let b = Mount::bucket(&oss);
    let big: String = (0..64_000).map(|i| format!("line {i:044}\n")).collect();
    assert!(big.len() > 3_000_000);
    for round in 0..3 {
        std::fs::write(a.path("app.log"), &big).unwrap();
        // B has had the big log in view for a while (past the metadata TTL)...
        std::thread::sleep(Duration::from_millis(1200));
        let ls = sh_ok(b.dir(), "ls -l app.log");
        assert!(
            ls.stdout().contains(&big.len().to_string()),
            "{}",
            ls.stdout()
        );
        sh_ok(
            a.dir(),
            &format!("truncate -s 0 app.log && echo fresh{round} >> app.log"),
        );
        let cat = sh_in(b.dir(), "cat app.log", SHORT);
        assert!(
            !cat.stdout.contains(&0),
            "round {round}: cat on the other host printed NUL bytes ({} bytes, exit {})",
            cat.stdout.len(),
            cat.status
        );
        if cat.ok() {
            let out = cat.stdout();
            assert!(
                out == format!("fresh{round}\n") || big.starts_with(&out),
                "round {round}: cat printed bytes of no version of the file: {:?}",
                &out[..out.len().min(200)]
            );
        }
        // Once the metadata TTL has passed, the other host sees the new file.
        std::thread::sleep(Duration::from_millis(1200));
        let again = sh_ok(b.dir(), "cat app.log");
        assert_eq!(again.stdout(), format!("fresh{round}\n"));
    }
    b.finish();
    a.finish();
}

/// Finding 2: after a rotation on host A (rename, recreate), `tail -F` on host B notices the new
/// file (it has a new inode number) and prints it from its first byte.
#[test]
fn tail_capital_f_on_another_host_follows_a_rotation() {
    let oss = Oss::start();
    let a = Mount::bucket(&oss);
    let b = Mount::bucket(&oss);
    for round in 0..3 {
        let name = format!("rot{round}.log");
        sh_ok(
            a.dir(),
            &format!("for i in 1 2 3 4 5 6 7; do echo old-$i >> {name}; done"),
        );
        std::thread::sleep(Duration::from_millis(1100));
        let mut tail = Command::new("tail")
            .args(["-F", "-n", "+1", "-s", "0.2"])
            .arg(b.path(&name))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tail -F");
        let (tx, rx) = mpsc::channel();
        let out = tail.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let wait_for = |seen: &mut Vec<String>, want: &str| {
            let deadline = Instant::now() + Duration::from_secs(15);
            while !seen.iter().any(|l| l == want) {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(l) => seen.push(l),
                    Err(_) => panic!("tail -F did not print {want:?}; printed {seen:?}"),
                }
            }
        };
        wait_for(&mut seen, "old-7");
        sh_ok(
            a.dir(),
            &format!("mv {name} {name}.1 && echo new-1 >> {name} && echo new-2 >> {name}"),
        );
        wait_for(&mut seen, "new-1");
        wait_for(&mut seen, "new-2");
        let _ = tail.kill();
        let _ = tail.wait();
    }
    b.finish();
    a.finish();
}

/// Finding 4: a file this mount wrote and then another host deleted leaves `ls` here once the
/// listing is refreshed (an idle stream does not keep it alive).
#[test]
fn a_file_deleted_elsewhere_leaves_ls() {
    let oss = Oss::start();
    let a = Mount::bucket(&oss);
    let b = Mount::bucket(&oss);
    sh_ok(b.dir(), "echo mine >> gone.log && ls -l gone.log");
    sh_ok(a.dir(), "rm gone.log");
    std::thread::sleep(Duration::from_millis(1200));
    let ls = sh_ok(b.dir(), "ls -la");
    assert!(!ls.stdout().contains("gone.log"), "{}", ls.stdout());
    assert!(!ls.stderr.contains("cannot access"), "{}", ls.stderr);
    b.finish();
    a.finish();
}
