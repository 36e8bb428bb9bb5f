//! Keys from ossutil's configuration file, `~/.ossutilconfig`: the `[Credentials]` section of
//! ossutil 1 (`accessKeyID`, `accessKeySecret`, optional `stsToken`, `endpoint`), or the
//! `[default]` profile that ossutil 2 writes (`accessKeyId`, ...). Key names are matched without
//! regard to case, `_` or `-`, since the two ossutil versions spell them differently.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use super::credentials::{CredentialsError, CredentialsProvider, ProvidedCredentials};
use crate::oss::Credentials;

const NAME: &str = "ossutil config";

/// What an ossutil configuration file says; the secret stays inside [`Credentials`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OssutilConfig {
    pub credentials: Option<Credentials>,
    pub endpoint: Option<String>,
}

fn normalized(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Parses the file's text. A syntax error is reported by line number only: the line may hold
/// a secret.
pub fn parse(text: &str) -> Result<OssutilConfig, String> {
    let opt = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ini::ParseOption::default()
    };
    let doc = ini::Ini::load_from_str_opt(text, opt)
        .map_err(|e| format!("not an INI file (line {})", e.line))?;
    let section = ["credentials", "default"].iter().find_map(|want| {
        doc.iter()
            .find(|(name, _)| name.is_some_and(|n| n.eq_ignore_ascii_case(want)))
            .map(|(_, props)| props)
    });
    let Some(props) = section else {
        return Ok(OssutilConfig::default());
    };
    let get = |want: &str| {
        props
            .iter()
            .find(|(k, _)| normalized(k) == want)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let credentials = match (get("accesskeyid"), get("accesskeysecret")) {
        (Some(id), Some(secret)) => Some(Credentials::new(id, secret).with_token(get("ststoken"))),
        _ => None,
    };
    Ok(OssutilConfig {
        credentials,
        endpoint: get("endpoint"),
    })
}

/// `$HOME/.ossutilconfig`, if there is a home.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".ossutilconfig"))
}

/// Reads `path` if it exists: `Ok(None)` when it does not.
pub fn load(path: &Path) -> Result<Option<OssutilConfig>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[derive(Debug, Clone)]
pub struct OssutilConfigProvider {
    path: PathBuf,
}

impl OssutilConfigProvider {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OssutilConfigProvider { path: path.into() }
    }
}

impl CredentialsProvider for OssutilConfigProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        Box::pin(async move {
            let shown = self.path.display();
            match load(&self.path) {
                Ok(Some(OssutilConfig {
                    credentials: Some(c),
                    ..
                })) => Ok(ProvidedCredentials::permanent(c)),
                Ok(Some(_)) => Err(CredentialsError::NotFound {
                    source_name: NAME,
                    reason: format!("{shown} has no accessKeyID and accessKeySecret"),
                }),
                Ok(None) => Err(CredentialsError::NotFound {
                    source_name: NAME,
                    reason: format!("{shown} does not exist"),
                }),
                Err(reason) => Err(CredentialsError::Failed {
                    source_name: NAME,
                    reason,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ossutil1_credentials_section() {
        let text = "[Credentials]\nlanguage=EN\nendpoint = oss-cn-hangzhou.aliyuncs.com\n\
                    accessKeyID = AKU1\naccessKeySecret = ossutil-sekrit\nstsToken = tok-1\n\
                    [Bucket-Endpoint]\nlogs = oss-cn-beijing.aliyuncs.com\n";
        let cfg = parse(text).unwrap();
        let c = cfg.credentials.unwrap();
        assert_eq!(c.access_key_id, "AKU1");
        assert_eq!(c.access_key_secret.expose(), "ossutil-sekrit");
        assert_eq!(c.security_token.unwrap().expose(), "tok-1");
        assert_eq!(
            cfg.endpoint.as_deref(),
            Some("oss-cn-hangzhou.aliyuncs.com")
        );
    }

    #[test]
    fn reads_ossutil2_default_profile_and_other_spellings() {
        let cfg = parse("[default]\naccessKeyId=AKU2\naccess_key_secret=s2\nregion=cn-beijing\n")
            .unwrap();
        let c = cfg.credentials.unwrap();
        assert_eq!(c.access_key_id, "AKU2");
        assert!(c.security_token.is_none());
        assert!(cfg.endpoint.is_none());
    }

    #[test]
    fn incomplete_or_absent_section_has_no_credentials() {
        assert_eq!(
            parse("[Credentials]\nendpoint=x\naccessKeyID=AK\n")
                .unwrap()
                .credentials,
            None
        );
        assert_eq!(parse("[Other]\na=b\n").unwrap(), OssutilConfig::default());
    }

    #[tokio::test]
    async fn provider_distinguishes_missing_from_broken() {
        let dir = tempfile::tempdir().unwrap();
        let p = OssutilConfigProvider::new(dir.path().join("absent"));
        assert!(matches!(
            p.provide().await.unwrap_err(),
            CredentialsError::NotFound { .. }
        ));
        let path = dir.path().join(".ossutilconfig");
        std::fs::write(
            &path,
            "[Credentials]\naccessKeyID=AKF\naccessKeySecret=sekrit\n",
        )
        .unwrap();
        let got = OssutilConfigProvider::new(&path).provide().await.unwrap();
        assert_eq!(got.credentials.access_key_id, "AKF");
        std::fs::write(&path, "[Credentials\naccessKeySecret=sekrit\n").unwrap();
        let err = OssutilConfigProvider::new(&path)
            .provide()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CredentialsError::Failed { .. }), "{msg}");
        assert!(
            msg.contains(".ossutilconfig") && !msg.contains("sekrit"),
            "{msg}"
        );
    }
}
