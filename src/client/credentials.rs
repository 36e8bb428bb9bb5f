//! Where the signing keys come from. A [`CredentialsProvider`] produces credentials with an
//! optional expiry; [`CachingProvider`] (which the client always puts in front) reuses them and
//! fetches new ones shortly before they expire, so a source with short-lived keys (ECS RAM role,
//! STS, a credential process) only has to implement `provide`.

use std::fmt;
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

/// `OSS_ACCESS_KEY_ID`, `OSS_ACCESS_KEY_SECRET` and optional `OSS_SESSION_TOKEN`, read at each
/// `provide` (the cache in front decides how often that is).
#[derive(Debug, Clone, Default)]
pub struct EnvProvider;

impl CredentialsProvider for EnvProvider {
    fn name(&self) -> &'static str {
        "environment"
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        Box::pin(async move {
            Credentials::from_env()
                .map(ProvidedCredentials::permanent)
                .ok_or_else(|| CredentialsError::NotFound {
                    source_name: "environment",
                    reason: format!(
                        "{} and {} must both be set",
                        crate::oss::credentials::ENV_ACCESS_KEY_ID,
                        crate::oss::credentials::ENV_ACCESS_KEY_SECRET
                    ),
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
                    Ok(c) => return Ok(c),
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
    fn debug_hides_secrets() {
        let p = StaticProvider::new(
            Credentials::new("AKID", "topsecret").with_token(Some("tok".into())),
        );
        let shown = format!("{p:?}");
        assert!(shown.contains("AKID") && !shown.contains("topsecret") && !shown.contains("tok\""));
    }
}
