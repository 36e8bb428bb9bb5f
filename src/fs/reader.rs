//! The read path's block cache: objects are read in fixed blocks by ranged GET, concurrent
//! readers of one block share one request, and finished blocks live in an LRU bounded by
//! `--cache-size`. Blocks are keyed by inode and generation: bytes below a known length of an
//! Appendable object never change, so a block stays valid until the object is replaced, which
//! bumps the generation. A partial last block of a growing object is refetched once more of it
//! is known to exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use tracing::Instrument;

use super::error::{FsError, FsResult};
use super::store::Store;

/// Bytes per block: one GET each, and the kernel's read size with `st_blksize` = 1 MiB.
pub const BLOCK: u64 = 1024 * 1024;
/// Most blocks prefetched ahead of a sequential reader: 64 MiB, eight GETs of 8 MiB in flight
/// on eight connections, which is what fills a link where each connection is slow (OSS).
/// Bounded further by a quarter of the cache ([`BlockCache::max_window`]).
pub const MAX_WINDOW: u64 = 64;
/// Blocks fetched by one prefetch GET once a sequential reader's requests have grown (they
/// start at one block and double).
pub const RUN_BLOCKS: u64 = 8;
/// What a read that is not sequential for its handle fetches: its own range, rounded out to
/// pieces of this size (cached apart from blocks), not whole blocks.
pub const PIECE: u64 = 32 * 1024;

/// The object a read is for, as the namespace knows it.
#[derive(Debug, Clone, Copy)]
pub struct Incarnation<'a> {
    pub key: &'a str,
    pub ino: u64,
    /// Bumped when the object is replaced: blocks of older generations are never served.
    pub generation: u64,
    /// Length and CRC-64 of the prefix known to belong to this object.
    pub verified: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub ino: u64,
    pub generation: u64,
    pub index: u64,
}

type Fetch = Shared<BoxFuture<'static, Result<Bytes, FsError>>>;

/// What the LRU holds: whole blocks (a prefix of the block, as much as the object had), and
/// pieces of [`PIECE`] bytes fetched by non-sequential reads (`index` counts pieces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Block(BlockKey),
    Piece(BlockKey),
}

struct Inner {
    lru: lru::LruCache<Slot, Bytes>,
    bytes: u64,
    /// Bytes asked for by GETs in flight: their bodies count against the cache's room as soon
    /// as they are asked for, so cached blocks, prefetch and bodies stay within one bound.
    reserved: u64,
    inflight: HashMap<BlockKey, (u64, Fetch)>,
    /// For blocks extended here: the object's length and CRC-64 where the block ends, as
    /// proven by the extension (so the next one can be proven too).
    proven: HashMap<BlockKey, (u64, u64)>,
}

pub struct BlockCache {
    store: Arc<dyn Store>,
    capacity: u64,
    /// With `--max-memory`: the budget of buffered writes, which the cache makes room for,
    /// and the shared bound.
    shared: Option<(Arc<super::append::budget::DirtyBudget>, u64)>,
    inner: Mutex<Inner>,
}

impl BlockCache {
    pub fn new(store: Arc<dyn Store>, capacity: u64) -> Self {
        BlockCache {
            store,
            capacity,
            shared: None,
            inner: Mutex::new(Inner {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
                reserved: 0,
                inflight: HashMap::new(),
                proven: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cached_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Shares `max_memory` (when set) with the buffered writes counted by `dirty`.
    pub fn sharing(
        mut self,
        dirty: Arc<super::append::budget::DirtyBudget>,
        max_memory: Option<u64>,
    ) -> Self {
        self.shared = max_memory.map(|m| (dirty, m));
        self
    }

    /// What the cache may hold now: its own bound, less what buffered writes use of a shared
    /// one.
    fn room(&self) -> u64 {
        match &self.shared {
            Some((dirty, max)) => self.capacity.min(max.saturating_sub(dirty.used())),
            None => self.capacity,
        }
    }

    /// Evicts least recently used blocks until the cache fits its room (buffered writes grew).
    pub fn trim(&self) {
        if self.shared.is_none() {
            return;
        }
        let room = self.room();
        Self::evict(&mut self.lock(), room);
    }

    /// Evicts least recently used entries until the cached bytes and the bodies in flight fit
    /// `room` (or nothing cached is left).
    fn evict(inner: &mut Inner, room: u64) {
        while inner.bytes + inner.reserved > room {
            match inner.lru.pop_lru() {
                Some((slot, b)) => {
                    inner.bytes -= b.len() as u64;
                    if let Slot::Block(k) = slot {
                        inner.proven.remove(&k);
                    }
                }
                None => break,
            }
        }
    }

    /// Bytes the GETs in flight may hold at once: half the room (the rest is for blocks read).
    fn inflight_budget(&self) -> u64 {
        (self.room() / 2).max(2 * BLOCK)
    }

    /// The largest prefetch window (in blocks) this cache can hold without evicting blocks a
    /// reader is about to use: a quarter of it, at least two blocks.
    pub fn max_window(&self) -> u64 {
        (self.room() / 4 / BLOCK).clamp(1, MAX_WINDOW)
    }

    /// Block `bk` of `key`, at least `want` bytes of it (fewer only if the object is shorter
    /// than the caller believed).
    pub async fn block(
        self: &Arc<Self>,
        key: &str,
        bk: BlockKey,
        want: u64,
        verified: Option<(u64, u64)>,
    ) -> FsResult<Bytes> {
        let fetch = {
            let mut inner = self.lock();
            let have = match inner.lru.get(&Slot::Block(bk)) {
                Some(b) if b.len() as u64 >= want => return Ok(b.clone()),
                // Extended only where the cached bytes end at a proven prefix of the object
                // (the node's verified one, or one an earlier extension proved), whose CRC-64
                // then proves the new bytes belong to the same object; otherwise the block is
                // fetched whole (one version of the object).
                Some(b) if !b.is_empty() => {
                    let (b, end) = (b.clone(), bk.index * BLOCK + b.len() as u64);
                    let at_end = |p: &(u64, u64)| p.0 == end;
                    let prefix = inner
                        .proven
                        .get(&bk)
                        .copied()
                        .filter(at_end)
                        .or(verified.filter(at_end));
                    prefix.map(|(_, crc)| (b, crc))
                }
                _ => None,
            };
            match (inner.inflight.get(&bk), have) {
                (Some((len, f)), _) if *len >= want => f.clone(),
                // The last block of a growing object (`tail -f`): fetch only its new bytes.
                (_, Some((have, prefix_crc))) => {
                    self.start_extension(&mut inner, key, bk, have, want, prefix_crc)
                }
                _ => {
                    let mut fetches = self.start_run(&mut inner, key, &[(bk, want)]);
                    fetches.pop().expect("one block asked, one fetch")
                }
            }
        };
        fetch.await
    }

    /// Fetches bytes `have.len()..want` of a block whose first `have.len()` bytes are cached
    /// (bytes below a known length never change while the generation holds) and joins them.
    fn start_extension(
        self: &Arc<Self>,
        inner: &mut Inner,
        key: &str,
        bk: BlockKey,
        have: Bytes,
        want: u64,
        prefix_crc: u64,
    ) -> Fetch {
        let first = bk.index * BLOCK + have.len() as u64;
        // To the block's end (clamped by OSS to the object's): the answer then reaches the
        // object's end, whose CRC proves the new bytes, even when it grew since `want`.
        let last = bk.index * BLOCK + BLOCK - 1;
        let this = self.clone();
        let key = key.to_string();
        let span = tracing::debug_span!("block_extend", key = %key, block = bk.index, from = first, to = last);
        let task = async move {
            let res = match this.store.get_range(&key, first, last).await {
                Ok(d) => {
                    let n = d.data.len() as u64;
                    let at_end = d.total == Some(first + n);
                    let same = match (at_end, d.crc64) {
                        // The whole object's CRC must be the verified prefix's continued over
                        // the new bytes.
                        (true, Some(c)) => {
                            crate::oss::crc64::combine(prefix_crc, crate::oss::crc64::checksum(&d.data), n)
                                == c
                        }
                        // Cannot be checked here (it grew further, or no CRC): not joined.
                        _ => false,
                    };
                    if same {
                        let mut joined = BytesMut::with_capacity(have.len() + d.data.len());
                        joined.extend_from_slice(&have);
                        joined.extend_from_slice(&d.data);
                        if let Some(c) = d.crc64 {
                            this.lock().proven.insert(bk, (first + n, c));
                        }
                        Ok(joined.freeze())
                    } else if at_end && d.crc64.is_some() {
                        // Not the object the cached bytes came from.
                        Err(FsError::Stale)
                    } else {
                        // Fetch the block whole instead.
                        this.store
                            .get_range(&key, bk.index * BLOCK, bk.index * BLOCK + want - 1)
                            .await
                            .map(|d| d.data)
                            .map_err(FsError::from)
                    }
                }
                // Shorter than we were told: the reader finds out why.
                Err(e) if e.code() == Some("InvalidRange") => Ok(have),
                Err(e) => {
                    tracing::debug!(key = %key, offset = first, errno = e.errno(), request_id = e.request_id().unwrap_or(""), error = %e, "read failed");
                    Err(FsError::from(e))
                }
            };
            this.finish(&mut this.lock(), bk, want, &res);
            res
        }
        .instrument(span);
        let f = joined(tokio::spawn(task)).boxed().shared();
        inner.inflight.insert(bk, (want, f.clone()));
        f
    }

    fn present(inner: &Inner, bk: &BlockKey, want: u64) -> bool {
        inner
            .lru
            .peek(&Slot::Block(*bk))
            .is_some_and(|b| b.len() as u64 >= want)
            || inner.inflight.get(bk).is_some_and(|(l, _)| *l >= want)
    }

    /// Starts fetching the missing blocks of `first..first + count` in the background (one
    /// request of a sequential reader's prefetch): consecutive missing blocks go out as one
    /// ranged GET. Returns false, starting nothing, when the GETs already in flight hold the
    /// budget of bodies in flight; the caller asks again on a later read.
    pub fn prefetch(
        self: &Arc<Self>,
        key: &str,
        ino: u64,
        generation: u64,
        first: u64,
        count: u64,
        size: u64,
    ) -> bool {
        let mut inner = self.lock();
        let key_of = |index| BlockKey {
            ino,
            generation,
            index,
        };
        let wants: Vec<(BlockKey, u64)> = (first..first + count)
            .take_while(|i| i * BLOCK < size)
            .map(|i| (key_of(i), (size - i * BLOCK).min(BLOCK)))
            .collect();
        let missing: u64 = wants
            .iter()
            .filter(|(bk, w)| !Self::present(&inner, bk, *w))
            .map(|(_, w)| w)
            .sum();
        if missing == 0 {
            return true;
        }
        if inner.reserved + missing > self.inflight_budget() && inner.reserved > 0 {
            return false;
        }
        let mut run: Vec<(BlockKey, u64)> = Vec::new();
        for (bk, want) in wants {
            if Self::present(&inner, &bk, want) {
                if !run.is_empty() {
                    self.start_run(&mut inner, key, &run);
                    run.clear();
                }
                continue;
            }
            run.push((bk, want));
        }
        if !run.is_empty() {
            self.start_run(&mut inner, key, &run);
        }
        true
    }

    /// One GET for consecutive blocks, run as a task of its own (it completes, and its blocks
    /// are cached, whether or not anyone still waits); returns a shared fetch per block, each
    /// registered as in flight.
    fn start_run(
        self: &Arc<Self>,
        inner: &mut Inner,
        key: &str,
        blocks: &[(BlockKey, u64)],
    ) -> Vec<Fetch> {
        let first = blocks[0].0.index * BLOCK;
        let total: u64 = blocks.iter().map(|(_, w)| w).sum();
        let span = tracing::debug_span!("block_fetch", key = %key, first_block = blocks[0].0.index, blocks = blocks.len(), bytes = total);
        inner.reserved += total;
        Self::evict(inner, self.room());
        let this = self.clone();
        let key = key.to_string();
        let wants = blocks.to_vec();
        let task = async move {
            let res = match this.store.get_range(&key, first, first + total - 1).await {
                Ok(d) => Ok(d.data),
                // The object is shorter than we were told: the reader finds out why.
                Err(e) if e.code() == Some("InvalidRange") => Ok(Bytes::new()),
                Err(e) => {
                    tracing::debug!(key = %key, offset = first, bytes = total, errno = e.errno(), request_id = e.request_id().unwrap_or(""), error = %e, "read failed");
                    Err(FsError::from(e))
                }
            };
            let mut inner = this.lock();
            inner.reserved -= total;
            for (i, &(bk, want)) in wants.iter().enumerate() {
                let block = res.clone().map(|d| slice_of(&d, i as u64 * BLOCK, want));
                this.finish(&mut inner, bk, want, &block);
            }
            res
        }
        .instrument(span);
        let run = joined(tokio::spawn(task)).boxed().shared();
        let mut out = Vec::with_capacity(blocks.len());
        for (i, &(bk, want)) in blocks.iter().enumerate() {
            let offset = i as u64 * BLOCK;
            let f = run
                .clone()
                .map(move |res| res.map(|d| slice_of(&d, offset, want)))
                .boxed()
                .shared();
            inner.inflight.insert(bk, (want, f.clone()));
            out.push(f);
        }
        out
    }

    /// A fetch is done: no longer in flight, and its block cached if it adds bytes.
    fn finish(&self, inner: &mut Inner, bk: BlockKey, want: u64, res: &FsResult<Bytes>) {
        if inner.inflight.get(&bk).is_some_and(|(l, _)| *l == want) {
            inner.inflight.remove(&bk);
        }
        if let Ok(data) = res {
            self.put(inner, Slot::Block(bk), data);
        }
    }

    /// Caches `data` in `slot` unless what is there already holds as many bytes.
    fn put(&self, inner: &mut Inner, slot: Slot, data: &Bytes) {
        let better = inner.lru.peek(&slot).is_none_or(|b| b.len() < data.len());
        if better && !data.is_empty() {
            if let Some(old) = inner.lru.put(slot, data.clone()) {
                inner.bytes -= old.len() as u64;
            }
            inner.bytes += data.len() as u64;
            Self::evict(inner, self.room());
        }
    }

    /// Bytes `offset..offset+len` of `obj` for a read that is not sequential: from a cached
    /// block or cached pieces when they hold them, else by one GET of just the pieces the
    /// range touches (never a whole block). Fewer bytes only if the object is shorter than
    /// `size`.
    pub async fn read_small(
        self: &Arc<Self>,
        obj: &Incarnation<'_>,
        offset: u64,
        len: u64,
        size: u64,
    ) -> FsResult<Bytes> {
        let end = (offset + len).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let key_of = |index| BlockKey {
            ino: obj.ino,
            generation: obj.generation,
            index,
        };
        let (p0, p1) = (offset / PIECE, (end - 1) / PIECE);
        {
            let mut inner = self.lock();
            // Blocks a sequential reader left, when they hold the whole range; else pieces.
            let cached = cached_range(&mut inner, BLOCK, |b| Slot::Block(key_of(b)), offset, end)
                .or_else(|| {
                    cached_range(&mut inner, PIECE, |p| Slot::Piece(key_of(p)), offset, end)
                });
            if let Some(data) = cached {
                return Ok(data);
            }
        }
        let first = p0 * PIECE;
        let last = ((p1 + 1) * PIECE).min(size) - 1;
        let span = tracing::debug_span!("piece_fetch", key = %obj.key, offset = first, bytes = last + 1 - first);
        let data = match self
            .store
            .get_range(obj.key, first, last)
            .instrument(span)
            .await
        {
            Ok(d) => d.data,
            // The object is shorter than we were told: the reader finds out why.
            Err(e) if e.code() == Some("InvalidRange") => Bytes::new(),
            Err(e) => {
                tracing::debug!(key = %obj.key, offset = first, errno = e.errno(), request_id = e.request_id().unwrap_or(""), error = %e, "read failed");
                return Err(FsError::from(e));
            }
        };
        {
            let mut inner = self.lock();
            for p in p0..=p1 {
                let piece = slice_of(&data, (p - p0) * PIECE, PIECE);
                self.put(&mut inner, Slot::Piece(key_of(p)), &piece);
            }
        }
        let lo = ((offset - first) as usize).min(data.len());
        let hi = ((end - first) as usize).min(data.len());
        Ok(data.slice(lo..hi))
    }

    /// Bytes `offset..offset+len` of `obj`, whose remote length is `size`: reads every block in
    /// the range concurrently and joins them.
    pub async fn read(
        self: &Arc<Self>,
        obj: &Incarnation<'_>,
        offset: u64,
        len: u64,
        size: u64,
    ) -> FsResult<Bytes> {
        let Incarnation {
            key,
            ino,
            generation,
            verified,
        } = *obj;
        let end = (offset + len).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let first_block = offset / BLOCK;
        let last_block = (end - 1) / BLOCK;
        let fetches = (first_block..=last_block).map(|index| {
            let bk = BlockKey {
                ino,
                generation,
                index,
            };
            let want = (size - index * BLOCK).min(BLOCK);
            self.block(key, bk, want, verified)
        });
        let blocks = futures::future::try_join_all(fetches).await?;
        if let [b] = blocks.as_slice() {
            // Within one block (the kernel's 1 MiB reads are): a slice, no copy.
            let block_start = first_block * BLOCK;
            let lo = ((offset - block_start) as usize).min(b.len());
            let hi = ((end - block_start) as usize).min(b.len());
            return Ok(b.slice(lo..hi));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (i, b) in blocks.iter().enumerate() {
            let block_start = (first_block + i as u64) * BLOCK;
            let lo = offset.saturating_sub(block_start) as usize;
            let want_hi = (end - block_start).min(BLOCK) as usize;
            let hi = want_hi.min(b.len());
            if lo < hi {
                out.extend_from_slice(&b[lo..hi]);
            }
            if hi < want_hi {
                break; // short block: the object ended earlier than we were told
            }
        }
        Ok(out.freeze())
    }
}

/// Bytes `offset..end` out of consecutive `parts` of `unit` bytes each (the first at `start`),
/// each holding at least the bytes of the range that fall in it: a slice when one part holds
/// them all, else one copy.
/// Bytes `offset..end` when the cached units of `unit` bytes (blocks or pieces) that `slot`
/// names hold all of them.
fn cached_range(
    inner: &mut Inner,
    unit: u64,
    slot: impl Fn(u64) -> Slot,
    offset: u64,
    end: u64,
) -> Option<Bytes> {
    let (u0, u1) = (offset / unit, (end - 1) / unit);
    let mut parts = Vec::new();
    for u in u0..=u1 {
        let start = u * unit;
        let need = (start + unit).min(end) - start;
        match inner.lru.get(&slot(u)) {
            Some(d) if d.len() as u64 >= need => parts.push(d.clone()),
            _ => return None,
        }
    }
    Some(join_range(&parts, u0 * unit, unit, offset, end))
}

fn join_range(parts: &[Bytes], start: u64, unit: u64, offset: u64, end: u64) -> Bytes {
    if let [b] = parts {
        return b.slice((offset - start) as usize..(end - start) as usize);
    }
    let mut out = BytesMut::with_capacity((end - offset) as usize);
    for (i, b) in parts.iter().enumerate() {
        let at = start + i as u64 * unit;
        let from = offset.saturating_sub(at) as usize;
        let to = ((end - at) as usize).min(b.len());
        out.extend_from_slice(&b[from..to]);
    }
    out.freeze()
}

/// Bytes `offset..offset + len` of `data`, as many of them as it holds.
fn slice_of(data: &Bytes, offset: u64, len: u64) -> Bytes {
    let lo = (offset as usize).min(data.len());
    let hi = ((offset + len) as usize).min(data.len());
    data.slice(lo..hi)
}

/// The result of a fetch task (a task that panicked is an I/O error, never bytes).
async fn joined(task: tokio::task::JoinHandle<FsResult<Bytes>>) -> FsResult<Bytes> {
    task.await
        .unwrap_or_else(|e| Err(FsError::Io(format!("read task failed: {e}"))))
}
