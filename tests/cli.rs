//! Bad command lines are refused at the door: each row runs the built binary and asserts the
//! exit status (2 for a command line that cannot work, 1 for a state that stops the mount), a
//! message naming the problem in the user's words, no secret echoed and no panic. Nothing
//! here mounts: every row fails before (or, for credentials, instead of) mounting.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_appendfs");

struct Out {
    code: Option<i32>,
    stderr: String,
    stdout: String,
}

/// Runs `appendfs ARGS` in `dir` with a clean credential environment, killed after 30 s.
fn run(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in [
        "OSS_ACCESS_KEY_ID",
        "OSS_ACCESS_KEY_SECRET",
        "OSS_SESSION_TOKEN",
        "OSS_ENDPOINT",
        "OSS_REGION",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "APPENDFS_ECS_METADATA_ENDPOINT",
        "APPENDFS_READY_FD",
    ] {
        cmd.env_remove(v);
    }
    // No real home files.
    cmd.env("HOME", dir);
    let mut child = cmd.spawn().expect("start appendfs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    let mut stdout = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    Out {
        code: status.and_then(|s| s.code()),
        stderr,
        stdout,
    }
}

/// A whole HTTP answer, kept for the test's life.
fn answer(status: &str, content_type: &str, body: &str) -> &'static str {
    Box::leak(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    )
}

/// A server on loopback that answers every request with `answer`, then closes.
fn lying_server(answer: &'static str) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn bad_command_lines_are_refused_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    std::fs::create_dir(d.join("mp")).unwrap();
    std::fs::write(d.join("a-file"), "x").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let p = d.join("open-passwd");
        std::fs::write(&p, "bkt:AKOPEN:hunter2-passwd\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    // Servers that answer, but not as OSS would: an HTML error page (a proxy), a bucket
    // that is not there.
    let html = lying_server(answer(
        "403 Forbidden",
        "text/html",
        "<html><body>proxy says no</body></html>",
    ));
    let no_bucket = lying_server(answer(
        "404 Not Found",
        "application/xml",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message><RequestId>R1</RequestId></Error>",
    ));
    let html_ep = format!("--endpoint={html}");
    let good_passwd = {
        use std::os::unix::fs::PermissionsExt;
        let p = d.join("good-passwd");
        std::fs::write(&p, "bkt:AKGOOD:good-secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    };
    let no_bucket_ep = format!("--endpoint={no_bucket}");
    let open_passwd = d.join("open-passwd").display().to_string();
    let dead_ep = format!("--endpoint={dead}");
    // A bare `ram_role` (the attached role), against a metadata address nothing answers.
    let ram_role_opts = format!("ram_role,endpoint={dead},ecs_metadata_endpoint={dead}");

    /// Arguments, exit status, words the message must contain, words it must not.
    type Row<'a> = (Vec<&'a str>, i32, Vec<&'a str>, Vec<&'a str>);
    fn m<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["mount", "oss://bkt", "mp"];
        v.extend_from_slice(extra);
        v
    }
    fn helper(opts: &str) -> Vec<&str> {
        vec!["oss://bkt", "mp", "-o", opts]
    }
    fn helper_with<'a>(extra: &[&'a str], opts: &str) -> Vec<&'a str> {
        let mut v = vec!["oss://bkt", "mp"];
        v.extend_from_slice(extra);
        v.push("-o");
        // Leaked: a row's arguments live for the whole test.
        v.push(Box::leak(opts.to_string().into_boxed_str()));
        v
    }
    let rows: Vec<Row> = vec![
        // Sizes and durations, each message naming its bound.
        (
            m(&["--append-chunk", "10GiB"]),
            2,
            vec!["--append-chunk", "5GiB"],
            vec![],
        ),
        (
            m(&["--append-chunk", "10B"]),
            2,
            vec!["at least 1KiB"],
            vec![],
        ),
        (m(&["--append-chunk", "0"]), 2, vec!["more than 0"], vec![]),
        (
            m(&["--max-dirty", "1B"]),
            2,
            vec!["--max-dirty", "at least 1MiB"],
            vec![],
        ),
        (
            m(&["--cache-size", "1PB"]),
            2,
            vec!["--cache-size", "memory"],
            vec![],
        ),
        (
            m(&["--max-dirty", "4MiB", "--append-chunk", "8MiB"]),
            2,
            vec!["--max-dirty", "--append-chunk", "fit"],
            vec![],
        ),
        (
            m(&["--flush-interval", "0s"]),
            2,
            vec!["--flush-interval", "more than 0"],
            vec![],
        ),
        (
            m(&["--flush-interval", "2h"]),
            2,
            vec!["at most 1h"],
            vec![],
        ),
        (
            m(&["--metadata-ttl", "banana"]),
            2,
            vec!["--metadata-ttl", "banana"],
            vec![],
        ),
        (m(&["--file-mode", "0999"]), 2, vec!["octal"], vec![]),
        // The URL and its prefix.
        (
            vec!["mount", "oss://bkt/../..", "mp"],
            2,
            vec!["\"..\""],
            vec![],
        ),
        (
            vec!["mount", "oss://bkt/a//b", "mp"],
            2,
            vec!["empty segment"],
            vec![],
        ),
        (
            vec!["mount", "oss://bkt/./a", "mp"],
            2,
            vec!["\".\" segment"],
            vec![],
        ),
        (
            vec!["mount", "oss://B", "mp"],
            2,
            vec!["invalid bucket name"],
            vec![],
        ),
        (
            vec!["mount", "s3://bkt", "mp"],
            2,
            vec!["oss://BUCKET"],
            vec![],
        ),
        // -o in the user's own words, mount(8)'s options ignored.
        (
            helper("bogus_opt"),
            2,
            vec!["unknown mount option \"bogus_opt\""],
            vec!["--bogus"],
        ),
        (
            helper("rw,dev,suid,nonempty,_netdev,nofail,x-systemd.automount,bogus"),
            2,
            vec!["unknown mount option \"bogus\""],
            vec!["nonempty", "x-systemd"],
        ),
        (
            helper("allow_other=yes"),
            2,
            vec!["\"allow_other\"", "takes no value"],
            vec![],
        ),
        (
            helper("endpoint"),
            2,
            vec!["\"endpoint\"", "needs a value"],
            vec![],
        ),
        (
            helper("append_chunk=10GiB"),
            2,
            vec!["mount option \"append_chunk=10GiB\"", "5GiB"],
            vec!["--append-chunk"],
        ),
        (
            helper("uid=abc"),
            2,
            vec!["mount option \"uid=abc\""],
            vec!["--uid"],
        ),
        // Secrets never echoed.
        (
            m(&[
                "--endpoint",
                "https://ak:hunter2@oss-cn-hangzhou.aliyuncs.com",
            ]),
            2,
            vec!["user info", "***@"],
            vec!["hunter2"],
        ),
        (
            helper("endpoint=http://u:hunter2@127.0.0.1:9"),
            2,
            vec!["user info"],
            vec!["hunter2"],
        ),
        (m(&["--endpoint", "ftp://h"]), 2, vec!["scheme"], vec![]),
        (
            m(&["--credential-process", " "]),
            2,
            vec!["needs a command"],
            vec![],
        ),
        (
            m(&["--ram-role=a/b"]),
            2,
            vec!["not a RAM role name"],
            vec![],
        ),
        // The mount point.
        (
            vec!["mount", "oss://bkt", "nope"],
            1,
            vec!["nope", "does not exist"],
            vec![],
        ),
        (
            vec!["mount", "oss://bkt", "a-file"],
            1,
            vec!["not a directory"],
            vec![],
        ),
        // Credential sources that exist but cannot be used: named, nothing mounted.
        (
            m(&["-f", &dead_ep, "--passwd-file", &open_passwd]),
            1,
            vec![&open_passwd, "chmod 600"],
            vec!["hunter2"],
        ),
        (
            m(&[
                "-f",
                &dead_ep,
                "--credential-process",
                "echo hunter2-process; exit 3",
            ]),
            1,
            vec!["credential process", "exit status: 3"],
            vec!["hunter2"],
        ),
        (
            vec!["oss://bkt", "mp", "-f", "-o", &ram_role_opts],
            1,
            vec!["ECS RAM role", "no instance metadata service"],
            vec![],
        ),
        (vec!["bogus"], 2, vec!["bogus"], vec![]),
        // The second wave's options.
        (
            m(&["--max-memory", "1B"]),
            2,
            vec!["--max-memory", "at least 1MiB"],
            vec![],
        ),
        (
            m(&["--max-memory", "1PB"]),
            2,
            vec!["--max-memory", "memory"],
            vec![],
        ),
        (
            m(&["--shutdown-grace", "soon"]),
            2,
            vec!["--shutdown-grace", "soon"],
            vec![],
        ),
        (
            m(&["--retry-budget", "forever"]),
            2,
            vec!["--retry-budget", "forever"],
            vec![],
        ),
        (
            helper("shutdown_grace=x"),
            2,
            vec!["mount option \"shutdown_grace=x\""],
            vec![],
        ),
        // Answers from servers that are not OSS, or not this bucket.
        (
            m(&["-f", &html_ep, "--passwd-file", &good_passwd]),
            1,
            vec!["HTML"],
            vec![],
        ),
        (
            m(&["-f", &no_bucket_ep, "--passwd-file", &good_passwd]),
            1,
            vec!["bucket \"bkt\" does not exist"],
            vec![],
        ),
        (
            helper_with(
                &["-f"],
                &format!("endpoint={html},passwd_file={good_passwd}"),
            ),
            1,
            vec!["HTML"],
            vec!["good-secret"],
        ),
    ];
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let mut failures = Vec::new();
    for (args, code, want, never) in &rows {
        let out = run(d, args);
        let msg = format!("{}{}", out.stderr, out.stdout);
        let mut problems = Vec::new();
        if out.code != Some(*code) {
            problems.push(format!("exit {:?}, want {code}", out.code));
        }
        for w in want {
            if !msg.contains(w) {
                problems.push(format!("missing {w:?}"));
            }
        }
        for n in never {
            if msg.contains(n) {
                problems.push(format!("must not say {n:?}"));
            }
        }
        if msg.contains("panicked") {
            problems.push("panicked".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{args:?}: {}\n  said: {}",
                problems.join(", "),
                msg.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(
        std::fs::read_dir(d.join("mp")).unwrap().next().is_none(),
        "nothing was mounted"
    );
}

#[test]
fn version_names_the_commit_and_help_has_headings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v = run(tmp.path(), &["--version"]);
    assert_eq!(v.code, Some(0));
    assert!(
        v.stdout.starts_with("appendfs ") && v.stdout.contains("(commit "),
        "{}",
        v.stdout
    );
    let h = run(tmp.path(), &["mount", "--help"]);
    assert_eq!(h.code, Some(0));
    for heading in [
        "Where:",
        "Credentials:",
        "Buffers and caches:",
        "Files and permissions:",
        "New objects:",
        "--passwd-file",
        "--credential-process",
        "--ram-role",
    ] {
        assert!(
            h.stdout.contains(heading),
            "{heading} missing:\n{}",
            h.stdout
        );
    }
    assert!(
        !h.stdout.contains("ecs-metadata-endpoint"),
        "hidden option shown"
    );
}
