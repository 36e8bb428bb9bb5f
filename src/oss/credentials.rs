//! Access key credentials shared by the client (to sign) and the server (to verify). The secret
//! and the session token never appear in `Debug` output or in any error text.

use std::fmt;

/// A value that must never be printed: `Debug` and `Display` show a fixed placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The environment variable names of the official OSS SDKs.
pub const ENV_ACCESS_KEY_ID: &str = "OSS_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "OSS_ACCESS_KEY_SECRET";
pub const ENV_SESSION_TOKEN: &str = "OSS_SESSION_TOKEN";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Not secret: it names the key and shows up in error messages, like the SDKs do.
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub security_token: Option<Secret>,
}

impl Credentials {
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Credentials {
            access_key_id: id.into(),
            access_key_secret: Secret::new(secret),
            security_token: None,
        }
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.security_token = token.filter(|t| !t.is_empty()).map(Secret::new);
        self
    }

    /// Reads the SDKs' variables; `None` when the key id or secret is missing or empty.
    pub fn from_env() -> Option<Self> {
        let id = std::env::var(ENV_ACCESS_KEY_ID)
            .ok()
            .filter(|v| !v.is_empty())?;
        let secret = std::env::var(ENV_ACCESS_KEY_SECRET)
            .ok()
            .filter(|v| !v.is_empty())?;
        Some(Credentials::new(id, secret).with_token(std::env::var(ENV_SESSION_TOKEN).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::new("AKID", "supersecretvalue").with_token(Some("tok3n-value".into()));
        let shown = format!("{c:?} {}", c.access_key_secret);
        assert!(shown.contains("AKID"));
        assert!(!shown.contains("supersecretvalue"));
        assert!(!shown.contains("tok3n-value"));
    }
}
