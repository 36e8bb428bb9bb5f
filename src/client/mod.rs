//! The OSS client: every call the filesystem makes to OSS goes through [`Client`]. This module
//! owns addressing (endpoint parsing, region derivation, virtual-hosted vs path-style URLs),
//! credentials (providers with cached refresh before expiry), signing (V4 by default, V1 by
//! option, STS tokens), sending over one pooled reqwest connection set with connect and request
//! timeouts, retries of idempotent calls with jittered backoff under a deadline, typed errors
//! with the single errno mapping, per-operation request counters and a tracing span per HTTP
//! request. It does not own append semantics: AppendObject reports ambiguity to its caller,
//! whose exactly-once recovery decides what happened.

mod body;
pub mod config;
pub mod credential_process;
pub mod credentials;
pub mod ecs_role;
pub mod error;
mod ops;
pub mod ossutil_config;
pub mod passwd_file;
mod request;
pub mod retry;
mod stats;

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub use body::ByteStream;
pub use config::{ClientConfig, ConfigError, Endpoint, SignatureVersion};
pub use credentials::{
    chain_for, CachingProvider, ChainProvider, CredentialOptions, CredentialsError,
    CredentialsProvider, EnvProvider, ProvidedCredentials, StaticProvider,
};
pub use error::{ClientError, KeyProblem, Op, OssError, TransportKind};
pub use ops::{
    AppendOutcome, CheckError, ContentRange, CreateOptions, GetObjectOutput, ObjectData, RangeData,
    WriteOutcome,
};
pub use retry::RetryPolicy;
pub use stats::{OpCounts, Stats};

pub use crate::oss::range::RangeSpec;
pub use crate::oss::xml::{ListEntry, ListPage};
pub use crate::oss::{Credentials, ObjectMeta, ObjectType};

/// A handle on one bucket at one endpoint. Cheap to clone; clones share connections, the
/// credentials cache and the counters.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    addressing: config::Addressing,
    /// `None`: anonymous (unsigned) requests.
    credentials: Option<CachingProvider>,
    counters: stats::Counters,
    /// Server clock minus ours, learnt from RequestTimeTooSkewed answers.
    clock_offset_ms: AtomicI64,
}

impl Inner {
    fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }

    fn set_clock_offset_ms(&self, ms: i64) {
        self.clock_offset_ms.store(ms, Ordering::Relaxed);
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Client")
            .field("endpoint", &i.config.endpoint.to_string())
            .field("bucket", &i.addressing.bucket)
            .field("region", &i.addressing.region)
            .field("path_style", &i.addressing.path_style)
            .field("signature", &i.config.signature)
            .field("credentials", &i.credentials.as_ref().map(|p| p.name()))
            .finish()
    }
}

impl Client {
    /// Builds the client; `credentials` `None` sends unsigned requests (anonymous servers and
    /// public buckets). The provider is wrapped in a [`CachingProvider`].
    pub fn new(
        config: ClientConfig,
        credentials: Option<Arc<dyn CredentialsProvider>>,
    ) -> Result<Client, ConfigError> {
        let addressing = config.addressing()?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Bounds each read of a streamed GET body, which the per-attempt limit does not.
            .read_timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            .tcp_nodelay(true)
            // A redirect would resend our signed headers somewhere else; report it instead.
            .redirect(reqwest::redirect::Policy::none());
        if config.endpoint.is_loopback() {
            // A local server is never behind the user's HTTP proxy.
            builder = builder.no_proxy();
        }
        for (host, addr) in &config.resolve {
            builder = builder.resolve(host, *addr);
        }
        let http = builder
            .build()
            .map_err(|e| ConfigError::Http(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                addressing,
                credentials: credentials.map(CachingProvider::new),
                counters: stats::Counters::default(),
                clock_offset_ms: AtomicI64::new(0),
                config,
            }),
        })
    }

    /// Credentials from `OSS_ACCESS_KEY_ID` / `OSS_ACCESS_KEY_SECRET` / `OSS_SESSION_TOKEN`.
    pub fn from_env(config: ClientConfig) -> Result<Client, ConfigError> {
        Client::new(config, Some(Arc::new(EnvProvider)))
    }

    /// Fixed credentials.
    pub fn with_credentials(
        config: ClientConfig,
        credentials: Credentials,
    ) -> Result<Client, ConfigError> {
        Client::new(config, Some(Arc::new(StaticProvider::new(credentials))))
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn bucket(&self) -> &str {
        &self.inner.addressing.bucket
    }

    /// The region in V4 scopes.
    pub fn region(&self) -> &str {
        &self.inner.addressing.region
    }

    pub fn uses_path_style(&self) -> bool {
        self.inner.addressing.path_style
    }

    /// The `Host` (with port) requests go to.
    pub fn host(&self) -> &str {
        self.inner.addressing.authority()
    }

    /// Requests, retries and failures per operation so far.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// How far the signing clock is moved to match the server's (after RequestTimeTooSkewed).
    pub fn clock_offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.inner.clock_offset_ms())
    }

    /// Moves the signing clock; for tests of the skew correction.
    #[doc(hidden)]
    pub fn set_clock_offset(&self, offset: chrono::Duration) {
        self.inner.set_clock_offset_ms(offset.num_milliseconds());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: &T) {}

    #[test]
    fn handles_and_futures_cross_tasks() {
        // The filesystem hands every call to a tokio task: all of this must be Send.
        fn shared<T: Send + Sync + Clone + 'static>() {}
        shared::<Client>();
        let c = Client::new(
            ClientConfig::new("http://127.0.0.1:9", "bkt").unwrap(),
            None,
        )
        .unwrap();
        let o = CreateOptions::default();
        send(&c.head_object("k"));
        send(&c.get_object("k", None));
        send(&c.get_object_bytes("k", None));
        send(&c.append_object("k", 0, bytes::Bytes::new(), &o));
        send(&c.put_object("k", bytes::Bytes::new(), &o));
        send(&c.delete_object("k"));
        send(&c.copy_object("a", "b", false));
        send(&c.list_objects_v2("", None, None, None, None));
        send(&c.list_all("", None));
        send(&c.check_bucket(""));
        fn stream<T: Send + futures::Stream + Unpin>() {}
        stream::<ByteStream>();
    }

    #[test]
    fn debug_shows_no_secrets() {
        let c = Client::with_credentials(
            ClientConfig::new("https://oss-cn-hangzhou.aliyuncs.com", "bkt").unwrap(),
            Credentials::new("AKID", "hush-hush").with_token(Some("tok-tok".into())),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("cn-hangzhou") && shown.contains("static credentials"));
        assert!(
            !shown.contains("hush-hush") && !shown.contains("tok-tok"),
            "{shown}"
        );
        assert_eq!(c.host(), "bkt.oss-cn-hangzhou.aliyuncs.com");
    }
}
