//! Names: lookup, getattr, readdir, mkdir, rmdir, unlink and rename, over the namespace's
//! inode table and its cached HEADs and listings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{lock, Attr, Core};
use crate::client::{ClientError, CreateOptions, ListEntry};
use crate::fs::append::exactly_once;
use crate::fs::error::{FsError, FsResult};
use crate::fs::namespace::{parent_path, valid_name, Cached, FileMeta, Kind, Listing, ROOT};
use crate::fs::reader::BLOCK;
use crate::fs::store::Store;
use crate::oss::ObjectType;

/// Entries in a directory whose listing is refreshed whole to answer lookups of its entries
/// (20 pages of ListObjectsV2).
const RELIST_MAX: usize = 20_000;

#[derive(Debug, Clone)]
pub struct DirEntry {
    /// 0 until the entry gets a node (most entries get one only when handed to the kernel).
    pub ino: u64,
    pub name: String,
    /// The key (files) or key prefix (directories).
    pub path: String,
    pub kind: Kind,
    /// What the listing said of a file.
    pub meta: Option<FileMeta>,
}

impl DirEntry {
    fn at(ino: u64, name: &str, kind: Kind) -> Self {
        DirEntry {
            ino,
            name: name.to_string(),
            path: String::new(),
            kind,
            meta: None,
        }
    }
}

/// Every entry under `prefix`, following continuation tokens.
async fn list_all(
    store: &dyn Store,
    prefix: &str,
    delimiter: Option<&str>,
) -> Result<(Vec<ListEntry>, Vec<String>), ClientError> {
    let mut entries = Vec::new();
    let mut prefixes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store
            .list_page(prefix, delimiter, token.as_deref(), 1000)
            .await?;
        entries.extend(page.contents);
        prefixes.extend(page.common_prefixes);
        match page.next_continuation_token {
            Some(t) if page.is_truncated => {
                if token.as_deref() == Some(t.as_str()) {
                    return Err(ClientError::InvalidResponse {
                        op: crate::client::Op::ListObjectsV2,
                        key: String::new(),
                        request_id: String::new(),
                        reason: format!("listing repeats continuation token {t:?}"),
                    });
                }
                token = Some(t);
            }
            _ => return Ok((entries, prefixes)),
        }
    }
}

impl Core {
    /// The listing of a directory, from the cache when younger than the metadata TTL, else
    /// from one listing shared by concurrent callers. Entries whose key is not under the
    /// directory (a broken server or gateway) are skipped with a warning.
    async fn listing(&self, dir_ino: u64) -> FsResult<Arc<Listing>> {
        let cached = |n: &crate::fs::namespace::Node| -> FsResult<Option<Arc<Listing>>> {
            if n.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            Ok(n.listing
                .as_ref()
                .filter(|l| l.at.elapsed() < self.cfg.metadata_ttl)
                .map(|l| l.value.clone()))
        };
        let lead = match self.cached_or_lead(dir_ino, cached).await? {
            Ok(hit) => return Ok(hit),
            Err(lead) => lead,
        };
        let path = lead.path.clone();
        // The stale listing goes now, not when the new one is stored: a large directory's two
        // listings are never held at once (lookups that wait for this one find the new one).
        if let Some(n) = lock(&self.nodes).by_ino.get_mut(&dir_ino) {
            n.listing = None;
        }
        let (entries, prefixes) = list_all(self.store.as_ref(), &path, Some("/"))
            .await
            .inspect_err(|e| {
                tracing::debug!(key = %path, errno = e.errno(), error = %e, "listing failed");
            })?;
        const BAD_NAME: &str =
            "its name cannot be a file name (empty, '.', '..' or over 255 bytes)";
        let mut listing = Listing::default();
        for p in prefixes {
            let Some(name) = p.strip_prefix(path.as_str()) else {
                self.warn_once(&p, "the listing returned it for another directory");
                continue;
            };
            let name = name.trim_end_matches('/');
            if valid_name(name) {
                listing.dirs.insert(name.to_string());
            } else {
                self.warn_once(&p, BAD_NAME);
            }
        }
        for e in entries {
            if e.key == path {
                continue; // the directory's own marker object
            }
            let Some(name) = e.key.strip_prefix(path.as_str()) else {
                self.warn_once(&e.key, "the listing returned it for another directory");
                continue;
            };
            if !valid_name(name) {
                self.warn_once(&e.key, BAD_NAME);
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
        // Files this mount is writing exist even before a listing shows them.
        let known_file = {
            let nodes = lock(&self.nodes);
            nodes
                .by_path
                .get(&file_path)
                .filter(|ino| lock(&self.streams).get(ino).is_some_and(|s| !s.is_gone()))
                .copied()
        };
        if let Some(ino) = known_file {
            let (ino, meta) = self.file_meta(ino, false).await?;
            return Ok(self.take_ref_ino(ino, &meta));
        }
        // A fresh listing of the parent answers without a request.
        let (cached, relist) = {
            let nodes = lock(&self.nodes);
            let n = nodes.by_ino.get(&parent).ok_or(FsError::Stale)?;
            match &n.listing {
                Some(l) if l.at.elapsed() < self.cfg.metadata_ttl => (Some(l.value.clone()), false),
                // `ls -l` of a large directory outlives the TTL while it stats entry after
                // entry: a recent listing that named the entry is refreshed once, shared by
                // every lookup, instead of a HEAD and a LIST per entry. Only for directories
                // of a few pages, so a single stat in a huge one stays two requests.
                Some(l)
                    if l.at.elapsed() < self.cfg.metadata_ttl * 10
                        && l.value.files.len() + l.value.dirs.len() <= RELIST_MAX
                        && (l.value.files.contains_key(name) || l.value.dirs.contains(name)) =>
                {
                    (None, true)
                }
                _ => (None, false),
            }
        };
        let cached = match (cached, relist) {
            (None, true) => Some(self.listing(parent).await?),
            (c, _) => c,
        };
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
        self.lookup_remote(&file_path).await
    }

    /// Looks `file_path` up on OSS, past every cache (a directory, common prefix or marker,
    /// wins over a file of the same name, as in listings).
    pub(super) async fn lookup_remote(&self, file_path: &str) -> FsResult<Attr> {
        let dir_path = format!("{file_path}/");
        let (dir, head) = tokio::join!(
            self.store.list_page(&dir_path, Some("/"), None, 1),
            self.store.head(file_path),
        );
        let dir = dir?;
        // Only entries really below the name make it a directory (a broken listing may
        // return others).
        let below = |k: &str| k.starts_with(dir_path.as_str());
        if dir.contents.iter().any(|e| below(&e.key))
            || dir.common_prefixes.iter().any(|p| below(p))
        {
            return Ok(self.take_ref(&dir_path, Kind::Dir, None));
        }
        match head {
            Ok(m) => {
                let meta = FileMeta::from_head(&m);
                Ok(self.take_ref(file_path, Kind::File, Some(meta)))
            }
            Err(e) if e.is_no_such_key() => {
                let mut nodes = lock(&self.nodes);
                // Bounded: PATH probes and editor swap files must not grow it without end.
                if nodes.negative.len() > 50_000 {
                    let ttl = self.cfg.metadata_ttl;
                    nodes.negative.retain(|_, t| t.elapsed() < ttl);
                    if nodes.negative.len() > 50_000 {
                        nodes.negative.clear();
                    }
                }
                nodes.negative.insert(file_path.to_string(), Instant::now());
                Err(FsError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn take_ref(&self, path: &str, kind: Kind, meta: Option<FileMeta>) -> Attr {
        let ino = {
            let mut nodes = lock(&self.nodes);
            nodes.get_or_insert(path, kind).ino
        };
        match meta {
            Some(m) => {
                let ino = self.store_meta(ino, m.clone());
                self.take_ref_ino(ino, &m)
            }
            None => {
                if let Some(n) = lock(&self.nodes).by_ino.get_mut(&ino) {
                    n.lookups += 1;
                }
                self.dir_attr(ino)
            }
        }
    }

    fn take_ref_ino(&self, ino: u64, meta: &FileMeta) -> Attr {
        if let Some(n) = lock(&self.nodes).by_ino.get_mut(&ino) {
            n.lookups += 1;
        }
        self.file_attr(ino, meta)
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
                let (now, meta) = self.file_meta(ino, false).await?;
                // Replaced: the old inode keeps its last attributes (its name now leads to
                // the new one, which is how `tail -F` notices).
                let meta = if now == ino {
                    meta
                } else {
                    meta_of(self, ino).unwrap_or(meta)
                };
                Ok(self.file_attr(ino, &meta))
            }
        }
    }

    /// The entries of a directory: `.` and `..`, then directories and files in name order
    /// with the attributes the listing gave, then files this mount is writing that the
    /// listing does not show yet. No node is made here: only entries handed to the kernel get
    /// one ([`Core::entry_ref`], [`Core::entry_ino`]), so memory follows what the kernel holds.
    pub async fn readdir_entries(&self, ino: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let path = self.dir_path(ino)?;
        let listing = self.listing(ino).await?;
        let (parent_ino, streams) = {
            let nodes = lock(&self.nodes);
            let parent = if ino == ROOT {
                ROOT
            } else {
                nodes
                    .by_path
                    .get(parent_path(&path))
                    .copied()
                    .unwrap_or(ROOT)
            };
            // Files this mount is writing may not be listed yet: shown while they have unsent
            // bytes or an open handle (an idle stream of a file deleted elsewhere is not).
            let streams = lock(&self.streams);
            let live: Vec<(String, u64)> = streams
                .iter()
                .filter_map(|(sino, s)| {
                    let key = s.key();
                    let name = key.strip_prefix(path.as_str())?;
                    let open = nodes
                        .by_ino
                        .get(sino)
                        .is_some_and(|n| !n.detached && (n.open_handles > 0 || !s.is_idle()));
                    (valid_name(name) && !listing.files.contains_key(name) && open && !s.is_gone())
                        .then(|| (name.to_string(), *sino))
                })
                .collect();
            (parent, live)
        };
        let mut out =
            Vec::with_capacity(2 + listing.dirs.len() + listing.files.len() + streams.len());
        out.push(DirEntry::at(ino, ".", Kind::Dir));
        out.push(DirEntry::at(parent_ino, "..", Kind::Dir));
        let mut dirs: Vec<&String> = listing.dirs.iter().collect();
        dirs.sort();
        out.extend(dirs.into_iter().map(|d| DirEntry {
            ino: 0,
            name: d.clone(),
            path: format!("{path}{d}/"),
            kind: Kind::Dir,
            meta: None,
        }));
        out.extend(listing.files.iter().map(|(name, meta)| DirEntry {
            ino: 0,
            name: name.clone(),
            path: format!("{path}{name}"),
            kind: Kind::File,
            meta: Some(meta.clone()),
        }));
        let mut streams = streams;
        streams.sort();
        out.extend(
            streams
                .into_iter()
                .map(|(name, sino)| DirEntry::at(sino, &name, Kind::File)),
        );
        Ok(Arc::new(out))
    }

    /// The inode of a directory entry for plain `readdir` (no kernel reference taken).
    pub fn entry_ino(&self, e: &DirEntry) -> u64 {
        if e.ino != 0 {
            return e.ino;
        }
        lock(&self.nodes).get_or_insert(&e.path, e.kind).ino
    }

    /// A directory entry handed to the kernel by `readdirplus`, which takes a lookup reference
    /// on it (not on `.` and `..`): the node is made or found, referenced, and given the
    /// listing's attributes when its own are stale (so `ls -l` costs no HEAD per file).
    pub fn entry_ref(&self, e: &DirEntry) -> Attr {
        let counted = e.name != "." && e.name != "..";
        let ino = if e.ino != 0 {
            e.ino
        } else {
            lock(&self.nodes).get_or_insert(&e.path, e.kind).ino
        };
        let ino = match (&e.meta, e.kind) {
            (Some(meta), Kind::File) => {
                let stale = lock(&self.nodes)
                    .by_ino
                    .get(&ino)
                    .is_none_or(|n| !self.fresh(&n.meta));
                if stale {
                    self.store_meta(ino, meta.clone())
                } else {
                    ino
                }
            }
            _ => ino,
        };
        let mut nodes = lock(&self.nodes);
        let Some(n) = nodes.by_ino.get_mut(&ino) else {
            drop(nodes);
            return self.dir_attr(ino);
        };
        if counted {
            n.lookups += 1;
        }
        let (kind, meta) = (n.kind, n.meta.as_ref().map(|m| m.value.clone()));
        drop(nodes);
        match (kind, meta.or_else(|| e.meta.clone())) {
            (Kind::File, Some(m)) => self.file_attr(ino, &m),
            _ => self.dir_attr(ino),
        }
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.dir_path(ino)?;
        Ok(self.new_handle(super::HandleKind::Dir { ino, entries: None }))
    }

    /// Entries from `offset` on; the listing is taken once per open directory handle.
    pub async fn readdir(&self, fh: u64, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let h = self.handle(fh)?;
        let (ino, have) = match &*lock(&h) {
            super::HandleKind::Dir { ino, entries } => (*ino, entries.clone()),
            _ => return Err(FsError::BadHandle),
        };
        if let (Some(e), true) = (&have, offset > 0) {
            return Ok(e.clone());
        }
        let entries = self.readdir_entries(ino).await?;
        if let super::HandleKind::Dir { entries: slot, .. } = &mut *lock(&h) {
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
            ..self.shared.config.create.clone()
        };
        self.store.put(&path, Bytes::new(), &opts).await?;
        let parent_dir = self.dir_path(parent)?;
        lock(&self.nodes).invalidate_listing(&parent_dir);
        Ok(self.take_ref(&path, Kind::Dir, None))
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let path = self.child_path(parent, name, Kind::Dir)?;
        let page = self.store.list_page(&path, None, None, 2).await?;
        if page.contents.iter().any(|e| e.key != path) {
            return Err(FsError::NotEmpty);
        }
        if page.contents.is_empty() {
            // No marker and nothing below: only a file of that name, or nothing.
            let head = self.store.head(path.trim_end_matches('/')).await;
            return Err(if head.is_ok() {
                FsError::NotDir
            } else {
                FsError::NotFound
            });
        }
        self.store.delete(&path).await?;
        let parent_dir = self.dir_path(parent)?;
        let mut nodes = lock(&self.nodes);
        nodes.detach(&path);
        nodes.invalidate_listing(&parent_dir);
        Ok(())
    }

    /// The stream of the file at `path`, if this mount has one.
    fn stream_at(&self, path: &str) -> Option<Arc<crate::fs::append::AppendStream>> {
        let ino = *lock(&self.nodes).by_path.get(path)?;
        lock(&self.streams).get(&ino).cloned()
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let path = self.child_path(parent, name, Kind::File)?;
        let is_dir = self
            .store
            .list_page(&format!("{path}/"), None, None, 1)
            .await?;
        if !is_dir.contents.is_empty() {
            return Err(FsError::IsDir);
        }
        let stream = self.stream_at(&path);
        match self.store.head(&path).await {
            Ok(_) => {}
            Err(e) if e.is_no_such_key() => {
                // Created here and not yet visible? Then there is nothing on OSS either.
                if stream.is_none() {
                    return Err(FsError::NotFound);
                }
            }
            Err(e) => return Err(e.into()),
        }
        // No chunk may be in flight while the object goes, or it would bring it back.
        let paused = match &stream {
            Some(s) => Some(s.pause().await),
            None => None,
        };
        self.store.delete(&path).await?;
        if let Some(s) = &stream {
            s.mark_deleted();
        }
        drop(paused);
        self.detach_file(&path);
        let parent_dir = self.dir_path(parent)?;
        let mut nodes = lock(&self.nodes);
        nodes.invalidate_listing(&parent_dir);
        nodes.negative.insert(path, Instant::now());
        Ok(())
    }

    /// Unmaps a deleted file; its stream (if any) ends with its handles getting ESTALE.
    pub(super) fn detach_file(&self, path: &str) {
        let ino = lock(&self.nodes).detach(path);
        if let Some(ino) = ino {
            if let Some(s) = lock(&self.streams).remove(&ino) {
                s.mark_deleted();
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
        let meta = self.store.head(&src).await?;
        let copied = match meta.object_type {
            Some(ObjectType::Appendable) => self.copy_appendable(&src, &dst, &meta).await,
            _ => self
                .store
                .copy(&src, &dst)
                .await
                .map(|_| ())
                .map_err(FsError::from),
        };
        if let Err(e) = copied {
            tracing::debug!(from = %src, to = %dst, errno = e.errno(), error = %e, "rename failed; the source is unchanged");
            return Err(e);
        }
        self.store.delete(&src).await?;
        if let Some(s) = &stream {
            s.rekey(dst.clone());
        }
        drop(paused);
        // The inode follows its object; whatever was at the destination is gone.
        self.detach_file(&dst);
        {
            let mut nodes = lock(&self.nodes);
            nodes.rename(src_attr.ino, &dst);
            // The cached attributes describe the source as it was before its stream's appends:
            // forget them, the next getattr asks HEAD of the new key.
            if let Some(n) = nodes.by_ino.get_mut(&src_attr.ino) {
                n.meta = None;
            }
            nodes.invalidate_listing(parent_path(&src));
            nodes.invalidate_listing(parent_path(&dst));
            nodes.negative.insert(src.clone(), Instant::now());
        }
        Ok(())
    }

    /// Copies an Appendable object by re-appending its bytes to a fresh `dst`, each chunk
    /// exactly once, so the copy stays appendable; its final CRC must equal the source's. A
    /// copy that fails is removed (and logged), leaving the source as it was.
    async fn copy_appendable(
        &self,
        src: &str,
        dst: &str,
        meta: &crate::oss::ObjectMeta,
    ) -> FsResult<()> {
        let result = self.copy_appendable_inner(src, dst, meta).await;
        if result.is_err() {
            match self.store.delete(dst).await {
                Ok(()) => tracing::warn!(key = %dst, "removed the partial copy of a failed rename"),
                Err(e) => {
                    tracing::error!(key = %dst, error = %e, "a failed rename left a partial copy that could not be removed")
                }
            }
        }
        result
    }

    async fn copy_appendable_inner(
        &self,
        src: &str,
        dst: &str,
        meta: &crate::oss::ObjectMeta,
    ) -> FsResult<()> {
        let mut size = meta.next_append_position.unwrap_or(meta.size);
        let mut expected = meta.crc64;
        // The copy keeps the source's user metadata, with the mode, owner and times kept on
        // the source's inode (rsync's chmod/utimens on its temp file) written over it.
        let mut create = self.shared.config.create.clone();
        create.user_meta = meta.user_meta.clone();
        let pending = {
            let nodes = lock(&self.nodes);
            nodes
                .by_path
                .get(src)
                .and_then(|ino| nodes.by_ino.get(ino))
                .map(|n| n.pending)
        };
        if let Some(p) = pending {
            p.write_to(&mut create.user_meta);
        }
        self.store.delete(dst).await?;
        let chunk = self.shared.config.chunk_size.max(BLOCK);
        let (mut pos, mut crc) = (0u64, 0u64);
        let deadline = Instant::now() + self.shared.config.give_up_after;
        let mut cancel = self.shared.cancel.clone();
        // Another host may append to the source while it is copied: copy until a last look
        // finds nothing new, which narrows (OSS offers no atomic rename) the window in which
        // its bytes would go with the deleted source.
        for round in 0.. {
            loop {
                let data = if pos < size {
                    let last = (pos + chunk).min(size) - 1;
                    let d = self.store.get_range(src, pos, last).await?.data;
                    if d.len() as u64 != last - pos + 1 {
                        return Err(FsError::Io(format!("{src:?} changed while being renamed")));
                    }
                    d
                } else {
                    Bytes::new()
                };
                let landed = exactly_once::append(
                    exactly_once::Job {
                        store: self.store.as_ref(),
                        key: dst,
                        create: &create,
                        position: pos,
                        crc,
                        data: &data,
                        follow_end: false,
                        deadline,
                    },
                    &mut cancel,
                )
                .await
                .map_err(|f| f.error)?;
                pos = landed.position;
                crc = landed.crc;
                if pos >= size {
                    break;
                }
            }
            if let Some(e) = expected {
                if crc != e {
                    return Err(FsError::Io(format!(
                        "copy of {src:?} has CRC-64 {crc}, the source {e}: source replaced during rename"
                    )));
                }
            }
            let now = self.store.head(src).await?;
            let len = now.next_append_position.unwrap_or(now.size);
            if len == size {
                return Ok(());
            }
            if round >= 8 {
                // Deleting now would take the newest bytes with the source: not renamed.
                return Err(FsError::Io(format!(
                    "{src:?} kept growing while being renamed; not renamed"
                )));
            }
            if len < size || now.object_type != Some(crate::oss::ObjectType::Appendable) {
                return Err(FsError::Io(format!("{src:?} was replaced during rename")));
            }
            size = len;
            expected = now.crc64;
        }
        Ok(())
    }
}

/// The metadata kept for `ino`, if any.
fn meta_of(core: &Core, ino: u64) -> Option<FileMeta> {
    lock(&core.nodes)
        .by_ino
        .get(&ino)
        .and_then(|n| n.meta.as_ref().map(|m| m.value.clone()))
}
