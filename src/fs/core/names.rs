//! Names: lookup, getattr, mkdir, rmdir, unlink and rename, over the namespace's inode table
//! and its cached HEADs and remembered listings (listings and readdir: [`super::listing`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::listing::REMEMBER_MAX;
use super::{lock, Attr, Core};
use crate::client::CreateOptions;
use crate::fs::append::exactly_once;
use crate::fs::error::{FsError, FsResult};
use crate::fs::namespace::{parent_path, FileMeta, Kind};
use crate::fs::reader::BLOCK;
use crate::oss::ObjectType;

impl Core {
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
                        && l.value.len() <= REMEMBER_MAX
                        && l.value.get(name).is_some() =>
                {
                    (None, true)
                }
                _ => (None, false),
            }
        };
        let cached = match (cached, relist) {
            (None, true) => self.listing(parent).await?,
            (c, _) => c,
        };
        if let Some(l) = cached {
            return match l.get(name) {
                Some(None) => Ok(self.take_ref(&dir_path, Kind::Dir, None)),
                Some(Some(meta)) => Ok(self.take_ref(&file_path, Kind::File, Some(meta.clone()))),
                None => Err(FsError::NotFound),
            };
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
                // Pruned whenever it has doubled since the last pruning, so it holds about
                // what one TTL of misses leaves, not the bound.
                let pruned = nodes.negative.len() >= (nodes.negative_kept * 2).clamp(1024, 50_000);
                if pruned {
                    let ttl = self.cfg.metadata_ttl;
                    nodes.negative.retain(|_, t| t.elapsed() < ttl);
                    if nodes.negative.len() >= 50_000 {
                        nodes.negative.clear();
                    }
                    nodes.negative_kept = nodes.negative.len();
                }
                nodes.negative.insert(file_path.to_string(), Instant::now());
                drop(nodes);
                if pruned {
                    super::release_free_memory();
                }
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
