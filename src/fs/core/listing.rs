//! Directory listings, page by page. A `readdir` handle keeps a cursor into the listing (the
//! continuation token of the next ListObjectsV2 page, and the page of entries it is handing
//! out), never the whole directory, and holds no lock but its own while a page is fetched.
//! Offsets stay valid for the handle: it remembers where each page began (a token and the few
//! files carried between pages), so `seekdir` to an offset it gave out lists that page again
//! and resumes at the right entry; offset 0 (`rewinddir`) starts a new listing.
//!
//! A listing read whole from its start by one handle, of at most [`REMEMBER_MAX`] entries, is
//! remembered on the directory for the metadata TTL (lookups and the next `ls` answer from it
//! without a request) and, for lookups only, as a hint for ten TTLs (see `Core::lookup`).
//! All remembered listings together hold at most [`REMEMBERED_TOTAL`] entries.

use std::collections::{BTreeMap, HashSet};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use super::{lock, Attr, Core, HandleKind};
use crate::client::ClientError;
use crate::fs::error::{FsError, FsResult};
use crate::fs::namespace::{parent_path, valid_name, Cached, FileMeta, Kind, Listing, ROOT};

/// Keys asked for per ListObjectsV2 page (OSS's largest).
const PAGE: u32 = 1000;
/// The largest listing remembered, and the largest directory a lookup lists whole (20 pages).
pub(super) const REMEMBER_MAX: usize = 20_000;
/// Entries of all remembered listings together.
const REMEMBERED_TOTAL: usize = 50_000;

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
    /// When the listing that gave this entry was asked for: what it says is fresh for the
    /// metadata TTL from then.
    pub at: Instant,
}

impl DirEntry {
    fn at(ino: u64, name: &str, kind: Kind) -> Self {
        DirEntry {
            ino,
            name: name.to_string(),
            path: String::new(),
            kind,
            meta: None,
            at: Instant::now(),
        }
    }
}

/// What one `readdir` call gets: entries at offsets `start`, `start + 1`, ... (the kernel's
/// offset of entry `start + i` is `start + i + 1`). Empty at the end of the directory.
#[derive(Debug, Clone)]
pub struct DirBatch {
    pub start: u64,
    pub entries: Arc<Vec<DirEntry>>,
}

impl Deref for DirBatch {
    type Target = [DirEntry];
    fn deref(&self) -> &[DirEntry] {
        &self.entries
    }
}

/// A directory's listing, read a page at a time: where the next page begins and the little
/// carried from one page to the next.
#[derive(Debug, Clone)]
pub(super) struct Pages {
    path: String,
    token: Option<String>,
    /// The last key or prefix of the previous page: entries a server repeats are skipped.
    last: Option<String>,
    /// Files of the previous page that a directory of the same name (`name/`, which sorts
    /// after `name` and every `name` + a character below `/`) on the next page would hide.
    /// Each is a prefix of that page's last key, so there are few.
    carried: Vec<DirEntry>,
    done: bool,
}

impl Pages {
    pub(super) fn new(path: &str) -> Self {
        Pages {
            path: path.to_string(),
            token: None,
            last: None,
            carried: Vec::new(),
            done: false,
        }
    }
}

/// Where a handle's entries come from.
#[derive(Debug, Clone)]
enum Source {
    Pages(Pages),
    /// A remembered listing and the index of its next entry.
    Remembered {
        listing: Arc<Listing>,
        at: Instant,
        next: usize,
    },
}

impl Source {
    fn done(&self) -> bool {
        match self {
            Source::Pages(p) => p.done,
            Source::Remembered { listing, next, .. } => *next >= listing.len(),
        }
    }
}

/// The state of one open directory handle.
pub(super) struct DirCursor {
    ino: u64,
    /// The entries handed out now, at offsets `start..start + batch.len()`.
    start: u64,
    batch: Arc<Vec<DirEntry>>,
    /// `None` until the first `readdir`.
    source: Option<Source>,
    /// The source as it was before each batch, by the batch's first offset.
    resumes: Vec<(u64, Source)>,
    /// Files this mount is writing here that the listing has not shown (yet): shown after it.
    unseen: BTreeMap<String, u64>,
    /// Every entry so far, while the listing is read whole from its start and small enough to
    /// be remembered.
    collected: Option<Vec<(String, Option<FileMeta>)>>,
    /// The directory's listing generation when this listing began.
    generation: u64,
    began: Instant,
    /// Pages fetched through this handle.
    pages: u64,
}

impl DirCursor {
    pub(super) fn new(ino: u64) -> Self {
        DirCursor {
            ino,
            start: 0,
            batch: Arc::new(Vec::new()),
            source: None,
            resumes: Vec::new(),
            unseen: BTreeMap::new(),
            collected: None,
            generation: 0,
            began: Instant::now(),
            pages: 0,
        }
    }
}

const BAD_NAME: &str = "its name cannot be a file name (empty, '.', '..' or over 255 bytes)";

impl Core {
    /// The next page of `p`'s directory: its directories and files in key order (after the
    /// files carried from the previous page), with the directory's own marker, entries outside
    /// the directory and keys that cannot be names skipped (with one warning each), and a file
    /// hidden by a directory of the same name.
    pub(super) async fn next_page(&self, p: &mut Pages) -> FsResult<Vec<DirEntry>> {
        if p.done {
            return Ok(Vec::new());
        }
        let at = Instant::now();
        let page = self
            .store
            .list_page(&p.path, Some("/"), p.token.as_deref(), PAGE)
            .await
            .inspect_err(|e| {
                tracing::debug!(key = %p.path, errno = e.errno(), error = %e, "listing failed");
            })?;
        let path = p.path.as_str();
        let fresh = |k: &str| p.last.as_deref().is_none_or(|l| k > l);
        let last = match (page.contents.last(), page.common_prefixes.last()) {
            (Some(e), Some(c)) => Some(e.key.as_str().max(c.as_str())),
            (Some(e), None) => Some(e.key.as_str()),
            (None, c) => c.map(String::as_str),
        }
        .map(str::to_string);
        let mut out: Vec<DirEntry> = Vec::with_capacity(page.common_prefixes.len());
        for prefix in &page.common_prefixes {
            if !fresh(prefix) {
                continue;
            }
            let Some(name) = prefix.strip_prefix(path) else {
                self.warn_once(prefix, "the listing returned it for another directory");
                continue;
            };
            let name = name.trim_end_matches('/');
            if valid_name(name) {
                out.push(DirEntry {
                    ino: 0,
                    name: name.to_string(),
                    path: format!("{path}{name}/"),
                    kind: Kind::Dir,
                    meta: None,
                    at,
                });
            } else {
                self.warn_once(prefix, BAD_NAME);
            }
        }
        let dirs: HashSet<String> = out.iter().map(|d| d.name.clone()).collect();
        let mut files = std::mem::take(&mut p.carried);
        for e in page.contents {
            if e.key == path || !fresh(&e.key) {
                continue; // the directory's own marker object, or a repeated entry
            }
            let Some(name) = e.key.strip_prefix(path) else {
                self.warn_once(&e.key, "the listing returned it for another directory");
                continue;
            };
            if !valid_name(name) {
                self.warn_once(&e.key, BAD_NAME);
                continue;
            }
            files.push(DirEntry {
                ino: 0,
                name: name.to_string(),
                path: e.key.clone(),
                kind: Kind::File,
                meta: Some(FileMeta {
                    size: e.size,
                    mtime: e.last_modified.into(),
                    object_type: e.object_type,
                    etag: e.etag,
                    crc64: None,
                    storage_class: Some(e.storage_class),
                    user_meta: BTreeMap::new(),
                    from_head: false,
                }),
                at,
            });
        }
        let truncated = page.is_truncated;
        for f in files {
            if dirs.contains(&f.name) {
                self.warn_once(&f.path, "a directory of the same name hides it");
            } else if truncated
                && last
                    .as_deref()
                    .is_some_and(|l| format!("{}/", f.path).as_str() > l)
            {
                // `name/` may still come on the next page.
                p.carried.push(f);
            } else {
                out.push(f);
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        match page.next_continuation_token {
            Some(t) if truncated => {
                if p.token.as_deref() == Some(t.as_str()) {
                    return Err(ClientError::InvalidResponse {
                        op: crate::client::Op::ListObjectsV2,
                        key: String::new(),
                        request_id: String::new(),
                        reason: format!("listing repeats continuation token {t:?}"),
                    }
                    .into());
                }
                p.token = Some(t);
            }
            _ => {
                p.done = true;
                out.append(&mut p.carried);
            }
        }
        if last.is_some() {
            p.last = last;
        }
        Ok(out)
    }

    /// The listing of a directory for lookups: the remembered one when younger than the
    /// metadata TTL, else one listing shared by concurrent callers and remembered. `None` when
    /// the directory has more than [`REMEMBER_MAX`] entries (a lookup then asks for its name
    /// alone).
    pub(super) async fn listing(&self, dir_ino: u64) -> FsResult<Option<Arc<Listing>>> {
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
            Ok(hit) => return Ok(Some(hit)),
            Err(lead) => lead,
        };
        // The stale listing goes now, not when the new one is stored: a directory's two
        // listings are never held at once.
        let generation = {
            let mut nodes = lock(&self.nodes);
            let n = nodes.by_ino.get_mut(&dir_ino).ok_or(FsError::Stale)?;
            n.listing = None;
            n.listing_generation
        };
        let at = Instant::now();
        let mut pages = Pages::new(&lead.path);
        let mut all = Vec::new();
        while !pages.done {
            let page = self.next_page(&mut pages).await?;
            all.extend(page.into_iter().map(|e| (e.name, e.meta)));
            if all.len() > REMEMBER_MAX {
                return Ok(None);
            }
        }
        let listing = Arc::new(Listing::new(all));
        self.remember(dir_ino, listing.clone(), at, generation);
        Ok(Some(listing))
    }

    fn remember(&self, ino: u64, listing: Arc<Listing>, at: Instant, generation: u64) {
        lock(&self.nodes).remember(
            ino,
            Cached { value: listing, at },
            generation,
            self.cfg.metadata_ttl * 10,
            REMEMBERED_TOTAL,
        );
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.dir_path(ino)?;
        let cursor = Arc::new(tokio::sync::Mutex::new(DirCursor::new(ino)));
        Ok(self.new_handle(HandleKind::Dir(cursor)))
    }

    pub fn releasedir(&self, fh: u64) {
        let h = lock(&self.handles).remove(&fh);
        let pages = match h.as_deref().map(|h| lock(h)) {
            Some(h) => match &*h {
                HandleKind::Dir(c) => c.try_lock().map_or(0, |c| c.pages),
                _ => 0,
            },
            None => 0,
        };
        // A long listing made and freed a page of entries and a response body per page.
        if pages >= 10 {
            super::release_free_memory();
        }
    }

    /// The entries of an open directory from `offset` on: `.` and `..`, then the listing's
    /// directories and files with the attributes it gave, then files this mount is writing
    /// that the listing did not show. One page is fetched when the handle's current one is
    /// used up; a handle holds one page, not the directory. No node is made here: only
    /// entries handed to the kernel get one ([`Core::entry_ref`], [`Core::entry_ino`]).
    pub async fn readdir(&self, fh: u64, offset: u64) -> FsResult<DirBatch> {
        let h = self.handle(fh)?;
        let cursor = match &*lock(&h) {
            HandleKind::Dir(c) => c.clone(),
            _ => return Err(FsError::BadHandle),
        };
        let mut c = cursor.lock().await;
        if offset == 0 || c.source.is_none() {
            self.restart(&mut c)?;
        }
        loop {
            let end = c.start + c.batch.len() as u64;
            if (c.start..end).contains(&offset) {
                return Ok(DirBatch {
                    start: c.start,
                    entries: c.batch.clone(),
                });
            }
            if offset < c.start {
                // seekdir back: list again from the page that held the offset.
                let Some(i) = c.resumes.iter().rposition(|r| r.0 <= offset) else {
                    self.restart(&mut c)?;
                    continue;
                };
                c.resumes.truncate(i + 1);
                let (start, source) = c.resumes[i].clone();
                c.start = start;
                c.batch = Arc::new(Vec::new());
                c.source = Some(source);
                c.collected = None;
                continue;
            }
            if c.source.as_ref().is_none_or(Source::done) {
                return Ok(DirBatch {
                    start: offset,
                    entries: Arc::new(Vec::new()),
                });
            }
            self.advance(&mut c).await?;
        }
    }

    /// Begins the handle's listing anew: from the remembered listing when it is fresh, else
    /// from OSS.
    fn restart(&self, c: &mut DirCursor) -> FsResult<()> {
        let path = self.dir_path(c.ino)?;
        let (source, generation) = {
            let nodes = lock(&self.nodes);
            let n = nodes.by_ino.get(&c.ino).ok_or(FsError::Stale)?;
            let source = match &n.listing {
                Some(l) if l.at.elapsed() < self.cfg.metadata_ttl => Source::Remembered {
                    listing: l.value.clone(),
                    at: l.at,
                    next: 0,
                },
                _ => Source::Pages(Pages::new(&path)),
            };
            // Files this mount is writing may not be listed yet: shown while they have
            // unsent bytes or an open handle (an idle stream of a file deleted elsewhere is
            // not).
            let streams = lock(&self.streams);
            c.unseen = streams
                .iter()
                .filter_map(|(sino, s)| {
                    let key = s.key();
                    let name = key.strip_prefix(path.as_str())?;
                    let open = nodes
                        .by_ino
                        .get(sino)
                        .is_some_and(|n| !n.detached && (n.open_handles > 0 || !s.is_idle()));
                    (valid_name(name) && open && !s.is_gone()).then(|| (name.to_string(), *sino))
                })
                .collect();
            (source, n.listing_generation)
        };
        c.collected = matches!(source, Source::Pages(_)).then(Vec::new);
        c.source = Some(source);
        c.generation = generation;
        c.began = Instant::now();
        c.start = 0;
        c.batch = Arc::new(Vec::new());
        c.resumes.clear();
        Ok(())
    }

    /// Replaces the handle's batch with the next one.
    async fn advance(&self, c: &mut DirCursor) -> FsResult<()> {
        let start = c.start + c.batch.len() as u64;
        let Some(source) = c.source.as_mut() else {
            return Ok(());
        };
        if c.resumes.last().is_none_or(|r| r.0 < start) {
            c.resumes.push((start, source.clone()));
        }
        let mut out = Vec::new();
        if start == 0 {
            let path = self.dir_path(c.ino)?;
            let parent = if c.ino == ROOT {
                ROOT
            } else {
                lock(&self.nodes)
                    .by_path
                    .get(parent_path(&path))
                    .copied()
                    .unwrap_or(ROOT)
            };
            out.push(DirEntry::at(c.ino, ".", Kind::Dir));
            out.push(DirEntry::at(parent, "..", Kind::Dir));
        }
        let items = match source {
            Source::Pages(p) => {
                c.pages += 1;
                self.next_page(p).await?
            }
            Source::Remembered { listing, at, next } => {
                let path = self.dir_path(c.ino)?;
                let end = (*next + PAGE as usize).min(listing.len());
                let items = listing.entries()[*next..end]
                    .iter()
                    .map(|(name, meta)| DirEntry {
                        ino: 0,
                        name: name.clone(),
                        path: match meta {
                            Some(_) => format!("{path}{name}"),
                            None => format!("{path}{name}/"),
                        },
                        kind: if meta.is_some() {
                            Kind::File
                        } else {
                            Kind::Dir
                        },
                        meta: meta.clone(),
                        at: *at,
                    })
                    .collect();
                *next = end;
                items
            }
        };
        for e in &items {
            c.unseen.remove(&e.name);
        }
        if let Some(all) = &mut c.collected {
            all.extend(items.iter().map(|e| (e.name.clone(), e.meta.clone())));
            if all.len() > REMEMBER_MAX {
                c.collected = None;
            }
        }
        out.extend(items);
        if c.source.as_ref().is_some_and(Source::done) {
            let streams = lock(&self.streams);
            let nodes = lock(&self.nodes);
            for (name, sino) in &c.unseen {
                let live = streams.get(sino).is_some_and(|s| !s.is_gone())
                    && nodes.by_ino.get(sino).is_some_and(|n| !n.detached);
                if live {
                    out.push(DirEntry::at(*sino, name, Kind::File));
                }
            }
            drop((streams, nodes));
            if let Some(all) = c.collected.take() {
                self.remember(c.ino, Arc::new(Listing::new(all)), c.began, c.generation);
            }
        }
        c.start = start;
        c.batch = Arc::new(out);
        Ok(())
    }

    /// Every entry of a directory, read through a handle of its own (for tests and tools).
    pub async fn readdir_entries(&self, ino: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let fh = self.opendir(ino)?;
        let mut all = Vec::new();
        let result = async {
            loop {
                let batch = self.readdir(fh, all.len() as u64).await?;
                let skip = all.len() - batch.start as usize;
                if batch.len() <= skip {
                    return Ok(());
                }
                all.extend(batch.entries[skip..].iter().cloned());
            }
        }
        .await;
        self.releasedir(fh);
        result.map(|()| Arc::new(all))
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
    /// listing's attributes when its own are stale and older (so `ls -l` costs no HEAD per
    /// file).
    pub fn entry_ref(&self, e: &DirEntry) -> Attr {
        let counted = e.name != "." && e.name != "..";
        let ino = if e.ino != 0 {
            e.ino
        } else {
            lock(&self.nodes).get_or_insert(&e.path, e.kind).ino
        };
        let ino = match (&e.meta, e.kind) {
            (Some(meta), Kind::File) => {
                let stale = {
                    let mut nodes = lock(&self.nodes);
                    match nodes.by_ino.get_mut(&ino) {
                        None => true,
                        Some(n) if self.fresh(&n.meta) => false,
                        Some(n) => match &mut n.meta {
                            Some(m) if m.at >= e.at => false,
                            // What an earlier listing said, said again: only its time changes
                            // (`ls -l` again and again makes and frees nothing per file).
                            Some(m) if same_listed(&m.value, meta) => {
                                m.at = e.at;
                                false
                            }
                            _ => true,
                        },
                    }
                };
                if stale {
                    self.store_meta_at(ino, meta.clone(), e.at)
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
}

/// Whether two listings' entries say the same of a file.
fn same_listed(a: &FileMeta, b: &FileMeta) -> bool {
    !a.from_head
        && !b.from_head
        && a.size == b.size
        && a.etag == b.etag
        && a.object_type == b.object_type
        && a.mtime == b.mtime
        && a.storage_class == b.storage_class
}
