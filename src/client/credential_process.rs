//! Keys from an external command, `--credential-process CMD`: run with `sh -c`, it prints JSON
//! `{"AccessKeyId", "AccessKeySecret", "SecurityToken"?, "Expiration"?}` (RFC 3339) on stdout.
//! The [`CachingProvider`](super::CachingProvider) in front runs it again before `Expiration`.
//! Its stderr is passed through (it is the command's own diagnostics); its stdout is never
//! shown, since it carries the secret.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;

use super::credentials::{CredentialsError, CredentialsProvider, ProvidedCredentials};
use crate::oss::Credentials;

const NAME: &str = "credential process";

/// A helper that does not answer within this is killed: a mount must not hang on it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct CredentialProcessProvider {
    command: String,
    timeout: Duration,
}

/// Only the program name: the rest of the command line may carry a secret.
impl fmt::Debug for CredentialProcessProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialProcessProvider")
            .field("program", &self.program())
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Output {
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
    security_token: Option<String>,
    expiration: Option<String>,
}

impl CredentialProcessProvider {
    pub fn new(command: impl Into<String>) -> Self {
        CredentialProcessProvider {
            command: command.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn program(&self) -> &str {
        self.command.split_whitespace().next().unwrap_or("")
    }

    fn failed(&self, what: String) -> CredentialsError {
        CredentialsError::Failed {
            source_name: NAME,
            reason: format!("`{}` {what}", self.program()),
        }
    }

    async fn run(&self) -> Result<ProvidedCredentials, CredentialsError> {
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.failed(format!("could not be started: {e}")))?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| self.failed(format!("did not finish within {}s", self.timeout.as_secs())))?
            .map_err(|e| self.failed(format!("failed: {e}")))?;
        if !out.status.success() {
            return Err(self.failed(format!("exited with {}", out.status)));
        }
        parse_output(&out.stdout).map_err(|e| self.failed(e))
    }
}

/// The command's stdout as credentials. Errors say what is wrong, never what was printed
/// (serde's own messages can quote values, so only its position is used).
pub fn parse_output(stdout: &[u8]) -> Result<ProvidedCredentials, String> {
    const FORM: &str = "{\"AccessKeyId\", \"AccessKeySecret\", \"SecurityToken\", \"Expiration\"}";
    let parsed: Output = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "printed no JSON object of the form {FORM} ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let (Some(id), Some(secret)) = (
        non_empty(parsed.access_key_id),
        non_empty(parsed.access_key_secret),
    ) else {
        return Err(format!(
            "printed JSON without AccessKeyId and AccessKeySecret (expected {FORM})"
        ));
    };
    let expires_at = match non_empty(parsed.expiration) {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(t.trim())
                .map_err(|_| {
                    format!(
                        "printed Expiration {t:?}, not an RFC 3339 time like 2030-01-01T00:00:00Z"
                    )
                })?
                .with_timezone(&Utc),
        ),
    };
    Ok(ProvidedCredentials {
        credentials: Credentials::new(id, secret).with_token(parsed.security_token),
        expires_at,
    })
}

impl CredentialsProvider for CredentialProcessProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::CachingProvider;
    use std::sync::Arc;

    #[test]
    fn parses_the_documented_form() {
        let p = parse_output(
            br#"{"Version":1,"AccessKeyId":"STS.A","AccessKeySecret":"sek","SecurityToken":"tk","Expiration":"2030-01-02T03:04:05Z"}"#,
        )
        .unwrap();
        assert_eq!(p.credentials.access_key_id, "STS.A");
        assert_eq!(p.credentials.security_token.unwrap().expose(), "tk");
        assert_eq!(
            p.expires_at.unwrap().to_rfc3339(),
            "2030-01-02T03:04:05+00:00"
        );
        let p = parse_output(br#"{"AccessKeyId":"A","AccessKeySecret":"s"}"#).unwrap();
        assert!(p.expires_at.is_none() && p.credentials.security_token.is_none());
    }

    #[test]
    fn bad_output_never_echoes_it() {
        for out in [
            &br#"AccessKeySecret=sekrit-value"#[..],
            br#"{"AccessKeyId":"A","AccessKeySecret":42, "x":"sekrit-value"}"#,
            br#"{"AccessKeyId":"A","AccessKeySecret":"sekrit-value"#,
            br#"{"AccessKeyId":"A","SecurityToken":"sekrit-value"}"#,
            br#"{"AccessKeyId":["sekrit-value"],"AccessKeySecret":"sekrit-value"}"#,
        ] {
            let e = parse_output(out).unwrap_err();
            assert!(!e.contains("sekrit"), "{e}");
            assert!(e.contains("AccessKeyId"), "{e}");
        }
    }

    #[tokio::test]
    async fn failing_command_is_a_clear_error() {
        let err = CredentialProcessProvider::new("echo sekrit-value; exit 3")
            .provide()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CredentialsError::Failed { .. }), "{msg}");
        assert!(
            msg.contains("exit status: 3") && !msg.contains("sekrit"),
            "{msg}"
        );

        let err = CredentialProcessProvider::new("echo '{\"AccessKeySecret\": \"sekrit-value\"'")
            .provide()
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("sekrit"), "{err}");

        let err = CredentialProcessProvider::new("sleep 5")
            .with_timeout(Duration::from_millis(200))
            .provide()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");

        let shown = format!(
            "{:?}",
            CredentialProcessProvider::new("get-keys --secret sekrit-value")
        );
        assert!(
            shown.contains("get-keys") && !shown.contains("sekrit"),
            "{shown}"
        );
    }

    /// The command counts its runs in a file and hands out keys that expire after `lifetime`
    /// seconds; the cache in front runs it again only when they are about to expire.
    fn counting_command(dir: &std::path::Path, lifetime_secs: i64) -> String {
        let counter = dir.join("runs");
        let expiration = (Utc::now() + chrono::Duration::seconds(lifetime_secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        format!(
            "n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}; \
             printf '{{\"AccessKeyId\":\"AK%s\",\"AccessKeySecret\":\"s\",\"SecurityToken\":\"t\",\"Expiration\":\"{expiration}\"}}' $n",
            c = counter.display()
        )
    }

    #[tokio::test]
    async fn cached_until_expiry_then_run_again() {
        let dir = tempfile::tempdir().unwrap();
        // An hour of validity: one run serves every call.
        let cache = CachingProvider::new(Arc::new(CredentialProcessProvider::new(
            counting_command(dir.path(), 3600),
        )));
        for _ in 0..3 {
            assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK1");
        }

        // Two minutes left, inside the five-minute margin: each call runs it again.
        let dir = tempfile::tempdir().unwrap();
        let cache = CachingProvider::new(Arc::new(CredentialProcessProvider::new(
            counting_command(dir.path(), 120),
        )));
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK1");
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK2");
        let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
        assert_eq!(runs.trim(), "2");
    }
}
