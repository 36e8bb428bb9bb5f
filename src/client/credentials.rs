//! Where the signing keys come from. A [`CredentialsProvider`] produces credentials with an
//! optional expiry; [`CachingProvider`] (which the client always puts in front) reuses them and
//! fetches new ones shortly before they expire, so a source with short-lived keys (ECS RAM role,
//! STS, a credential process) only has to implement `provide`.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::oss::Credentials;

/// Credentials and when they stop working (`None`: never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedCredentials {
    pub credentials: Credentials,
    pub expires_at: Option<DateTime<Utc>>,
}

impl ProvidedCredentials {
    pub fn permanent(credentials: Credentials) -> Self {
        ProvidedCredentials {
            credentials,
            expires_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The source has nothing to offer (e.g. variables not set); a chain tries the next one.
    #[error("{source_name}: {reason}")]
    NotFound {
        source_name: &'static str,
        reason: String,
    },
    /// The source exists but failed (metadata service down, malformed answer).
    #[error("{source_name} failed: {reason}")]
    Failed {
        source_name: &'static str,
        reason: String,
    },
}

/// A source of credentials. Implementations must not put secrets in errors or `Debug` output.
pub trait CredentialsProvider: Send + Sync + fmt::Debug {
    /// Short name for messages, e.g. `environment`.
    fn name(&self) -> &'static str;
    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>>;
}

/// Fixed credentials.
#[derive(Debug, Clone)]
pub struct StaticProvider(ProvidedCredentials);

impl StaticProvider {
    pub fn new(credentials: Credentials) -> Self {
        StaticProvider(ProvidedCredentials::permanent(credentials))
    }
}

impl CredentialsProvider for StaticProvider {
    fn name(&self) -> &'static str {
        "static credentials"
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }
}

/// The official SDKs' variables, then the generic Alibaba Cloud ones; each pair is taken whole.
pub const ENV_NAME_SETS: [[&str; 3]; 2] = [
    [
        crate::oss::credentials::ENV_ACCESS_KEY_ID,
        crate::oss::credentials::ENV_ACCESS_KEY_SECRET,
        crate::oss::credentials::ENV_SESSION_TOKEN,
    ],
    [
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
    ],
];

/// Credentials from variables looked up with `get`: `OSS_*` first, then `ALIBABA_CLOUD_*`.
/// A set with only one of id and secret is an error (a typo should not silently fall through
/// to another source); empty values count as unset.
pub fn credentials_from_vars(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, CredentialsError> {
    let get = |name: &str| get(name).filter(|v| !v.is_empty());
    for [id_name, secret_name, token_name] in ENV_NAME_SETS {
        match (get(id_name), get(secret_name)) {
            (Some(id), Some(secret)) => {
                return Ok(Some(
                    Credentials::new(id, secret).with_token(get(token_name)),
                ))
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(CredentialsError::Failed {
                    source_name: "environment",
                    reason: format!("{id_name} and {secret_name} must be set together"),
                })
            }
        }
    }
    Ok(None)
}

/// `OSS_ACCESS_KEY_ID` / `OSS_ACCESS_KEY_SECRET` / `OSS_SESSION_TOKEN`, else
/// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` / `ALIBABA_CLOUD_SECURITY_TOKEN`, read at each
/// `provide` (the cache in front decides how often that is).
#[derive(Debug, Clone, Default)]
pub struct EnvProvider;

impl CredentialsProvider for EnvProvider {
    fn name(&self) -> &'static str {
        "environment"
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        Box::pin(async move {
            credentials_from_vars(|n| std::env::var(n).ok())?
                .map(ProvidedCredentials::permanent)
                .ok_or_else(|| CredentialsError::NotFound {
                    source_name: "environment",
                    reason: "neither OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET nor \
                             ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET are set"
                        .into(),
                })
        })
    }
}

/// Tries each provider in order; the first that has credentials wins. A provider that fails
/// (rather than having none) stops the chain, so a broken source is reported, not skipped.
#[derive(Debug, Clone)]
pub struct ChainProvider(pub Vec<Arc<dyn CredentialsProvider>>);

impl CredentialsProvider for ChainProvider {
    fn name(&self) -> &'static str {
        "credential chain"
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        Box::pin(async move {
            let mut tried = Vec::new();
            for p in &self.0 {
                match p.provide().await {
                    Ok(c) => {
                        // Which source won, never what it gave: the order is easy to misjudge.
                        tracing::info!(source = p.name(), key_id = %c.credentials.access_key_id, "using credentials");
                        return Ok(c);
                    }
                    Err(e @ CredentialsError::Failed { .. }) => return Err(e),
                    Err(e) => tried.push(e.to_string()),
                }
            }
            Err(CredentialsError::NotFound {
                source_name: "credential chain",
                reason: if tried.is_empty() {
                    "no sources configured".into()
                } else {
                    tried.join("; ")
                },
            })
        })
    }
}

/// Where [`chain_for`] looks for keys; `main` fills it from the command line. The order is
/// fixed and documented (README, "Credentials"): environment, passwd file, ossutil config,
/// credential process, ECS RAM role (only when asked for). First found wins; a source that exists but is broken
/// (a passwd file others can read, a failing process) stops the search with its error.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialOptions {
    pub bucket: String,
    /// `--passwd-file`: replaces the default ossfs files and must work.
    pub passwd_file: Option<PathBuf>,
    /// `/etc/passwd-ossfs`, `~/.passwd-ossfs`: skipped when absent.
    pub default_passwd_files: Vec<PathBuf>,
    /// `~/.ossutilconfig`: skipped when absent.
    pub ossutil_config: Option<PathBuf>,
    /// `--credential-process CMD`.
    pub credential_process: Option<String>,
    /// `--ram-role[=NAME]`: `Some(Some(name))` for that role, `Some(None)` for the one the
    /// instance lists. Never tried unasked: every process on an ECS host can reach the
    /// metadata service, and a mount silently taking the instance's role could get rights
    /// nobody meant it to have (off ECS it would also wait on an address nothing answers).
    pub ram_role: Option<Option<String>>,
    /// The metadata service's address (tests); `None`: `APPENDFS_ECS_METADATA_ENDPOINT` or
    /// the real one.
    pub metadata_endpoint: Option<String>,
}

impl CredentialOptions {
    /// The default places for `bucket`: ossfs's files and `~/.ossutilconfig`.
    pub fn for_bucket(bucket: impl Into<String>) -> Self {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let mut default_passwd_files = vec![PathBuf::from("/etc/passwd-ossfs")];
        if let Some(h) = &home {
            default_passwd_files.push(h.join(".passwd-ossfs"));
        }
        CredentialOptions {
            bucket: bucket.into(),
            default_passwd_files,
            ossutil_config: home.map(|h| h.join(".ossutilconfig")),
            ..CredentialOptions::default()
        }
    }
}

/// The credential process shows only its program: the rest of its command line may hold a
/// secret (MountOptions, which holds this, is `Debug`).
impl fmt::Debug for CredentialOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialOptions")
            .field("bucket", &self.bucket)
            .field("passwd_file", &self.passwd_file)
            .field("default_passwd_files", &self.default_passwd_files)
            .field("ossutil_config", &self.ossutil_config)
            .field(
                "credential_process",
                &self
                    .credential_process
                    .as_deref()
                    .map(|c| c.split_whitespace().next().unwrap_or("")),
            )
            .field("ram_role", &self.ram_role)
            .field("metadata_endpoint", &self.metadata_endpoint)
            .finish()
    }
}

/// The mount's credential source: the documented chain with the process environment first.
/// The client caches what it returns and refreshes it before expiry.
pub fn chain_for(opts: &CredentialOptions) -> Arc<dyn CredentialsProvider> {
    Arc::new(chain_with_env(opts, Arc::new(EnvProvider)))
}

/// [`chain_for`] with another first source in place of the environment (tests).
pub fn chain_with_env(
    opts: &CredentialOptions,
    env: Arc<dyn CredentialsProvider>,
) -> ChainProvider {
    use super::{credential_process, ecs_role, ossutil_config, passwd_file};
    let mut sources: Vec<Arc<dyn CredentialsProvider>> = vec![env];
    match &opts.passwd_file {
        Some(p) => sources.push(Arc::new(passwd_file::PasswdFileProvider::explicit(
            p,
            &opts.bucket,
        ))),
        None => {
            for p in &opts.default_passwd_files {
                sources.push(Arc::new(passwd_file::PasswdFileProvider::default_location(
                    p,
                    &opts.bucket,
                )));
            }
        }
    }
    if let Some(p) = &opts.ossutil_config {
        sources.push(Arc::new(ossutil_config::OssutilConfigProvider::new(p)));
    }
    if let Some(cmd) = &opts.credential_process {
        sources.push(Arc::new(
            credential_process::CredentialProcessProvider::new(cmd),
        ));
    }
    if let Some(role) = &opts.ram_role {
        sources.push(Arc::new(ecs_role::EcsRoleProvider::new(
            opts.metadata_endpoint.clone(),
            role.clone(),
        )));
    }
    ChainProvider(sources)
}

/// Keeps the last credentials and refreshes them `refresh_before` ahead of their expiry. One
/// refresh runs at a time; callers meanwhile wait for it. If a refresh fails while the old
/// credentials are still valid, those are used (and the failure logged) rather than failing
/// requests that would have worked.
#[derive(Debug)]
pub struct CachingProvider {
    inner: Arc<dyn CredentialsProvider>,
    refresh_before: Duration,
    cached: RwLock<Option<ProvidedCredentials>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl CachingProvider {
    /// Five minutes of margin: more than one slow request plus clock error, and ECS role
    /// credentials live for hours.
    pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(300);

    pub fn new(inner: Arc<dyn CredentialsProvider>) -> Self {
        Self::with_margin(inner, Self::DEFAULT_REFRESH_BEFORE)
    }

    pub fn with_margin(inner: Arc<dyn CredentialsProvider>, refresh_before: Duration) -> Self {
        CachingProvider {
            inner,
            refresh_before,
            cached: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self, now: DateTime<Utc>) -> Option<ProvidedCredentials> {
        let guard = self.cached.read().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|c| match c.expires_at {
                None => true,
                Some(t) => now + self.refresh_before < t,
            })
            .cloned()
    }

    /// Credentials to sign a request with now.
    pub async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        if let Some(c) = self.fresh(Utc::now()) {
            return Ok(c.credentials);
        }
        let _one_refresh = self.refreshing.lock().await;
        // Another caller may have refreshed while this one waited.
        let now = Utc::now();
        if let Some(c) = self.fresh(now) {
            return Ok(c.credentials);
        }
        match self.inner.provide().await {
            Ok(c) => {
                let out = c.credentials.clone();
                *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(c);
                Ok(out)
            }
            Err(e) => {
                let still_valid = self
                    .cached
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .filter(|c| c.expires_at.is_none_or(|t| now < t))
                    .map(|c| c.credentials.clone());
                match still_valid {
                    Some(c) => {
                        tracing::warn!(source = self.inner.name(), error = %e,
                            "refreshing credentials failed; using the current ones until they expire");
                        Ok(c)
                    }
                    None => Err(e),
                }
            }
        }
    }
}

impl CredentialsProvider for CachingProvider {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        Box::pin(async move {
            let credentials = self.credentials().await?;
            let expires_at = self
                .cached
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|c| c.expires_at);
            Ok(ProvidedCredentials {
                credentials,
                expires_at,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// Hands out `AK<n>` credentials valid for `lifetime`, counting calls; fails when told to.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicU32,
        lifetime: Option<chrono::Duration>,
        fail: Mutex<bool>,
    }

    impl Counting {
        fn new(lifetime: Option<chrono::Duration>) -> Arc<Self> {
            Arc::new(Counting {
                calls: AtomicU32::new(0),
                lifetime,
                fail: Mutex::new(false),
            })
        }
    }

    impl CredentialsProvider for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }

        fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                // Slow enough that concurrent callers overlap.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if *self.fail.lock().unwrap() {
                    return Err(CredentialsError::Failed {
                        source_name: "counting",
                        reason: "down".into(),
                    });
                }
                Ok(ProvidedCredentials {
                    credentials: Credentials::new(format!("AK{n}"), "secret"),
                    expires_at: self.lifetime.map(|l| Utc::now() + l),
                })
            })
        }
    }

    #[tokio::test]
    async fn permanent_credentials_are_fetched_once() {
        let src = Counting::new(None);
        let cache = Arc::new(CachingProvider::new(src.clone()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.credentials().await.unwrap().access_key_id })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "AK1");
        }
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refreshes_before_expiry() {
        // Valid for 10 minutes, refreshed 5 minutes early: cached.
        let src = Counting::new(Some(chrono::Duration::minutes(10)));
        let cache = CachingProvider::new(src.clone());
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK1");
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK1");
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);

        // Valid for 2 minutes: inside the margin, so every call refreshes.
        let src = Counting::new(Some(chrono::Duration::minutes(2)));
        let cache = CachingProvider::new(src.clone());
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK1");
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK2");

        // A failed refresh keeps the still-valid credentials...
        *src.fail.lock().unwrap() = true;
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK2");
        // ...but never expired ones.
        let src = Counting::new(Some(chrono::Duration::seconds(-1)));
        let cache = CachingProvider::new(src.clone());
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "AK1");
        *src.fail.lock().unwrap() = true;
        assert!(cache.credentials().await.is_err());
    }

    #[tokio::test]
    async fn chain_takes_first_available() {
        #[derive(Debug)]
        struct Missing;
        impl CredentialsProvider for Missing {
            fn name(&self) -> &'static str {
                "missing"
            }
            fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
                Box::pin(async {
                    Err(CredentialsError::NotFound {
                        source_name: "missing",
                        reason: "nothing here".into(),
                    })
                })
            }
        }
        let chain = ChainProvider(vec![
            Arc::new(Missing),
            Arc::new(StaticProvider::new(Credentials::new("AKS", "s"))),
        ]);
        assert_eq!(
            chain.provide().await.unwrap().credentials.access_key_id,
            "AKS"
        );
        let err = ChainProvider(vec![Arc::new(Missing)])
            .provide()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nothing here"), "{err}");
    }

    #[test]
    fn oss_variables_win_over_alibaba_cloud_ones() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = credentials_from_vars(vars(&[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "AKALI"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s2"),
            ("OSS_ACCESS_KEY_ID", "AKOSS"),
            ("OSS_ACCESS_KEY_SECRET", "s1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(both.access_key_id, "AKOSS");
        let ali = credentials_from_vars(vars(&[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "AKALI"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s2"),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", "tk"),
            ("OSS_ACCESS_KEY_ID", ""),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(ali.access_key_id, "AKALI");
        assert_eq!(ali.security_token.unwrap().expose(), "tk");
        assert_eq!(credentials_from_vars(vars(&[])).unwrap(), None);
        let half = credentials_from_vars(vars(&[("OSS_ACCESS_KEY_SECRET", "sekrit")]))
            .unwrap_err()
            .to_string();
        assert!(
            half.contains("OSS_ACCESS_KEY_ID") && !half.contains("sekrit"),
            "{half}"
        );
    }

    /// Every source present at once, then removed one by one from the front: each time the
    /// next one in the documented order wins.
    #[tokio::test]
    async fn sources_are_tried_in_the_documented_order() {
        use crate::client::ecs_role::tests::{start_standin, Standin};
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let passwd = d.join("passwd-ossfs");
        std::fs::write(&passwd, "logs:AKPASSWD:p-secret\n").unwrap();
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ossutil = d.join(".ossutilconfig");
        std::fs::write(
            &ossutil,
            "[Credentials]\naccessKeyID=AKOSSUTIL\naccessKeySecret=o\n",
        )
        .unwrap();
        let standin = Arc::new(Standin::default());
        *standin.role.lock().unwrap() = Some("r".into());
        *standin.lifetime.lock().unwrap() = 3600;
        let metadata = start_standin(standin).await;

        let mut opts = CredentialOptions {
            bucket: "logs".into(),
            default_passwd_files: vec![d.join("absent"), passwd.clone()],
            ossutil_config: Some(ossutil.clone()),
            credential_process: Some(
                r#"echo '{"AccessKeyId":"AKPROCESS","AccessKeySecret":"x"}'"#.into(),
            ),
            ram_role: Some(None),
            metadata_endpoint: Some(metadata),
            ..CredentialOptions::default()
        };
        let env: Arc<dyn CredentialsProvider> =
            Arc::new(StaticProvider::new(Credentials::new("AKENV", "e")));
        let missing: Arc<dyn CredentialsProvider> = Arc::new(ChainProvider(vec![]));
        let first = |opts: &CredentialOptions, env: &Arc<dyn CredentialsProvider>| {
            let chain = chain_with_env(opts, env.clone());
            async move { chain.provide().await.map(|c| c.credentials.access_key_id) }
        };
        assert_eq!(first(&opts, &env).await.unwrap(), "AKENV");
        assert_eq!(first(&opts, &missing).await.unwrap(), "AKPASSWD");
        opts.default_passwd_files.clear();
        assert_eq!(first(&opts, &missing).await.unwrap(), "AKOSSUTIL");
        opts.ossutil_config = Some(d.join("no-ossutilconfig"));
        assert_eq!(first(&opts, &missing).await.unwrap(), "AKPROCESS");
        opts.credential_process = None;
        assert_eq!(first(&opts, &missing).await.unwrap(), "STS.K1");
        opts.ram_role = None;
        let none = first(&opts, &missing).await.unwrap_err();
        assert!(matches!(none, CredentialsError::NotFound { .. }), "{none}");

        // An explicit passwd file replaces the default ones; one others can read stops the
        // search with its name even though later sources have keys.
        opts.ossutil_config = Some(ossutil);
        opts.passwd_file = Some(passwd.clone());
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = first(&opts, &missing).await.unwrap_err().to_string();
        assert!(err.contains(&passwd.display().to_string()), "{err}");
        opts.passwd_file = None;
        opts.default_passwd_files = vec![passwd.clone()];
        let err = first(&opts, &missing).await.unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("p-secret"), "{err}");

        let shown = format!("{:?}", chain_with_env(&opts, env));
        assert!(
            !shown.contains("p-secret") && !shown.contains("\"e\""),
            "{shown}"
        );
        opts.credential_process = Some("get-keys --token sekrit-arg".into());
        let shown = format!("{opts:?}");
        assert!(
            shown.contains("get-keys") && !shown.contains("sekrit"),
            "{shown}"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let p = StaticProvider::new(
            Credentials::new("AKID", "topsecret").with_token(Some("tok".into())),
        );
        let shown = format!("{p:?}");
        assert!(shown.contains("AKID") && !shown.contains("topsecret") && !shown.contains("tok\""));
    }
}
