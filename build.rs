//! Puts the git commit into `--version` (`APPENDFS_VERSION`), so a bug report names the exact
//! build. Outside a git checkout (a source tarball, no git installed) the version says
//! "commit unknown" rather than failing the build; packagers can set `APPENDFS_GIT_COMMIT`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=APPENDFS_GIT_COMMIT");
    // Rebuilt when HEAD moves (commit, checkout): HEAD and its reflog live in the worktree's
    // own git directory, which `--git-path` finds for linked worktrees too.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    let commit = std::env::var("APPENDFS_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=10", "HEAD"]));
    let version = env!("CARGO_PKG_VERSION");
    let full = match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => format!("{version} (commit unknown)"),
    };
    println!("cargo:rustc-env=APPENDFS_VERSION={full}");
}
