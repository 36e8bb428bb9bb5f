//! The filesystem core: every FUSE operation as a plain async method over inode numbers, with
//! no kernel in the loop, so it can be tested directly against the local server. It owns the
//! namespace (via [`Nodes`]), the open handles, one [`AppendStream`] per object being written
//! and the read [`BlockCache`]; the FUSE adapter only translates requests and replies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::append::{AppendStream, DirtyBudget, StreamConfig, WriteMark};
use super::error::{FsError, FsResult};
use super::namespace::{parent_path, valid_name, Cached, FileMeta, Kind, Listing, Nodes, ROOT};
use super::reader::{BlockCache, BLOCK, MAX_WINDOW};
use crate::client::{Client, CreateOptions, RangeSpec};
use crate::oss::meta::storage_class_appendable;
use crate::oss::{crc64, ObjectType};

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
    pub read_only: bool,
    pub stream: StreamConfig,
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

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: Kind,
}

/// How a file handle was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenMode {
    pub write: bool,
    pub read: bool,
}

struct ReadState {
    last_end: u64,
    window: u64,
}

enum HandleKind {
    File {
        ino: u64,
        stream: Option<Arc<AppendStream>>,
        mark: WriteMark,
        read: ReadState,
    },
    Dir {
        ino: u64,
        entries: Option<Arc<Vec<DirEntry>>>,
    },
}

pub struct Core {
    client: Client,
    cfg: FsConfig,
    nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Arc<Mutex<HandleKind>>>>,
    next_fh: AtomicU64,
    streams: Mutex<HashMap<u64, Arc<AppendStream>>>,
    budget: Arc<DirtyBudget>,
    cache: Arc<BlockCache>,
    stream_cfg: Arc<StreamConfig>,
    mounted_at: SystemTime,
    warned: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    pub fn new(client: Client, mut cfg: FsConfig) -> Arc<Self> {
        if !cfg.prefix.is_empty() && !cfg.prefix.ends_with('/') {
            cfg.prefix.push('/');
        }
        Arc::new(Core {
            cache: Arc::new(BlockCache::new(client.clone(), cfg.cache_size)),
            budget: Arc::new(DirtyBudget::new(cfg.max_dirty)),
            stream_cfg: Arc::new(cfg.stream.clone()),
            nodes: Mutex::new(Nodes::new(&cfg.prefix)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
            mounted_at: SystemTime::now(),
            warned: Mutex::new(HashSet::new()),
            client,
            cfg,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    pub fn dirty_bytes(&self) -> u64 {
        self.budget.used()
    }

    fn fresh<T>(&self, c: &Option<Cached<T>>) -> bool {
        c.as_ref()
            .is_some_and(|c| c.at.elapsed() < self.cfg.metadata_ttl)
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
        if lock(&self.warned).insert(key.to_string()) {
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
        Attr {
            ino,
            kind: Kind::File,
            size,
            mtime: meta.mtime,
            mode: self.cfg.file_mode,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    /// Records a HEAD result, noticing replacement (which invalidates cached blocks).
    fn store_meta(&self, ino: u64, meta: FileMeta) {
        let mut nodes = lock(&self.nodes);
        if let Some(n) = nodes.by_ino.get_mut(&ino) {
            if let Some(old) = &n.meta {
                let o = &old.value;
                // Appendable objects only grow, so a shorter one, another type, or the same
                // length with another CRC is a replacement; others change ETag when replaced.
                // (Replaced and regrown past the old length between two HEADs is not seen.)
                let same_len_other_crc = meta.size == o.size
                    && matches!((meta.crc64, o.crc64), (Some(a), Some(b)) if a != b);
                let replaced = meta.size < o.size
                    || meta.object_type != o.object_type
                    || same_len_other_crc
                    || (meta.object_type != ObjectType::Appendable && meta.etag != o.etag);
                if replaced {
                    n.generation += 1;
                }
            }
            n.meta = Some(Cached {
                value: meta,
                at: Instant::now(),
            });
        }
    }

    /// A file's metadata, from the cache when younger than the metadata TTL, else from one HEAD
    /// shared by every concurrent caller.
    async fn file_meta(&self, ino: u64, want_head: bool) -> FsResult<FileMeta> {
        let (path, refresh) = {
            let nodes = lock(&self.nodes);
            let n = nodes.by_ino.get(&ino).ok_or(FsError::Stale)?;
            if n.kind != Kind::File {
                return Err(FsError::IsDir);
            }
            if self.fresh(&n.meta)
                && (!want_head || n.meta.as_ref().is_some_and(|m| m.value.from_head))
            {
                return n
                    .meta
                    .as_ref()
                    .map(|m| m.value.clone())
                    .ok_or(FsError::Stale);
            }
            (n.path.clone(), n.refresh.clone())
        };
        let _one = refresh.lock().await;
        {
            let nodes = lock(&self.nodes);
            if let Some(n) = nodes.by_ino.get(&ino) {
                if self.fresh(&n.meta)
                    && (!want_head || n.meta.as_ref().is_some_and(|m| m.value.from_head))
                {
                    if let Some(m) = &n.meta {
                        return Ok(m.value.clone());
                    }
                }
            }
        }
        match self.client.head_object(&path).await {
            Ok(m) => {
                let meta = FileMeta::from_head(&m);
                if let Some(s) = lock(&self.streams).get(&ino) {
                    s.observe_remote(meta.size, meta.crc64);
                }
                self.store_meta(ino, meta.clone());
                Ok(meta)
            }
            Err(e) if e.is_no_such_key() => {
                // Still being written here? Then it exists as far as this mount is concerned.
                // Clone out first: holding `streams` while taking `nodes` would invert the lock
                // order used elsewhere (nodes, then streams).
                let stream = lock(&self.streams).get(&ino).cloned();
                if let Some(s) = stream {
                    if !s.is_idle() {
                        let nodes = lock(&self.nodes);
                        if let Some(m) = nodes.by_ino.get(&ino).and_then(|n| n.meta.clone()) {
                            return Ok(m.value);
                        }
                    }
                }
                Err(FsError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Namespace operations

    async fn listing(&self, dir_ino: u64) -> FsResult<Arc<Listing>> {
        let (path, refresh) = {
            let nodes = lock(&self.nodes);
            let n = nodes.by_ino.get(&dir_ino).ok_or(FsError::Stale)?;
            if n.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            if self.fresh(&n.listing) {
                return n
                    .listing
                    .as_ref()
                    .map(|l| l.value.clone())
                    .ok_or(FsError::Stale);
            }
            (n.path.clone(), n.refresh.clone())
        };
        let _one = refresh.lock().await;
        {
            let nodes = lock(&self.nodes);
            if let Some(l) = nodes.by_ino.get(&dir_ino).and_then(|n| n.listing.clone()) {
                if l.at.elapsed() < self.cfg.metadata_ttl {
                    return Ok(l.value);
                }
            }
        }
        let (entries, prefixes) = self.client.list_all(&path, Some("/")).await?;
        let mut listing = Listing::default();
        for p in prefixes {
            let name = p[path.len()..].trim_end_matches('/');
            if valid_name(name) {
                listing.dirs.insert(name.to_string());
            } else {
                self.warn_once(
                    &p,
                    "its name cannot be a file name (empty, '.', '..' or over 255 bytes)",
                );
            }
        }
        for e in entries {
            if e.key == path {
                continue; // the directory's own marker object
            }
            let name = &e.key[path.len()..];
            if !valid_name(name) {
                self.warn_once(
                    &e.key,
                    "its name cannot be a file name (empty, '.', '..' or over 255 bytes)",
                );
                continue;
            }
            if listing.dirs.contains(name) {
                self.warn_once(&e.key, "a directory of the same name hides it");
                continue;
            }
            listing.files.insert(
                name.to_string(),
                FileMeta {
                    size: e.size,
                    mtime: e.last_modified.into(),
                    object_type: e.object_type,
                    etag: e.etag,
                    crc64: None,
                    storage_class: Some(e.storage_class),
                    user_meta: BTreeMap::new(),
                    from_head: false,
                },
            );
        }
        let listing = Arc::new(listing);
        let mut nodes = lock(&self.nodes);
        if let Some(n) = nodes.by_ino.get_mut(&dir_ino) {
            n.listing = Some(Cached {
                value: listing.clone(),
                at: Instant::now(),
            });
        }
        Ok(listing)
    }

    /// Resolves `name` in directory `parent` and takes one kernel lookup reference on it.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let file_path = self.child_path(parent, name, Kind::File)?;
        let dir_path = format!("{file_path}/");
        // A fresh listing of the parent answers without a request.
        let cached = {
            let nodes = lock(&self.nodes);
            let n = nodes.by_ino.get(&parent).ok_or(FsError::Stale)?;
            match &n.listing {
                Some(l) if l.at.elapsed() < self.cfg.metadata_ttl => Some(l.value.clone()),
                _ => None,
            }
        };
        // Files this mount is writing exist even before a listing shows them.
        let known_file = {
            let nodes = lock(&self.nodes);
            nodes
                .by_path
                .get(&file_path)
                .filter(|ino| lock(&self.streams).contains_key(ino))
                .copied()
        };
        if let Some(ino) = known_file {
            let meta = self.file_meta(ino, false).await?;
            return Ok(self.take_ref(&file_path, Kind::File, Some(meta)));
        }
        if let Some(l) = cached {
            if l.dirs.contains(name) {
                return Ok(self.take_ref(&dir_path, Kind::Dir, None));
            }
            if let Some(meta) = l.files.get(name) {
                return Ok(self.take_ref(&file_path, Kind::File, Some(meta.clone())));
            }
            return Err(FsError::NotFound);
        }
        if lock(&self.nodes)
            .negative
            .get(&file_path)
            .is_some_and(|t| t.elapsed() < self.cfg.metadata_ttl)
        {
            return Err(FsError::NotFound);
        }
        // A directory (common prefix or marker) wins over a file of the same name, as in listings.
        let (dir, head) = tokio::join!(
            self.client
                .list_objects_v2(&dir_path, Some("/"), None, None, Some(1)),
            self.client.head_object(&file_path),
        );
        let dir = dir?;
        if !dir.contents.is_empty() || !dir.common_prefixes.is_empty() {
            return Ok(self.take_ref(&dir_path, Kind::Dir, None));
        }
        match head {
            Ok(m) => {
                let meta = FileMeta::from_head(&m);
                Ok(self.take_ref(&file_path, Kind::File, Some(meta)))
            }
            Err(e) if e.is_no_such_key() => {
                lock(&self.nodes).negative.insert(file_path, Instant::now());
                Err(FsError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn take_ref(&self, path: &str, kind: Kind, meta: Option<FileMeta>) -> Attr {
        let ino = {
            let mut nodes = lock(&self.nodes);
            let n = nodes.get_or_insert(path, kind);
            n.lookups += 1;
            n.ino
        };
        match meta {
            Some(m) => {
                self.store_meta(ino, m.clone());
                self.file_attr(ino, &m)
            }
            None => self.dir_attr(ino),
        }
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        let removed = lock(&self.nodes).forget(ino, nlookup);
        if removed {
            if let Some(s) = lock(&self.streams).remove(&ino) {
                // Anything still buffered is sent before the uploader stops.
                s.stop_when_idle();
            }
        }
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let (_, kind) = self.node_info(ino)?;
        match kind {
            Kind::Dir => Ok(self.dir_attr(ino)),
            Kind::File => {
                let meta = self.file_meta(ino, false).await?;
                Ok(self.file_attr(ino, &meta))
            }
        }
    }

    pub async fn readdir_entries(&self, ino: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let path = self.dir_path(ino)?;
        let listing = self.listing(ino).await?;
        let parent_ino = if ino == ROOT {
            ROOT
        } else {
            let nodes = lock(&self.nodes);
            nodes
                .by_path
                .get(parent_path(&path))
                .copied()
                .unwrap_or(ROOT)
        };
        let mut out = vec![
            DirEntry {
                ino,
                name: ".".into(),
                kind: Kind::Dir,
            },
            DirEntry {
                ino: parent_ino,
                name: "..".into(),
                kind: Kind::Dir,
            },
        ];
        let mut nodes = lock(&self.nodes);
        let mut dirs: Vec<&String> = listing.dirs.iter().collect();
        dirs.sort();
        for d in dirs {
            let n = nodes.get_or_insert(&format!("{path}{d}/"), Kind::Dir);
            out.push(DirEntry {
                ino: n.ino,
                name: d.clone(),
                kind: Kind::Dir,
            });
        }
        // Files being created here may not be listed yet.
        let mut names: Vec<(String, u64)> = Vec::new();
        // Stale attributes are refreshed from the listing, so `ls -l` after a relisting costs
        // no HEAD per file.
        let mut refreshed = Vec::new();
        for (name, meta) in &listing.files {
            let n = nodes.get_or_insert(&format!("{path}{name}"), Kind::File);
            names.push((name.clone(), n.ino));
            if !self.fresh(&n.meta) {
                refreshed.push((n.ino, meta.clone()));
            }
        }
        let streams = lock(&self.streams);
        for (ino, s) in streams.iter() {
            if let Some(name) = s.key().strip_prefix(path.as_str()) {
                if valid_name(name)
                    && !listing.files.contains_key(name)
                    && nodes.by_ino.get(ino).is_some_and(|n| !n.detached)
                {
                    names.push((name.to_string(), *ino));
                }
            }
        }
        names.sort();
        for (name, ino) in names {
            out.push(DirEntry {
                ino,
                name,
                kind: Kind::File,
            });
        }
        drop(streams);
        drop(nodes);
        for (ino, meta) in refreshed {
            self.store_meta(ino, meta);
        }
        Ok(Arc::new(out))
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.dir_path(ino)?;
        Ok(self.new_handle(HandleKind::Dir { ino, entries: None }))
    }

    /// Entries from `offset` on; the listing is taken once per open directory handle.
    pub async fn readdir(&self, fh: u64, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let h = self.handle(fh)?;
        let (ino, have) = match &*lock(&h) {
            HandleKind::Dir { ino, entries } => (*ino, entries.clone()),
            _ => return Err(FsError::BadHandle),
        };
        if let (Some(e), true) = (&have, offset > 0) {
            return Ok(e.clone());
        }
        let entries = self.readdir_entries(ino).await?;
        if let HandleKind::Dir { entries: slot, .. } = &mut *lock(&h) {
            *slot = Some(entries.clone());
        }
        Ok(entries)
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.writable()?;
        let path = self.child_path(parent, name, Kind::Dir)?;
        match self.lookup(parent, name).await {
            Ok(attr) => {
                self.forget(attr.ino, 1);
                return Err(FsError::Exists);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let opts = CreateOptions {
            content_type: Some("application/x-directory".into()),
            ..self.stream_cfg.create.clone()
        };
        self.client.put_object(&path, Bytes::new(), &opts).await?;
        let parent_dir = self.dir_path(parent)?;
        lock(&self.nodes).invalidate_listing(&parent_dir);
        Ok(self.take_ref(&path, Kind::Dir, None))
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let path = self.child_path(parent, name, Kind::Dir)?;
        let page = self
            .client
            .list_objects_v2(&path, None, None, None, Some(2))
            .await?;
        if page.contents.iter().any(|e| e.key != path) {
            return Err(FsError::NotEmpty);
        }
        if page.contents.is_empty() {
            // No marker and nothing below: only a file of that name, or nothing.
            let head = self.client.head_object(path.trim_end_matches('/')).await;
            return Err(if head.is_ok() {
                FsError::NotDir
            } else {
                FsError::NotFound
            });
        }
        self.client.delete_object(&path).await?;
        let parent_dir = self.dir_path(parent)?;
        let mut nodes = lock(&self.nodes);
        nodes.detach(&path);
        nodes.invalidate_listing(&parent_dir);
        Ok(())
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let path = self.child_path(parent, name, Kind::File)?;
        let is_dir = self
            .client
            .list_objects_v2(&format!("{path}/"), None, None, None, Some(1))
            .await?;
        if !is_dir.contents.is_empty() {
            return Err(FsError::IsDir);
        }
        match self.client.head_object(&path).await {
            Ok(_) => {}
            Err(e) if e.is_no_such_key() => {
                // Maybe created here and not yet visible? Then there is nothing on OSS either.
                if !lock(&self.nodes).by_path.contains_key(&path) {
                    return Err(FsError::NotFound);
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.client.delete_object(&path).await?;
        self.detach_file(&path);
        let parent_dir = self.dir_path(parent)?;
        let mut nodes = lock(&self.nodes);
        nodes.invalidate_listing(&parent_dir);
        nodes.negative.insert(path, Instant::now());
        Ok(())
    }

    fn detach_file(&self, path: &str) {
        let ino = lock(&self.nodes).detach(path);
        if let Some(ino) = ino {
            if let Some(s) = lock(&self.streams).remove(&ino) {
                s.mark_deleted();
                s.stop_when_idle();
            }
        }
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        self.writable()?;
        let src = self.child_path(parent, name, Kind::File)?;
        let dst = self.child_path(new_parent, new_name, Kind::File)?;
        let src_attr = self.lookup(parent, name).await?;
        self.forget(src_attr.ino, 1);
        if src_attr.kind == Kind::Dir {
            return Err(FsError::CrossDevice);
        }
        if src == dst {
            return Ok(());
        }
        match self.lookup(new_parent, new_name).await {
            Ok(a) => {
                self.forget(a.ino, 1);
                if a.kind == Kind::Dir {
                    return Err(FsError::IsDir);
                }
                if no_replace {
                    return Err(FsError::Exists);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // While the object moves, its stream sends nothing: bytes written meanwhile stay
        // buffered and go to the new key afterwards, so an open handle keeps appending to the
        // renamed file (as on a local filesystem; logrotate relies on it).
        let stream = lock(&self.streams).get(&src_attr.ino).cloned();
        let paused = match &stream {
            Some(s) => Some(s.pause().await),
            None => None,
        };
        let meta = self.client.head_object(&src).await?;
        match meta.object_type {
            Some(ObjectType::Appendable) => self.copy_appendable(&src, &dst, &meta).await?,
            _ => {
                self.client.copy_object(&src, &dst, false).await?;
            }
        }
        self.client.delete_object(&src).await?;
        if let Some(s) = &stream {
            s.rekey(dst.clone());
        }
        drop(paused);
        // The inode follows its object; whatever was at the destination is gone.
        self.detach_file(&dst);
        {
            let mut nodes = lock(&self.nodes);
            nodes.rename(src_attr.ino, &dst);
            // The cached attributes describe the source as it was before its stream's appends
            // (e.g. the empty object `create` made), so they would show a stale size (`cat`
            // after `mv` read nothing) until the metadata TTL ran out. Forget them: the next
            // getattr asks HEAD of the new key.
            if let Some(n) = nodes.by_ino.get_mut(&src_attr.ino) {
                n.meta = None;
            }
            nodes.invalidate_listing(parent_path(&src));
            nodes.invalidate_listing(parent_path(&dst));
            nodes.negative.insert(src.clone(), Instant::now());
        }
        Ok(())
    }

    /// Copies an Appendable object by re-appending its bytes to `dst`, so the copy stays
    /// appendable; the final CRC must equal the source's.
    async fn copy_appendable(
        &self,
        src: &str,
        dst: &str,
        meta: &crate::oss::ObjectMeta,
    ) -> FsResult<()> {
        let size = meta.next_append_position.unwrap_or(meta.size);
        match self.client.delete_object(dst).await {
            Ok(()) => {}
            Err(e) if e.is_no_such_key() => {}
            Err(e) => return Err(e.into()),
        }
        let chunk = self.stream_cfg.chunk_size.max(BLOCK);
        let mut pos = 0u64;
        let mut crc = 0u64;
        let create = self.stream_cfg.create.clone();
        if size == 0 {
            self.client
                .append_object(dst, 0, Bytes::new(), &create)
                .await?;
        }
        while pos < size {
            let last = (pos + chunk).min(size) - 1;
            let data = self
                .client
                .get_object_bytes(src, Some(RangeSpec::FromTo(pos, last)))
                .await?
                .data;
            if data.len() as u64 != last - pos + 1 {
                return Err(FsError::Io(format!("{src:?} changed while being renamed")));
            }
            let opts = if pos == 0 {
                create.clone()
            } else {
                CreateOptions::default()
            };
            let out = self
                .client
                .append_object(dst, pos, data.clone(), &opts)
                .await?;
            crc = crc64::combine(crc, crc64::checksum(&data), data.len() as u64);
            pos += data.len() as u64;
            if out.next_position != pos || out.crc64.is_some_and(|c| c != crc) {
                return Err(FsError::Io(format!(
                    "copy of {src:?} to {dst:?} did not land as sent"
                )));
            }
        }
        if let Some(expected) = meta.crc64 {
            if crc != expected {
                let _ = self.client.delete_object(dst).await;
                return Err(FsError::Io(format!(
                    "copy of {src:?} has CRC-64 {crc}, the source {expected}: source changed during rename"
                )));
            }
        }
        Ok(())
    }

    /// (blocks, files) for statfs. OSS has no capacity to report: a large, constant figure
    /// keeps `df` and installers calm.
    pub fn statfs(&self) -> (u64, u64) {
        (1 << 40, 1 << 40)
    }

    // ---------------------------------------------------------------------------------------
    // Files

    fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
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

    /// The append stream of `ino`, started from a HEAD when this mount has none. Refuses
    /// objects that cannot be appended to.
    async fn stream_for(&self, ino: u64) -> FsResult<Arc<AppendStream>> {
        if let Some(s) = lock(&self.streams).get(&ino) {
            return Ok(s.clone());
        }
        let meta = self.file_meta(ino, true).await?;
        let (path, _) = self.node_info(ino)?;
        if meta.object_type != ObjectType::Appendable {
            tracing::warn!(key = %path, object_type = meta.object_type.as_str(), "refusing to write: only Appendable objects can be written; this one was created by PutObject/multipart/symlink");
            return Err(FsError::NotPermitted(format!(
                "{path:?} is a {} object",
                meta.object_type.as_str()
            )));
        }
        if let Some(class) = meta
            .storage_class
            .as_deref()
            .filter(|c| !storage_class_appendable(c))
        {
            tracing::warn!(key = %path, storage_class = class, "refusing to write: this storage class cannot be appended to");
            return Err(FsError::NotPermitted(format!(
                "{path:?} has storage class {class}"
            )));
        }
        Ok(self.install_stream(ino, path, meta.size, meta.crc64.unwrap_or(0)))
    }

    fn install_stream(&self, ino: u64, key: String, position: u64, crc: u64) -> Arc<AppendStream> {
        let mut streams = lock(&self.streams);
        streams
            .entry(ino)
            .or_insert_with(|| {
                AppendStream::start(
                    key,
                    position,
                    crc,
                    self.client.clone(),
                    self.stream_cfg.clone(),
                    self.budget.clone(),
                )
            })
            .clone()
    }

    pub async fn open(&self, ino: u64, mode: OpenMode) -> FsResult<u64> {
        let (_, kind) = self.node_info(ino)?;
        if kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let stream = if mode.write {
            self.writable()?;
            Some(self.stream_for(ino).await?)
        } else {
            None
        };
        self.bump_open(ino, 1);
        Ok(self.new_handle(HandleKind::File {
            ino,
            stream,
            mark: WriteMark::default(),
            read: ReadState {
                last_end: 0,
                window: 0,
            },
        }))
    }

    fn bump_open(&self, ino: u64, by: i64) {
        let mut nodes = lock(&self.nodes);
        if let Some(n) = nodes.by_ino.get_mut(&ino) {
            n.open_handles = n.open_handles.saturating_add_signed(by);
        }
    }

    /// Creates an empty Appendable object at once (so other hosts see it) and opens it.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        exclusive: bool,
        mode: OpenMode,
    ) -> FsResult<(Attr, u64)> {
        self.writable()?;
        let path = self.child_path(parent, name, Kind::File)?;
        match self
            .client
            .append_object(&path, 0, Bytes::new(), &self.stream_cfg.create)
            .await
        {
            Ok(out) => {
                let meta = FileMeta {
                    size: out.next_position,
                    mtime: SystemTime::now(),
                    object_type: ObjectType::Appendable,
                    etag: String::new(),
                    crc64: out.crc64,
                    storage_class: None,
                    user_meta: BTreeMap::new(),
                    from_head: false,
                };
                let attr = self.take_ref(&path, Kind::File, Some(meta));
                let parent_dir = self.dir_path(parent)?;
                lock(&self.nodes).invalidate_listing(&parent_dir);
                // A fresh stream: its position and CRC are known, so no HEAD.
                if let Some(old) = lock(&self.streams).remove(&attr.ino) {
                    old.stop_when_idle();
                }
                self.install_stream(attr.ino, path, out.next_position, out.crc64.unwrap_or(0));
                let fh = self.open(attr.ino, mode).await?;
                Ok((attr, fh))
            }
            Err(e)
                if matches!(
                    e.code(),
                    Some("PositionNotEqualToLength" | "ObjectNotAppendable")
                ) =>
            {
                if exclusive {
                    return Err(FsError::Exists);
                }
                let attr = self.lookup(parent, name).await?;
                match self.open(attr.ino, mode).await {
                    Ok(fh) => Ok((attr, fh)),
                    Err(e) => {
                        self.forget(attr.ino, 1);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let h = self.handle(fh)?;
        let (ino, window, sequential) = match &mut *lock(&h) {
            HandleKind::File { ino, read, .. } => {
                let sequential = offset == read.last_end && offset > 0;
                read.window = if sequential {
                    (read.window * 2).clamp(2, MAX_WINDOW)
                } else {
                    1
                };
                read.last_end = offset + size as u64;
                (*ino, read.window, sequential)
            }
            _ => return Err(FsError::BadHandle),
        };
        // The bytes past the confirmed length are read from the append stream by absolute
        // stream offset: the local byte at file offset `base + k` is at stream offset `p + k`,
        // with the `p` that `base` was computed from. (Reading the position again after the
        // GET below shifted them by whatever was confirmed meanwhile: `cat` on the mount of a
        // file being written saw later lines in place of earlier ones.) If the bytes were
        // confirmed meanwhile they are remote now, and the read is computed again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (path, generation, meta) = {
                let nodes = lock(&self.nodes);
                let n = nodes.by_ino.get(&ino).ok_or(FsError::Stale)?;
                (n.path.clone(), n.generation, n.meta.clone())
            };
            let remote = match meta {
                Some(m) => m.value.size,
                None => self.file_meta(ino, false).await?.size,
            };
            let stream = lock(&self.streams).get(&ino).cloned();
            // Bytes of this mount's own appends not yet confirmed start at the larger of the two
            // lengths (an idle stream adopts newer remote lengths).
            let (base, local, p) = match &stream {
                Some(s) => {
                    let (p, local) = s.local_span();
                    (remote.max(p), local, p)
                }
                None => (remote, 0, 0),
            };
            let want_end = offset + size as u64;
            let mut out = BytesMut::new();
            if offset < base {
                // Prefetch first, so the window's GETs run alongside this read's own.
                if sequential && window > 0 {
                    let next = want_end.min(base).div_ceil(BLOCK);
                    self.cache
                        .prefetch(&path, ino, generation, next, window, base);
                }
                let data = self
                    .cache
                    .read(&path, ino, generation, offset, size as u64, base)
                    .await?;
                let short = (data.len() as u64) < want_end.min(base) - offset;
                if short || want_end <= base || local == 0 {
                    return Ok(data); // all of it remote: no copy
                }
                out.extend_from_slice(&data);
            }
            if want_end > base && local > 0 {
                let from = offset.max(base);
                if let Some(s) = &stream {
                    match s.read_local(p + (from - base), want_end - from) {
                        Some(bytes) => out.extend_from_slice(&bytes),
                        // Confirmed meanwhile: now below the remote length.
                        None if attempt < 3 => continue,
                        // Still moving: a short read, never wrong bytes.
                        None => {}
                    }
                }
            }
            return Ok(out.freeze());
        }
    }

    pub async fn write(
        &self,
        fh: u64,
        offset: u64,
        data: Bytes,
        append_mode: bool,
    ) -> FsResult<u32> {
        let h = self.handle(fh)?;
        let stream = match &*lock(&h) {
            HandleKind::File {
                stream: Some(s), ..
            } => s.clone(),
            HandleKind::File { .. } => return Err(FsError::BadHandle),
            _ => return Err(FsError::IsDir),
        };
        let n = data.len() as u32;
        let end = stream.write_bytes(offset, data, append_mode).await?;
        if let HandleKind::File { mark, .. } = &mut *lock(&h) {
            mark.last_end = mark.last_end.max(end);
        }
        Ok(n)
    }

    /// close() and fsync(): returns once every byte written through this handle is on OSS.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        let (stream, mut mark) = match &*lock(&h) {
            HandleKind::File {
                stream: Some(s),
                mark,
                ..
            } => (s.clone(), *mark),
            _ => return Ok(()),
        };
        if mark.last_end <= mark.flushed {
            return Ok(());
        }
        let res = stream.flush(&mut mark).await;
        if let HandleKind::File { mark: m, .. } = &mut *lock(&h) {
            m.flushed = m.flushed.max(mark.flushed);
        }
        if let Err(e) = &res {
            tracing::error!(key = %stream.key(), error = %e, "flush failed: bytes written through this handle are not all on OSS");
        }
        res
    }

    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let res = self.flush(fh).await;
        let h = lock(&self.handles).remove(&fh);
        if let Some(h) = h {
            if let HandleKind::File { ino, .. } = &*lock(&h) {
                self.bump_open(*ino, -1);
            }
        }
        res
    }

    /// setattr: truncate to the current size is a no-op, truncate to 0 of an Appendable object
    /// replaces it with an empty one, other sizes and mode/owner changes are refused, times are
    /// accepted and not stored.
    pub async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        mode_or_owner: bool,
    ) -> FsResult<Attr> {
        if mode_or_owner {
            return Err(FsError::NotPermitted(
                "OSS objects have no mode or owner to change".into(),
            ));
        }
        let (path, kind) = self.node_info(ino)?;
        if let Some(size) = size {
            if kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            self.writable()?;
            let current = self.getattr(ino).await?.size;
            if size != current {
                if size != 0 {
                    tracing::warn!(key = %path, size, current, "refused truncate: only truncation to 0 (replace) is possible");
                    return Err(FsError::NotPermitted(format!(
                        "truncate {path:?} to {size}"
                    )));
                }
                let stream = self.stream_for(ino).await?;
                stream.replace_with_empty().await?;
                let meta = FileMeta {
                    size: 0,
                    mtime: SystemTime::now(),
                    object_type: ObjectType::Appendable,
                    etag: String::new(),
                    crc64: Some(0),
                    storage_class: None,
                    user_meta: BTreeMap::new(),
                    from_head: false,
                };
                let mut nodes = lock(&self.nodes);
                if let Some(n) = nodes.by_ino.get_mut(&ino) {
                    n.generation += 1;
                    n.meta = Some(Cached {
                        value: meta,
                        at: Instant::now(),
                    });
                }
            }
        }
        self.getattr(ino).await
    }

    /// `user.oss.*` attributes: object type, ETag, CRC-64, storage class, next append position
    /// and user metadata (`user.oss.meta.NAME`).
    pub async fn xattrs(&self, ino: u64) -> FsResult<Vec<(String, Vec<u8>)>> {
        let (_, kind) = self.node_info(ino)?;
        if kind == Kind::Dir {
            return Ok(Vec::new());
        }
        let m = self.file_meta(ino, true).await?;
        let mut out = vec![
            (
                "user.oss.object-type".to_string(),
                m.object_type.as_str().as_bytes().to_vec(),
            ),
            (
                "user.oss.etag".to_string(),
                m.etag.trim_matches('"').as_bytes().to_vec(),
            ),
        ];
        if let Some(c) = m.crc64 {
            out.push(("user.oss.crc64".into(), c.to_string().into_bytes()));
        }
        if let Some(c) = &m.storage_class {
            out.push(("user.oss.storage-class".into(), c.clone().into_bytes()));
        }
        if m.object_type == ObjectType::Appendable {
            out.push((
                "user.oss.next-append-position".into(),
                m.size.to_string().into_bytes(),
            ));
        }
        for (k, v) in &m.user_meta {
            out.push((format!("user.oss.meta.{k}"), v.clone().into_bytes()));
        }
        Ok(out)
    }

    /// Sends everything buffered on this mount (unmount, SIGTERM). Returns one line per byte
    /// range that could not be appended.
    pub async fn flush_all(&self) -> Vec<String> {
        let streams: Vec<Arc<AppendStream>> = lock(&self.streams).values().cloned().collect();
        let mut problems = Vec::new();
        for s in streams {
            for f in s.drain().await {
                problems.push(format!(
                    "{:?}: {} bytes (stream bytes {}..{}) were not appended: {}",
                    s.key(),
                    f.end_seq - f.first_seq,
                    f.first_seq,
                    f.end_seq,
                    f.error
                ));
            }
        }
        problems
    }
}
