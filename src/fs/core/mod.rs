//! The filesystem core: every FUSE operation as a plain async method over inode numbers, with
//! no kernel in the loop, so it can be tested directly against the local server or the
//! in-memory fake store. The operations live by theme:
//!
//! - this file: the [`Core`] itself, its settings, handles, attributes, the shared
//!   cache-then-fetch of file metadata and object identity, and the mount's lifecycle (drain);
//! - [`names`]: lookup, mkdir, rmdir, unlink, rename;
//! - [`listing`]: listings page by page, readdir handles, remembered listings;
//! - [`files`]: open, create, read, write, flush, release, setattr, xattrs.
//!
//! Ownership: the namespace ([`Nodes`]) owns each object's identity and attributes (path,
//! inode, cached HEAD, verified prefix); the append stream owns what this mount has written
//! and not yet confirmed (position, CRC, buffers); handles own their write marks.

mod files;
mod listing;
mod names;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::append::budget::DirtyBudget;
use super::append::rescue::Rescue;
use super::append::{AppendStream, Shared, StreamConfig, WriteMark};
use super::error::{FsError, FsResult};
use super::namespace::{valid_name, Cached, FileMeta, Kind, Nodes, PosixMeta};
use super::reader::BlockCache;
use super::store::Store;
use crate::oss::ObjectType;

pub use listing::{DirBatch, DirEntry};

/// Settings of one mount.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Key prefix shown as the mount root: empty or ending in `/`.
    pub prefix: String,
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    pub metadata_ttl: Duration,
    pub cache_size: u64,
    pub max_dirty: u64,
    /// One bound shared by buffered writes, prefetch and the block cache (`--max-memory`):
    /// the cache gives way to buffered writes, prefetch waits for room. `None`: the cache and
    /// the buffers are bounded separately by `cache_size` and `max_dirty`.
    pub max_memory: Option<u64>,
    pub read_only: bool,
    pub stream: StreamConfig,
    /// Where bytes that cannot be appended are saved (see `append::rescue`).
    pub rescue_dir: PathBuf,
}

/// Attributes the adapter turns into a `FileAttr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
}

/// How a file handle was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenMode {
    pub write: bool,
    pub read: bool,
}

/// What a handle's reads have been, to tell a sequential reader (full blocks, prefetch) from
/// one that reads here and there (only what it asks for).
#[derive(Debug, Default)]
struct ReadState {
    /// Where the last read ended (the furthest end during a sequential streak).
    last_end: u64,
    /// Bytes read in the current sequential streak (0: none).
    streak: u64,
    /// The streak's prefetch requests cover the object up to here (block aligned).
    ahead: u64,
    /// Bytes of the streak's next prefetch request (doubling up to the steady size).
    request: u64,
}

enum HandleKind {
    File {
        ino: u64,
        stream: Option<Arc<AppendStream>>,
        mark: WriteMark,
        read: ReadState,
    },
    /// A directory handle's cursor, locked (by that handle's calls only) while a page is
    /// fetched.
    Dir(Arc<tokio::sync::Mutex<listing::DirCursor>>),
}

/// The caller that fetches a node's value for everyone ([`Core::cached_or_lead`]).
struct Lead {
    path: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

/// Called with an inode whose size the kernel must learn afresh (its cached pages dropped).
/// Runs outside any request handler (see design notes on `inval_*`).
pub type Invalidator = Box<dyn Fn(u64) + Send + Sync>;

pub struct Core {
    store: Arc<dyn Store>,
    cfg: FsConfig,
    nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Arc<Mutex<HandleKind>>>>,
    next_fh: AtomicU64,
    streams: Mutex<HashMap<u64, Arc<AppendStream>>>,
    shared: Arc<Shared>,
    cancel: watch::Sender<bool>,
    cache: Arc<BlockCache>,
    mounted_at: SystemTime,
    warned: Mutex<HashSet<String>>,
    /// Set once the mount drains: no new writers.
    draining: std::sync::atomic::AtomicBool,
    invalidator: Mutex<Option<Arc<Invalidator>>>,
}

/// Gives the allocator's free pages back to the system, after much was freed at once (a
/// listing of many pages, a pruned map of missing names): a mount that runs for months must
/// not keep the high-water mark of its fragmented heap. At most once a second; glibc only.
fn release_free_memory() {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    {
        let mut last = lock(&LAST);
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    pub fn new(store: Arc<dyn Store>, mut cfg: FsConfig) -> Arc<Self> {
        if !cfg.prefix.is_empty() && !cfg.prefix.ends_with('/') {
            cfg.prefix.push('/');
        }
        let (cancel, cancel_rx) = watch::channel(false);
        let budget = Arc::new(DirtyBudget::new(
            cfg.max_memory
                .map_or(cfg.max_dirty, |m| cfg.max_dirty.min(m)),
        ));
        let shared = Arc::new(Shared {
            store: store.clone(),
            config: Arc::new(cfg.stream.clone()),
            budget: budget.clone(),
            rescue: Arc::new(Rescue::new(cfg.rescue_dir.clone())),
            cancel: cancel_rx,
        });
        Arc::new(Core {
            cache: Arc::new(
                BlockCache::new(store.clone(), cfg.cache_size).sharing(budget, cfg.max_memory),
            ),
            shared,
            cancel,
            nodes: Mutex::new(Nodes::new(&cfg.prefix)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
            mounted_at: SystemTime::now(),
            warned: Mutex::new(HashSet::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
            invalidator: Mutex::new(None),
            store,
            cfg,
        })
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    pub fn dirty_bytes(&self) -> u64 {
        self.shared.budget.used()
    }

    /// Bytes held by the block cache.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.cached_bytes()
    }

    /// When the oldest byte still waiting for OSS, across all streams, was written.
    pub fn oldest_unsent(&self) -> Option<Instant> {
        let streams: Vec<_> = lock(&self.streams).values().cloned().collect();
        streams.iter().filter_map(|s| s.oldest_unsent()).min()
    }

    /// The rescue file, if anything had to be saved to it.
    pub fn rescue(&self) -> &Rescue {
        &self.shared.rescue
    }

    /// How the kernel is told that an inode's size or content changed (set by the mount).
    pub fn set_invalidator(&self, f: Invalidator) {
        *lock(&self.invalidator) = Some(Arc::new(f));
    }

    /// Tells the kernel, from a task of its own (never inside the handler of a request for the
    /// same inode, which would deadlock), to forget what it cached of `ino`.
    fn invalidate(&self, ino: u64) {
        if let Some(f) = lock(&self.invalidator).clone() {
            tokio::task::spawn_blocking(move || f(ino));
        }
    }

    fn fresh<T>(&self, c: &Option<Cached<T>>) -> bool {
        c.as_ref()
            .is_some_and(|c| c.at.elapsed() < self.cfg.metadata_ttl)
    }

    /// The cache-then-fetch shared by HEADs and listings: `cached` answers from the node when
    /// its value is fresh enough. Otherwise one caller per node at a time goes on to fetch: it
    /// gets the node's path and the node's refresh lock, held until it has stored what it
    /// fetched; callers that waited for the lock then find that result with `cached`.
    async fn cached_or_lead<T>(
        &self,
        ino: u64,
        cached: impl Fn(&super::namespace::Node) -> FsResult<Option<T>>,
    ) -> FsResult<Result<T, Lead>> {
        let refresh = {
            let nodes = lock(&self.nodes);
            let n = nodes.by_ino.get(&ino).ok_or(FsError::Stale)?;
            if let Some(v) = cached(n)? {
                return Ok(Ok(v));
            }
            n.refresh.clone()
        };
        let guard = refresh.lock_owned().await;
        let nodes = lock(&self.nodes);
        let n = nodes.by_ino.get(&ino).ok_or(FsError::Stale)?;
        if let Some(v) = cached(n)? {
            return Ok(Ok(v));
        }
        Ok(Err(Lead {
            path: n.path.clone(),
            _guard: guard,
        }))
    }

    fn node_info(&self, ino: u64) -> FsResult<(String, Kind)> {
        let nodes = lock(&self.nodes);
        let n = nodes.by_ino.get(&ino).ok_or(FsError::Stale)?;
        Ok((n.path.clone(), n.kind))
    }

    fn dir_path(&self, ino: u64) -> FsResult<String> {
        match self.node_info(ino)? {
            (p, Kind::Dir) => Ok(p),
            _ => Err(FsError::NotDir),
        }
    }

    fn child_path(&self, parent: u64, name: &str, kind: Kind) -> FsResult<String> {
        if name.len() > 255 {
            return Err(FsError::NameTooLong);
        }
        if !valid_name(name) {
            return Err(FsError::InvalidName(name.to_string()));
        }
        let dir = self.dir_path(parent)?;
        let mut p = format!("{dir}{name}");
        if kind == Kind::Dir {
            p.push('/');
        }
        if p.len() > crate::oss::MAX_KEY_LEN {
            return Err(FsError::NameTooLong);
        }
        Ok(p)
    }

    fn warn_once(&self, key: &str, why: &str) {
        let mut warned = lock(&self.warned);
        // Bounded: a bucket full of odd keys must not grow this without end.
        if warned.len() > 10_000 {
            warned.clear();
        }
        if warned.insert(key.to_string()) {
            tracing::warn!(key, "skipping object: {why}");
        }
    }

    fn dir_attr(&self, ino: u64) -> Attr {
        Attr {
            ino,
            kind: Kind::Dir,
            size: 0,
            mtime: self.mounted_at,
            mode: self.cfg.dir_mode,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    /// Size as this mount shows it: the remote length plus bytes not yet appended.
    fn file_attr(&self, ino: u64, meta: &FileMeta) -> Attr {
        let size = match lock(&self.streams).get(&ino) {
            Some(s) => {
                // One snapshot: a confirmation or a truncate between two separate reads
                // could make `logical - position` underflow.
                let (position, local) = s.local_span();
                meta.size.max(position) + local
            }
            None => meta.size,
        };
        // Mode, owner and mtime: a HEAD's user metadata (remembered on the node, since a
        // listing has none and `ls -l` must not cost a HEAD per file), then changes kept on
        // the inode, then the mount's defaults.
        let posix = {
            let mut nodes = lock(&self.nodes);
            match nodes.by_ino.get_mut(&ino) {
                Some(n) => {
                    if meta.from_head {
                        n.seen = Some(PosixMeta::from_user_meta(&meta.user_meta));
                    }
                    n.seen.unwrap_or_default().overlay(n.pending)
                }
                None if meta.from_head => PosixMeta::from_user_meta(&meta.user_meta),
                None => PosixMeta::default(),
            }
        };
        Attr {
            ino,
            kind: Kind::File,
            size,
            mtime: posix.mtime.unwrap_or(meta.mtime),
            mode: posix.mode.unwrap_or(self.cfg.file_mode),
            uid: posix.uid.unwrap_or(self.cfg.uid),
            gid: posix.gid.unwrap_or(self.cfg.gid),
        }
    }

    /// Records what OSS says of `ino`'s object, deciding whether it is still the same object.
    /// An Appendable object only grows: shorter, another type, or the same length with another
    /// CRC is a replacement, and so is growth whose bytes do not extend the verified prefix
    /// (checked by the reader, which fetches those bytes anyway). Other objects are replaced
    /// when their ETag changes. A replacement gives the path a new inode (returned); the old
    /// one keeps its last attributes for open handles.
    fn store_meta(&self, ino: u64, meta: FileMeta) -> u64 {
        self.store_meta_at(ino, meta, Instant::now())
    }

    /// As [`Core::store_meta`], for what OSS said at `at` (a listing's time).
    fn store_meta_at(&self, ino: u64, meta: FileMeta, at: Instant) -> u64 {
        let mut nodes = lock(&self.nodes);
        let Some(n) = nodes.by_ino.get_mut(&ino) else {
            return ino;
        };
        if n.replaced {
            return ino;
        }
        let replaced = match (&n.meta, n.verified) {
            (Some(old), verified) => {
                let o = &old.value;
                let crc_differs = |len: u64, crc: Option<u64>| {
                    meta.size == len && matches!((meta.crc64, crc), (Some(a), Some(b)) if a != b)
                };
                meta.size < o.size
                    || meta.object_type != o.object_type
                    || crc_differs(o.size, o.crc64)
                    || verified
                        .is_some_and(|(len, crc)| meta.size < len || crc_differs(len, Some(crc)))
                    || (meta.object_type != ObjectType::Appendable && meta.etag != o.etag)
            }
            (None, Some((len, crc))) => {
                meta.size < len || (meta.size == len && meta.crc64.is_some_and(|c| c != crc))
            }
            (None, None) => false,
        };
        let target = if replaced {
            let path = n.path.clone();
            match nodes.replace(ino) {
                Some(new) => {
                    tracing::info!(key = %path, old_ino = ino, new_ino = new, "object replaced behind the mount: the name gets a new inode");
                    self.move_stream(ino, new);
                    new
                }
                None => ino,
            }
        } else {
            ino
        };
        if let Some(n) = nodes.by_ino.get_mut(&target) {
            if n.verified.is_none() && meta.object_type == ObjectType::Appendable {
                if let Some(c) = meta.crc64 {
                    n.verified = Some((meta.size, c));
                }
            }
            n.meta = Some(Cached { value: meta, at });
        }
        if target != ino {
            drop(nodes);
            self.invalidate(ino);
        }
        target
    }

    /// The object at `old`'s key was replaced: its stream (kept by writers still holding
    /// handles of the old inode) now belongs to the name's new inode, so appends through old
    /// and new handles keep going to the key's end through one stream.
    fn move_stream(&self, old: u64, new: u64) {
        let mut streams = lock(&self.streams);
        if let Some(s) = streams.remove(&old) {
            streams.entry(new).or_insert(s);
        }
    }

    /// A file's metadata, from the cache when younger than the metadata TTL (and from a HEAD
    /// when `want_head`), else from one HEAD shared by every concurrent caller. Returns the
    /// inode it now belongs to (another one when the object was found replaced).
    async fn file_meta(&self, ino: u64, want_head: bool) -> FsResult<(u64, FileMeta)> {
        let cached = |n: &super::namespace::Node| -> FsResult<Option<(u64, FileMeta)>> {
            if n.kind != Kind::File {
                return Err(FsError::IsDir);
            }
            let m = match &n.meta {
                Some(m) => m,
                // A replaced node's key belongs to another inode now: never ask OSS for it.
                None if n.replaced => return Err(FsError::Stale),
                None => return Ok(None),
            };
            let usable = n.replaced
                || (m.at.elapsed() < self.cfg.metadata_ttl && (!want_head || m.value.from_head));
            Ok(usable.then(|| (ino, m.value.clone())))
        };
        let lead = match self.cached_or_lead(ino, cached).await? {
            Ok(hit) => return Ok(hit),
            Err(lead) => lead,
        };
        let path = &lead.path;
        match self.store.head(path).await {
            Ok(m) => {
                let meta = FileMeta::from_head(&m);
                if let Some(s) = lock(&self.streams).get(&ino) {
                    s.observe_remote(meta.size, meta.crc64);
                }
                Ok((self.store_meta(ino, meta.clone()), meta))
            }
            Err(e) if e.is_no_such_key() => {
                // Still being written here? Then it exists as far as this mount is concerned.
                let stream = lock(&self.streams).get(&ino).cloned();
                if let Some(s) = stream {
                    if !s.is_idle() {
                        let nodes = lock(&self.nodes);
                        if let Some(m) = nodes.by_ino.get(&ino).and_then(|n| n.meta.clone()) {
                            return Ok((ino, m.value));
                        }
                    }
                }
                Err(FsError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn new_handle(&self, kind: HandleKind) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(Mutex::new(kind)));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Mutex<HandleKind>>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else if self.draining.load(Ordering::SeqCst) {
            Err(FsError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// (blocks, files) for statfs. OSS has no capacity to report: a large, constant figure
    /// keeps `df` and installers calm.
    pub fn statfs(&self) -> (u64, u64) {
        (1 << 40, 1 << 40)
    }

    // ---------------------------------------------------------------------------------------
    // Lifecycle: running → draining → stopped.

    /// Drains the mount (umount, SIGTERM, SIGINT): every stream sends what it holds, in
    /// parallel. Writes arriving during the first round join it; then the mount stops taking
    /// writes (they fail with `EIO`, never acknowledged and dropped) and what is left is sent
    /// until `deadline`. Attempts still unfinished then are cut off and their bytes, with
    /// everything behind them, go to the rescue file. Returns how many rescue records the
    /// mount wrote in its life (0: nothing acknowledged was lost).
    pub async fn drain(&self, deadline: Instant) -> u64 {
        let streams =
            || -> Vec<Arc<AppendStream>> { lock(&self.streams).values().cloned().collect() };
        let round = |list: Vec<Arc<AppendStream>>| async move {
            futures::future::join_all(list.iter().map(|s| s.drain())).await;
        };
        let until = tokio::time::Instant::from_std(deadline);
        let first = tokio::time::timeout_at(until, round(streams())).await;
        self.draining.store(true, Ordering::SeqCst);
        for s in streams() {
            s.close_for_writes();
        }
        if first.is_ok() {
            let _ = tokio::time::timeout_at(until, round(streams())).await;
        }
        // Grace over: cut off what is still trying; the streams rescue it.
        let _ = self.cancel.send(true);
        round(streams()).await;
        self.shared.rescue.records()
    }
}
