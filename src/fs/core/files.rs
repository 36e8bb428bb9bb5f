//! Files: open, create, read, write, flush, release, setattr and the `user.oss.*` attributes.
//! Writes go to the object's append stream; reads come from the block cache (and, for bytes
//! this mount wrote and has not yet confirmed, from the stream).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::{lock, Attr, Core, HandleKind, OpenMode, ReadState};
use crate::fs::append::{exactly_once, AppendStream, WriteMark};
use crate::fs::error::{FsError, FsResult};
use crate::fs::namespace::{Cached, FileMeta, Kind, PosixMeta};
use crate::fs::reader::{BlockCache, Incarnation, BLOCK, RUN_BLOCKS};
use crate::oss::meta::storage_class_appendable;
use crate::oss::{crc64, ObjectType};

impl Core {
    /// The append stream of `ino`, started from a HEAD when this mount has none (or only one
    /// whose object is gone). Refuses objects that cannot be appended to.
    async fn stream_for(&self, ino: u64) -> FsResult<Arc<AppendStream>> {
        if let Some(s) = lock(&self.streams).get(&ino) {
            if !s.is_gone() {
                return Ok(s.clone());
            }
        }
        let (now, meta) = self.file_meta(ino, true).await?;
        if now != ino {
            return Err(FsError::Stale);
        }
        let (path, _) = self.node_info(ino)?;
        if meta.object_type != ObjectType::Appendable {
            tracing::info!(key = %path, object_type = meta.object_type.as_str(), errno = "EPERM", "refusing to write: only Appendable objects can be written; this one was created by PutObject, multipart upload or as a symlink");
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
            tracing::info!(key = %path, storage_class = class, errno = "EPERM", "refusing to write: this storage class cannot be appended to");
            return Err(FsError::NotPermitted(format!(
                "{path:?} has storage class {class}"
            )));
        }
        Ok(self.install_stream(ino, path, meta.size, meta.crc64.unwrap_or(0)))
    }

    /// The stream of `ino`, or a new one at (`position`, `crc`) when there is none alive.
    fn install_stream(&self, ino: u64, key: String, position: u64, crc: u64) -> Arc<AppendStream> {
        let mut streams = lock(&self.streams);
        if let Some(s) = streams.get(&ino) {
            if !s.is_gone() {
                return s.clone();
            }
        }
        let s = AppendStream::start(key, position, crc, self.shared.clone());
        streams.insert(ino, s.clone());
        s
    }

    pub async fn open(&self, ino: u64, mode: OpenMode) -> FsResult<u64> {
        let (_, kind) = self.node_info(ino)?;
        if kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let stream = if mode.write {
            self.writable()?;
            let s = self.stream_for(ino).await?;
            s.check_open().inspect_err(|e| {
                tracing::debug!(key = %s.key(), errno = e.errno(), error = %e, "open for writing refused");
            })?;
            Some(s)
        } else {
            None
        };
        self.bump_open(ino, 1);
        Ok(self.new_handle(HandleKind::File {
            ino,
            stream,
            mark: WriteMark::default(),
            read: ReadState::default(),
        }))
    }

    fn bump_open(&self, ino: u64, by: i64) {
        let mut nodes = lock(&self.nodes);
        if let Some(n) = nodes.by_ino.get_mut(&ino) {
            n.open_handles = n.open_handles.saturating_add_signed(by);
        }
    }

    /// Creates an empty Appendable object at once (so other hosts see it) and opens it. The
    /// create is a zero-length append at 0 made exactly once: an unclear outcome is settled by
    /// HEAD. When the name already holds an object (a 409), it is looked up on OSS, past every
    /// cache, and opened (or `EEXIST` with `O_EXCL`). `O_EXCL` is decided by a HEAD first,
    /// since the append also succeeds on an existing empty object; two hosts creating the
    /// same name at the same instant can both succeed (OSS offers no create-if-absent for
    /// appendable objects).
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        exclusive: bool,
        mode: OpenMode,
    ) -> FsResult<(Attr, u64)> {
        self.writable()?;
        let path = self.child_path(parent, name, Kind::File)?;
        if exclusive {
            match self.store.head(&path).await {
                Ok(_) => return Err(FsError::Exists),
                Err(e) if e.is_no_such_key() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let empty = Bytes::new();
        let mut cancel = self.shared.cancel.clone();
        let landed = exactly_once::append(
            exactly_once::Job {
                store: self.store.as_ref(),
                key: &path,
                create: &self.shared.config.create,
                position: 0,
                crc: 0,
                data: &empty,
                follow_end: true,
                // The caller waits: the normal request budget, not the streams' long one.
                deadline: Instant::now()
                    + self
                        .cfg
                        .metadata_ttl
                        .max(std::time::Duration::from_secs(30)),
            },
            &mut cancel,
        )
        .await;
        let existing = match landed {
            Ok(l) if l.at == 0 && l.position == 0 => false,
            Ok(_)
            | Err(exactly_once::Failed {
                error: FsError::NotPermitted(_),
                ..
            }) => true,
            Err(f) => {
                tracing::debug!(key = %path, errno = f.error.errno(), error = %f.error, "create failed");
                return Err(f.error);
            }
        };
        {
            let parent_dir = self.dir_path(parent)?;
            lock(&self.nodes).invalidate_listing(&parent_dir);
        }
        let attr = if existing {
            if exclusive {
                return Err(FsError::Exists);
            }
            self.lookup_remote(&path).await?
        } else {
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
            let attr = self.take_ref(&path, Kind::File, Some(meta));
            if exclusive {
                if let Some(n) = lock(&self.nodes).by_ino.get_mut(&attr.ino) {
                    n.created_exclusive = true;
                }
            }
            // A fresh stream: its position and CRC are known, so no HEAD.
            self.install_stream(attr.ino, path.clone(), 0, 0);
            attr
        };
        match self.open(attr.ino, mode).await {
            Ok(fh) => Ok((attr, fh)),
            Err(e) => {
                self.forget(attr.ino, 1);
                Err(e)
            }
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let h = self.handle(fh)?;
        let (ino, access) = match &mut *lock(&h) {
            HandleKind::File { ino, read, .. } => (*ino, read.on_read(offset, size as u64)),
            _ => return Err(FsError::BadHandle),
        };
        let data = self.read_at(&h, ino, access, offset, size).await?;
        if let HandleKind::File { read, .. } = &mut *lock(&h) {
            // A short read (the end of the object): the next sequential read starts where
            // this one's bytes ended (`tail -f`).
            read.ended(offset + size as u64, offset + data.len() as u64);
        }
        Ok(data)
    }

    async fn read_at(
        &self,
        h: &Arc<std::sync::Mutex<HandleKind>>,
        ino: u64,
        access: Access,
        offset: u64,
        size: u32,
    ) -> FsResult<Bytes> {
        // The bytes past the confirmed length are read from the append stream by absolute
        // stream offset: the local byte at file offset `base + k` is at stream offset `p + k`,
        // with the `p` that `base` was computed from. If the bytes were confirmed meanwhile
        // they are remote now, and the read is computed again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (path, generation, meta, replaced, verified) = {
                let nodes = lock(&self.nodes);
                let n = nodes.by_ino.get(&ino).ok_or(FsError::Stale)?;
                (
                    n.path.clone(),
                    n.generation,
                    n.meta.clone(),
                    n.replaced,
                    n.verified,
                )
            };
            if replaced {
                return Err(FsError::Stale);
            }
            let remote = match meta {
                Some(m) => m.value.size,
                None => self.file_meta(ino, false).await?.1.size,
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
                let obj = Incarnation {
                    key: &path,
                    ino,
                    generation,
                    verified,
                };
                let fetched = match access {
                    Access::Random => self.cache.read_small(&obj, offset, size as u64, base).await,
                    Access::Sequential => {
                        // Prefetch first, so the window's GETs run alongside this read's own.
                        if let HandleKind::File { read, .. } = &mut *lock(h) {
                            read.prefetch(&self.cache, &obj, want_end.min(base), base);
                        }
                        self.cache.read(&obj, offset, size as u64, base).await
                    }
                };
                let data = fetched.inspect_err(|e| {
                    if matches!(e, FsError::Stale) {
                        self.mark_replaced(ino);
                    }
                })?;
                let expected = want_end.min(base) - offset;
                if (data.len() as u64) < expected {
                    return self.short_read(ino, &path, offset, data, base).await;
                }
                // Found replaced while this read was fetching: its bytes may be the new
                // object's, at offsets the kernel believes are the old one's.
                if lock(&self.nodes)
                    .by_ino
                    .get(&ino)
                    .is_none_or(|n| n.replaced)
                {
                    return Err(FsError::Stale);
                }
                if offset + data.len() as u64 == base {
                    self.verify_growth(ino, offset, &data, base)?;
                }
                if want_end <= base || local == 0 {
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

    /// A GET gave fewer bytes than the known size promised: the size is stale. HEAD decides:
    /// a replaced object fails the read with ESTALE (its name has a new inode now); an object
    /// that really is this short gets its new size (the kernel is told from another task) and
    /// the real bytes; a server whose HEAD still promises more than its GET gives is not
    /// believed: EIO. Never zeros.
    async fn short_read(
        &self,
        ino: u64,
        path: &str,
        offset: u64,
        data: Bytes,
        believed: u64,
    ) -> FsResult<Bytes> {
        if let Some(n) = lock(&self.nodes).by_ino.get_mut(&ino) {
            if n.replaced {
                return Err(FsError::Stale);
            }
            n.meta = None;
        }
        let (now, meta) = self.file_meta(ino, true).await?;
        self.invalidate(ino);
        let replaced = lock(&self.nodes)
            .by_ino
            .get(&ino)
            .is_none_or(|n| n.replaced);
        if now != ino || replaced {
            return Err(FsError::Stale);
        }
        let got_end = offset + data.len() as u64;
        if meta.size > got_end {
            tracing::warn!(
                key = path,
                offset,
                bytes = data.len(),
                size = meta.size,
                believed,
                errno = "EIO",
                "GET returned fewer bytes than HEAD says the object holds: not serving a guess"
            );
            return Err(FsError::Io(format!(
                "{path:?}: GET at {offset} returned {} bytes, HEAD says {} bytes",
                data.len(),
                meta.size
            )));
        }
        Ok(data)
    }

    /// The block cache found the object replaced (new bytes that do not extend the verified
    /// prefix): the name gets a new inode, as [`Core::verify_growth`] does.
    fn mark_replaced(&self, ino: u64) {
        let new = lock(&self.nodes).replace(ino);
        if let Some(new) = new {
            tracing::info!(old_ino = ino, new_ino = new, "object replaced behind the mount (its new bytes do not extend the old ones): the name gets a new inode");
            self.move_stream(ino, new);
        }
        self.invalidate(ino);
    }

    /// `data` ends at `end`, the object's known length: if it covers bytes past the verified
    /// prefix, the prefix's CRC combined with theirs must equal the CRC HEAD reported for
    /// `end`, or the object was replaced (and regrown) behind the mount.
    fn verify_growth(&self, ino: u64, offset: u64, data: &Bytes, end: u64) -> FsResult<()> {
        let mut nodes = lock(&self.nodes);
        let Some(n) = nodes.by_ino.get_mut(&ino) else {
            return Ok(());
        };
        let (Some((vlen, vcrc)), Some(m)) = (n.verified, n.meta.as_ref()) else {
            return Ok(());
        };
        let Some(head_crc) = m.value.crc64.filter(|_| m.value.size == end) else {
            return Ok(());
        };
        if vlen >= end || vlen < offset {
            return Ok(());
        }
        let tail = &data[(vlen - offset) as usize..];
        let combined = crc64::combine(vcrc, crc64::checksum(tail), tail.len() as u64);
        if combined == head_crc {
            n.verified = Some((end, head_crc));
            return Ok(());
        }
        let path = n.path.clone();
        let new = nodes.replace(ino);
        drop(nodes);
        tracing::info!(key = %path, old_ino = ino, new_ino = ?new, verified = vlen, size = end, "object replaced behind the mount (its new bytes do not extend the old ones): the name gets a new inode");
        if let Some(new) = new {
            self.move_stream(ino, new);
        }
        self.invalidate(ino);
        Err(FsError::Stale)
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
        let end = stream
            .write_bytes(fh, offset, data, append_mode)
            .await
            .inspect_err(|e| {
                if matches!(e, FsError::Hole(_) | FsError::ShuttingDown | FsError::Stale) {
                    tracing::debug!(key = %stream.key(), errno = e.errno(), error = %e, "write refused");
                }
            })?;
        if let HandleKind::File { mark, .. } = &mut *lock(&h) {
            mark.last_end = mark.last_end.max(end);
        }
        // Under a shared --max-memory, cached blocks give way to the bytes just buffered.
        self.cache.trim();
        Ok(n)
    }

    /// close() and fsync(): returns once every byte written through this handle is on OSS,
    /// and reports failures of those bytes only.
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
        let res = stream.flush(fh, &mut mark).await;
        if let HandleKind::File { mark: m, .. } = &mut *lock(&h) {
            m.flushed = m.flushed.max(mark.flushed);
        }
        if let Err(e) = &res {
            tracing::debug!(key = %stream.key(), errno = e.errno(), error = %e, "flush failed: bytes written through this handle are not all on OSS");
        }
        res
    }

    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let res = self.flush(fh).await;
        let h = lock(&self.handles).remove(&fh);
        if let Some(h) = h {
            if let HandleKind::File { ino, stream, .. } = &*lock(&h) {
                self.bump_open(*ino, -1);
                if let Some(s) = stream {
                    s.forget_writer(fh);
                }
            }
        }
        res
    }

    /// setattr: truncate to the current size is a no-op, truncate to 0 of an Appendable object
    /// replaces it with an empty one, other sizes are refused; mode, owner and mtime changes
    /// follow [`Core::set_posix`].
    pub async fn setattr(&self, ino: u64, size: Option<u64>, posix: PosixMeta) -> FsResult<Attr> {
        let (path, kind) = self.node_info(ino)?;
        if let Some(size) = size {
            if kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            self.writable()?;
            let current = self.getattr(ino).await?.size;
            if size != current {
                if size != 0 {
                    tracing::info!(key = %path, size, current, errno = "EPERM", "refused truncate: only truncation to 0 (replace) is possible");
                    return Err(FsError::NotPermitted(format!(
                        "truncate {path:?} to {size}"
                    )));
                }
                let stream = self.stream_for(ino).await?;
                // The replacement is created with the mount's settings only: the old object's
                // user metadata (mode, owner, times) is written back below.
                let (_, before) = self.file_meta(ino, true).await?;
                stream.replace_with_empty().await?;
                // Empty, unless another host appended to the new object already.
                let (len, crc) = stream.remote();
                let meta = FileMeta {
                    size: len,
                    mtime: SystemTime::now(),
                    object_type: ObjectType::Appendable,
                    etag: String::new(),
                    crc64: Some(crc),
                    storage_class: None,
                    user_meta: BTreeMap::new(),
                    from_head: false,
                };
                let pending = {
                    let mut nodes = lock(&self.nodes);
                    match nodes.by_ino.get_mut(&ino) {
                        Some(n) => {
                            n.generation += 1;
                            n.verified = Some((len, crc));
                            n.meta = Some(Cached {
                                value: meta,
                                at: Instant::now(),
                            });
                            n.pending
                        }
                        None => PosixMeta::default(),
                    }
                };
                let mut keep = before.user_meta;
                pending.write_to(&mut keep);
                if !keep.is_empty() {
                    let _paused = stream.pause().await;
                    match self.head_if_empty(&path, Some(&stream)).await? {
                        Ok(_) => self.recreate_empty(ino, &path, keep).await?,
                        Err(_) => {
                            tracing::warn!(key = %path, "truncated, but its mode, owner and times could not be written back: the file was written meanwhile");
                        }
                    }
                }
            }
        }
        if !posix.is_empty() {
            self.set_posix(ino, &path, kind, posix).await?;
        }
        self.getattr(ino).await
    }

    /// chmod, chown and utimens, stored the ossfs way in `x-oss-meta-*`. A value equal to the
    /// one shown is no change (no request). Otherwise, for an Appendable object:
    /// - empty (just created by logrotate, nginx, `cp`): recreated empty carrying the values;
    /// - not empty, created by this mount with `O_EXCL` (a temp file, as rsync makes, about
    ///   to be renamed into place): kept on the inode and written when a rename copies the
    ///   object;
    /// - not empty otherwise: `EPERM`, since OSS cannot change an appendable object's
    ///   metadata in place and nothing is known to carry the change.
    ///
    /// Other objects (Normal, Multipart, Symlink): `EPERM`. Directories: times accepted and
    /// not kept, mode and owner `EPERM`.
    async fn set_posix(&self, ino: u64, path: &str, kind: Kind, want: PosixMeta) -> FsResult<()> {
        let shown = self.getattr(ino).await?;
        let change = PosixMeta {
            mode: want.mode.filter(|m| *m != shown.mode),
            uid: want.uid.filter(|u| *u != shown.uid),
            gid: want.gid.filter(|g| *g != shown.gid),
            mtime: want.mtime.filter(|t| *t != shown.mtime),
        };
        if change.is_empty() {
            return Ok(());
        }
        if kind == Kind::Dir {
            // A directory may be only a key prefix: nothing to store on. Its time is accepted
            // and dropped (`rsync -a` and `tar` set it last); a mode or owner change is
            // refused, since a protection that silently does not happen is worse.
            if change.mode.is_none() && change.uid.is_none() && change.gid.is_none() {
                return Ok(());
            }
            tracing::info!(key = %path, errno = "EPERM", "refusing to change a directory's mode or owner: directories always show the mount's --dir-mode, --uid and --gid");
            return Err(FsError::NotPermitted(format!("{path:?} is a directory")));
        }
        self.writable()?;
        // Paused: no chunk of this inode's stream is sent while the object is judged and
        // perhaps recreated.
        let stream = lock(&self.streams).get(&ino).cloned();
        let _paused = match &stream {
            Some(s) => Some(s.pause().await),
            None => None,
        };
        let head_meta = match self.head_if_empty(path, stream.as_deref()).await? {
            Ok(empty) => empty,
            Err(head_meta) if head_meta.object_type != ObjectType::Appendable => {
                tracing::info!(key = %path, object_type = head_meta.object_type.as_str(), errno = "EPERM", "refusing to change mode, owner or times: only Appendable objects take such changes (this one would need a CopyObject onto itself)");
                return Err(FsError::NotPermitted(format!(
                    "{path:?} is a {} object",
                    head_meta.object_type.as_str()
                )));
            }
            Err(head_meta) => {
                let mut nodes = lock(&self.nodes);
                let n = nodes.by_ino.get_mut(&ino).ok_or(FsError::Stale)?;
                if !n.created_exclusive {
                    tracing::info!(key = %path, size = head_meta.size, errno = "EPERM", "refusing to change mode, owner or times of a non-empty appendable object: OSS cannot rewrite its metadata in place; only temp files this mount created (O_EXCL) keep such a change until a rename copies them");
                    return Err(FsError::NotPermitted(format!(
                        "{path:?} is a non-empty appendable object"
                    )));
                }
                n.pending = n.pending.overlay(change);
                tracing::debug!(key = %path, "mode, owner or times kept on the inode until a rename copies the object (lost at unmount if none does)");
                return Ok(());
            }
        };
        let pending = lock(&self.nodes)
            .by_ino
            .get(&ino)
            .map(|n| n.pending)
            .unwrap_or_default();
        // The object's other user metadata is kept.
        let mut user_meta = head_meta.user_meta;
        pending.overlay(change).write_to(&mut user_meta);
        self.recreate_empty(ino, path, user_meta).await
    }

    /// HEAD of `path` (not the cached one: the object may be deleted next), judged with the
    /// inode's stream (paused by the caller): `Ok` when it is an empty Appendable object with
    /// nothing buffered here, else `Err` with what HEAD said (size including local bytes).
    async fn head_if_empty(
        &self,
        path: &str,
        stream: Option<&AppendStream>,
    ) -> FsResult<Result<FileMeta, FileMeta>> {
        let head = match self.store.head(path).await {
            Ok(h) => h,
            Err(e) if e.is_no_such_key() => return Err(FsError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let mut meta = FileMeta::from_head(&head);
        let (position, local) = stream.map_or((0, 0), |s| s.local_span());
        meta.size = meta.size.max(position) + local;
        Ok(
            if meta.object_type == ObjectType::Appendable && meta.size == 0 {
                Ok(meta)
            } else {
                Err(meta)
            },
        )
    }

    /// Deletes the empty Appendable object at `path` and creates it again, empty, carrying
    /// `user_meta` (how an appendable object takes new metadata). The caller holds the
    /// stream's pause and has checked the object is empty ([`Core::head_if_empty`]); the
    /// inode stays the same.
    async fn recreate_empty(
        &self,
        ino: u64,
        path: &str,
        user_meta: BTreeMap<String, String>,
    ) -> FsResult<()> {
        let mut opts = self.shared.config.create.clone();
        opts.user_meta = user_meta;
        self.store.delete(path).await?;
        let empty = Bytes::new();
        let mut cancel = self.shared.cancel.clone();
        let landed = exactly_once::append(
            exactly_once::Job {
                store: self.store.as_ref(),
                key: path,
                create: &opts,
                position: 0,
                crc: 0,
                data: &empty,
                follow_end: false,
                deadline: Instant::now()
                    + self
                        .cfg
                        .metadata_ttl
                        .max(std::time::Duration::from_secs(30)),
            },
            &mut cancel,
        )
        .await;
        if let Err(f) = landed {
            tracing::error!(key = %path, errno = f.error.errno(), error = %f.error, "recreating an empty object with new mode, owner or times failed after deleting it: the file is gone");
            return Err(f.error);
        }
        let meta = FileMeta {
            size: 0,
            mtime: SystemTime::now(),
            object_type: ObjectType::Appendable,
            etag: String::new(),
            crc64: Some(0),
            storage_class: opts.storage_class.clone(),
            user_meta: opts.user_meta.clone(),
            from_head: false,
        };
        let mut nodes = lock(&self.nodes);
        if let Some(n) = nodes.by_ino.get_mut(&ino) {
            n.generation += 1;
            n.verified = Some((0, 0));
            n.pending = PosixMeta::default();
            n.seen = Some(PosixMeta::from_user_meta(&opts.user_meta));
            n.meta = Some(Cached {
                value: meta,
                at: Instant::now(),
            });
        }
        Ok(())
    }

    /// `user.oss.*` attributes: object type, ETag, CRC-64, storage class, next append position
    /// and user metadata (`user.oss.meta.NAME`).
    pub async fn xattrs(&self, ino: u64) -> FsResult<Vec<(String, Vec<u8>)>> {
        let (_, kind) = self.node_info(ino)?;
        if kind == Kind::Dir {
            return Ok(Vec::new());
        }
        let (_, m) = self.file_meta(ino, true).await?;
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
}

/// How a read is served, by what the handle read before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Continues the handle's previous reads, or is the handle's first read near the start
    /// of the object (most files are read from the start to the end): whole blocks, and the
    /// prefetch window.
    Sequential,
    /// Anywhere else: only the pieces the read touches.
    Random,
}

/// Reads the kernel sends out of order (several readahead requests in flight) stay in a
/// sequential streak when they start this close to where the streak is; a handle's first
/// read starts one when it starts this close to the object's start.
const REORDER_SLACK: u64 = 8 * BLOCK;

impl ReadState {
    fn on_read(&mut self, offset: u64, len: u64) -> Access {
        let end = offset + len;
        let near = |at: u64| offset + REORDER_SLACK >= at && offset <= at + REORDER_SLACK;
        let fresh = self.last_end == 0 && self.streak == 0;
        let access = if offset == self.last_end
            || (fresh && near(0))
            || (self.streak > 0 && near(self.last_end))
        {
            Access::Sequential
        } else {
            Access::Random
        };
        match access {
            Access::Sequential => {
                if self.streak == 0 {
                    self.request = BLOCK;
                }
                self.streak += len;
                self.last_end = self.last_end.max(end);
            }
            Access::Random => {
                *self = ReadState {
                    last_end: end,
                    ..ReadState::default()
                };
            }
        }
        access
    }

    /// A read asked to end at `asked` got bytes up to `got` only.
    fn ended(&mut self, asked: u64, got: u64) {
        if got < asked && self.last_end == asked {
            self.last_end = got;
        }
    }

    /// Starts the prefetch requests that keep the window ahead of a sequential reader whose
    /// read ends at `end`, once the streak has read half a block: the window is four times
    /// what the streak has read (at least a block, at most [`BlockCache::max_window`]);
    /// requests go out back to back from where the last one ended, each twice the previous
    /// one up to [`RUN_BLOCKS`] blocks, so that a long read is served by GETs of 8 MiB with
    /// up to eight in flight.
    fn prefetch(&mut self, cache: &Arc<BlockCache>, obj: &Incarnation<'_>, end: u64, size: u64) {
        // Not for a reader of a few small pieces (a header): only once the streak has read
        // half a block.
        if self.streak < BLOCK / 2 {
            return;
        }
        let max = cache.max_window() * BLOCK;
        let window = self.streak.saturating_mul(4).clamp(BLOCK, max);
        let target = (end + window).min(size);
        let steady = RUN_BLOCKS.min(cache.max_window()) * BLOCK;
        self.ahead = self.ahead.max(end.div_ceil(BLOCK) * BLOCK);
        while self.ahead < target {
            let request = self.request.clamp(BLOCK, steady);
            let started = cache.prefetch(
                obj.key,
                obj.ino,
                obj.generation,
                self.ahead / BLOCK,
                request / BLOCK,
                size,
            );
            if !started {
                break; // the bodies in flight are at their bound: asked again on a later read
            }
            self.ahead += request;
            self.request = (request * 2).min(steady);
        }
    }
}
