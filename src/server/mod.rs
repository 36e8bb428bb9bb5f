//! The local OSS-compatible server (`appendfs serve`, and what `mount --embedded` starts): the
//! HTTP face in [`http`], the operations in [`ops`], storage in [`store`] (RAM or a durable data
//! directory), multipart upload in [`multipart`], the listing engine in [`list`], fault
//! injection in [`fault`], network shaping in [`shape`] and request accounting in
//! [`accounting`]. It behaves like OSS as the official SDKs see it, so every other layer can be
//! tested against it over real HTTP.

pub mod accounting;
pub mod disk;
pub mod fault;
pub mod http;
pub mod list;
pub mod mem;
pub mod multipart;
pub mod ops;
pub mod shape;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use accounting::{OpTraffic, Traffic};

pub use fault::FaultPlan;
use http::OssError;
pub use store::{SharedStore, Store, StoreError};

use crate::oss::Credentials;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Storage {
    /// Everything in RAM (`--memory`).
    #[default]
    Memory,
    /// Durable, in this directory (`--data-dir`).
    Dir(PathBuf),
}

/// What CopyObject does with an Appendable source. The documentation disagrees with itself, so
/// this is a switch (`serve --copy-appendable`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CopyAppendable {
    /// Copy it; the destination is a Normal object (CopyObject page).
    #[default]
    Allow,
    /// Refuse with 400 InvalidArgument (AppendObject page: "cannot be copied").
    Reject,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub storage: Storage,
    /// The one key pair accepted. `None` only with `anonymous`.
    pub credentials: Option<Credentials>,
    /// Accept unsigned requests.
    pub anonymous: bool,
    /// Buckets to create at start.
    pub buckets: Vec<String>,
    pub faults: FaultPlan,
    pub fault_seed: u64,
    pub copy_appendable: CopyAppendable,
    /// Region named in bucket info and locations.
    pub region: String,
    /// Delay of every answer's first byte (`serve --latency`); `None`: none.
    pub latency: Option<Duration>,
    /// Bytes per second each connection may move in each direction (`serve --bandwidth`);
    /// `None`: unlimited.
    pub bandwidth: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            storage: Storage::Memory,
            credentials: None,
            anonymous: false,
            buckets: Vec::new(),
            faults: FaultPlan::none(),
            fault_seed: 0,
            copy_appendable: CopyAppendable::Allow,
            region: "cn-hangzhou".into(),
            latency: None,
            bandwidth: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the data directory {dir}: {source}")]
    Storage { dir: PathBuf, source: StoreError },
    #[error("invalid bucket name {0:?} (3-63 characters of a-z, 0-9 and -, not starting or ending with -)")]
    BadBucket(String),
    #[error(
        "the server needs credentials (OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET) or --anonymous"
    )]
    NoCredentials,
}

/// Shared by every connection.
pub struct ServerState {
    pub config: ServerConfig,
    pub store: SharedStore,
    pub faults: fault::Injector,
    stats: Mutex<BTreeMap<String, u64>>,
    pub accounting: accounting::Accounting,
}

impl ServerState {
    pub fn count(&self, op: &str) {
        *self
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op.to_string())
            .or_default() += 1;
    }

    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn bucket_exists(&self, bucket: &str) -> bool {
        matches!(self.store.bucket(bucket), Ok(Some(_)))
    }

    /// Runs a store call, off the async workers when the store blocks on disk.
    pub async fn run_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if !self.store.blocking() {
            return f(self.store.as_ref());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
    }

    /// As [`run_store`](Self::run_store), for calls that already map their errors.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, OssError> + Send + 'static,
    ) -> Result<T, OssError> {
        if !self.store.blocking() {
            return f(self.store.as_ref());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| OssError::internal(e.to_string()))?
    }
}

/// A server accepting connections in the background.
pub struct RunningServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests per operation name (`AppendObject`, `HeadObject`, ...) that reached the
    /// operation: injected resets and errors are not counted, lost responses are.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.state.stats()
    }

    /// Every request by operation and status class (rejected and fault-injected ones
    /// included), with body bytes received and sent: what `/_appendfs/stats` serves.
    pub fn traffic(&self) -> Traffic {
        self.state.accounting.snapshot()
    }

    pub fn set_faults(&self, plan: FaultPlan) {
        self.state.faults.set_plan(plan);
    }

    pub fn store(&self) -> SharedStore {
        self.state.store.clone()
    }

    /// Stops accepting and drops open connections.
    /// Stops accepting, ends open connections, and returns once the store is released (a
    /// data directory can then be opened again at once: redb allows one opener).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        // Connection tasks end on the stop signal, each dropping its reference to the state.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&self.state) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// Opens the storage, creates the configured buckets and starts serving on `listen`.
pub async fn start(config: ServerConfig, listen: SocketAddr) -> Result<RunningServer, ServerError> {
    if config.credentials.is_none() && !config.anonymous {
        return Err(ServerError::NoCredentials);
    }
    let store: SharedStore = match &config.storage {
        Storage::Memory => Arc::new(store::MemStore::new()),
        Storage::Dir(dir) => {
            let d = dir.clone();
            let opened = tokio::task::spawn_blocking(move || store::DiskStore::open(&d))
                .await
                .map_err(|e| ServerError::Storage {
                    dir: dir.clone(),
                    source: StoreError::Io(std::io::Error::other(e.to_string())),
                })?;
            Arc::new(opened.map_err(|source| ServerError::Storage {
                dir: dir.clone(),
                source,
            })?)
        }
    };
    for b in &config.buckets {
        if !crate::oss::valid_bucket_name(b) {
            return Err(ServerError::BadBucket(b.clone()));
        }
        store
            .create_bucket(b)
            .map_err(|source| ServerError::Storage {
                dir: match &config.storage {
                    Storage::Dir(d) => d.clone(),
                    Storage::Memory => PathBuf::from("<memory>"),
                },
                source,
            })?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: listen,
            source,
        })?;
    let state = Arc::new(ServerState {
        faults: fault::Injector::new(config.faults.clone(), config.fault_seed),
        config,
        store,
        stats: Mutex::new(BTreeMap::new()),
        accounting: accounting::Accounting::default(),
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let accept_state = state.clone();
    let task = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        tokio::spawn(http::serve_connection(accept_state.clone(), stream, stop_rx.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = stop_rx.changed() => break,
            }
        }
    });
    tracing::info!(%addr, "OSS-compatible server listening");
    Ok(RunningServer {
        addr,
        state,
        stop,
        task,
    })
}
