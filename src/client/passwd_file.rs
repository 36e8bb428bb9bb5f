//! Keys from an ossfs password file: `--passwd-file FILE`, else `/etc/passwd-ossfs` and
//! `~/.passwd-ossfs`. Lines are `bucket:id:secret` or `id:secret`; `#` starts a comment. A line
//! naming this bucket wins over a bucket-less line. The file must be private (no group or other
//! permission bits), as ossfs requires; a file that is too open is refused with its name, also
//! when it is one of the default files, because reading keys that others can read would hide
//! the leak instead of stopping it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use super::credentials::{CredentialsError, CredentialsProvider, ProvidedCredentials};
use crate::oss::Credentials;

const NAME: &str = "passwd file";

/// One password file for one bucket.
#[derive(Debug, Clone)]
pub struct PasswdFileProvider {
    path: PathBuf,
    bucket: String,
    /// Given with `--passwd-file`: missing file or no usable line is an error, not "try next".
    explicit: bool,
}

impl PasswdFileProvider {
    /// A file named on the command line.
    pub fn explicit(path: impl Into<PathBuf>, bucket: impl Into<String>) -> Self {
        PasswdFileProvider {
            path: path.into(),
            bucket: bucket.into(),
            explicit: true,
        }
    }

    /// A default location: absent means "nothing here".
    pub fn default_location(path: impl Into<PathBuf>, bucket: impl Into<String>) -> Self {
        PasswdFileProvider {
            path: path.into(),
            bucket: bucket.into(),
            explicit: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn failed(&self, reason: String) -> CredentialsError {
        CredentialsError::Failed {
            source_name: NAME,
            reason,
        }
    }

    fn not_found(&self, reason: String) -> CredentialsError {
        if self.explicit {
            self.failed(reason)
        } else {
            CredentialsError::NotFound {
                source_name: NAME,
                reason,
            }
        }
    }

    fn read(&self) -> Result<ProvidedCredentials, CredentialsError> {
        let shown = self.path.display();
        let md = match std::fs::metadata(&self.path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_found(format!("{shown} does not exist")));
            }
            Err(e) => return Err(self.failed(format!("cannot read {shown}: {e}"))),
        };
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(self.failed(format!(
                "{shown} has mode {mode:04o}: others can read the keys in it; \
                 run `chmod 600 {shown}` (it must have no group or other permissions)"
            )));
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| self.failed(format!("cannot read {shown}: {e}")))?;
        match parse(&text, &self.bucket) {
            Ok(Some(c)) => Ok(ProvidedCredentials::permanent(c)),
            Ok(None) => Err(self.not_found(format!(
                "{shown} has no line for bucket {:?} and no bucket-less line",
                self.bucket
            ))),
            Err(line) => Err(self.failed(format!(
                "{shown} line {line} is not `bucket:id:secret` or `id:secret`"
            ))),
        }
    }
}

impl CredentialsProvider for PasswdFileProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        Box::pin(async move { self.read() })
    }
}

/// The credentials for `bucket` in ossfs password file text: `Ok(None)` when no line applies,
/// `Err(line number)` for a malformed line (the line itself is never shown: it holds a secret).
pub fn parse(text: &str, bucket: &str) -> Result<Option<Credentials>, usize> {
    let mut generic = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').map(str::trim).collect();
        match fields.as_slice() {
            [b, id, secret] if !b.is_empty() && !id.is_empty() && !secret.is_empty() => {
                if *b == bucket {
                    return Ok(Some(Credentials::new(*id, *secret)));
                }
            }
            [id, secret] if !id.is_empty() && !secret.is_empty() => {
                // The first bucket-less line, as ossfs takes it.
                if generic.is_none() {
                    generic = Some(Credentials::new(*id, *secret));
                }
            }
            _ => return Err(i + 1),
        }
    }
    Ok(generic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn bucket_line_wins_over_generic_line() {
        let text = "# keys\n\nAKGEN:gen-secret\nother:AKO:o-secret\nlogs:AKLOGS:logs-secret\n";
        let c = parse(text, "logs").unwrap().unwrap();
        assert_eq!(c.access_key_id, "AKLOGS");
        assert_eq!(c.access_key_secret.expose(), "logs-secret");
        let c = parse(text, "elsewhere").unwrap().unwrap();
        assert_eq!(c.access_key_id, "AKGEN");
        assert_eq!(parse("other:AKO:s\n", "logs"), Ok(None));
        assert_eq!(parse("# only a comment\n", "logs"), Ok(None));
    }

    #[test]
    fn malformed_lines_are_named_by_number() {
        assert_eq!(parse("ok:line\njustonefield\n", "b"), Err(2));
        assert_eq!(parse("a:b:c:d\n", "b"), Err(1));
        assert_eq!(parse("b::secret\n", "b"), Err(1));
    }

    #[tokio::test]
    async fn mode_600_required_and_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "good", "logs:AK1:sekrit-one\n", 0o600);
        let c = PasswdFileProvider::explicit(&good, "logs")
            .provide()
            .await
            .unwrap();
        assert_eq!(c.credentials.access_key_id, "AK1");
        assert!(c.expires_at.is_none());

        for mode in [0o644, 0o640, 0o604, 0o660] {
            let open = write(dir.path(), "open", "logs:AK1:sekrit-one\n", mode);
            for p in [
                PasswdFileProvider::explicit(&open, "logs"),
                PasswdFileProvider::default_location(&open, "logs"),
            ] {
                let err = p.provide().await.unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, CredentialsError::Failed { .. }), "{msg}");
                assert!(msg.contains(&open.display().to_string()), "{msg}");
                assert!(msg.contains("chmod 600"), "{msg}");
                assert!(!msg.contains("sekrit"), "{msg}");
            }
        }
    }

    #[tokio::test]
    async fn missing_default_file_is_not_an_error_but_missing_explicit_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = PasswdFileProvider::default_location(&missing, "b")
            .provide()
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialsError::NotFound { .. }), "{err}");
        let err = PasswdFileProvider::explicit(&missing, "b")
            .provide()
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialsError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");

        // A file with no line for this bucket: next source for a default file, error otherwise.
        let other = write(dir.path(), "other", "x-bucket:AK:sekrit\n", 0o600);
        let err = PasswdFileProvider::default_location(&other, "b")
            .provide()
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialsError::NotFound { .. }), "{err}");
        let err = PasswdFileProvider::explicit(&other, "b")
            .provide()
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialsError::Failed { .. }), "{err}");
        assert!(!err.to_string().contains("sekrit"), "{err}");

        // A malformed line: its number, never its text.
        let bad = write(dir.path(), "bad", "AK-sekrit-no-colon\n", 0o600);
        let err = PasswdFileProvider::default_location(&bad, "b")
            .provide()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 1") && !msg.contains("sekrit"), "{msg}");
    }
}
