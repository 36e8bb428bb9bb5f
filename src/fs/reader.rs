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

use super::error::{FsError, FsResult};
use crate::client::{Client, RangeSpec};

/// Bytes per block: one GET each, and the kernel's read size with `st_blksize` = 1 MiB.
pub const BLOCK: u64 = 1024 * 1024;
/// Most blocks prefetched ahead of a sequential reader.
pub const MAX_WINDOW: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub ino: u64,
    pub generation: u64,
    pub index: u64,
}

type Fetch = Shared<BoxFuture<'static, Result<Bytes, FsError>>>;

struct Inner {
    lru: lru::LruCache<BlockKey, Bytes>,
    bytes: u64,
    inflight: HashMap<BlockKey, (u64, Fetch)>,
}

pub struct BlockCache {
    client: Client,
    capacity: u64,
    inner: Mutex<Inner>,
}

impl BlockCache {
    pub fn new(client: Client, capacity: u64) -> Self {
        BlockCache {
            client,
            capacity,
            inner: Mutex::new(Inner {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
                inflight: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cached_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Block `bk` of `key`, at least `want` bytes of it (fewer only if the object is shorter
    /// than the caller believed).
    pub async fn block(self: &Arc<Self>, key: &str, bk: BlockKey, want: u64) -> FsResult<Bytes> {
        let fetch = {
            let mut inner = self.lock();
            if let Some(b) = inner.lru.get(&bk) {
                if b.len() as u64 >= want {
                    return Ok(b.clone());
                }
            }
            match inner.inflight.get(&bk) {
                Some((len, f)) if *len >= want => f.clone(),
                _ => {
                    let f = self.clone().start(key.to_string(), bk, want);
                    inner.inflight.insert(bk, (want, f.clone()));
                    f
                }
            }
        };
        fetch.await
    }

    /// Starts fetching blocks in the background (sequential prefetch).
    pub fn prefetch(self: &Arc<Self>, key: &str, bk: BlockKey, want: u64) {
        let mut inner = self.lock();
        if inner.lru.peek(&bk).is_some_and(|b| b.len() as u64 >= want)
            || inner.inflight.get(&bk).is_some_and(|(l, _)| *l >= want)
        {
            return;
        }
        let f = self.clone().start(key.to_string(), bk, want);
        inner.inflight.insert(bk, (want, f.clone()));
        drop(inner);
        tokio::spawn(async move {
            let _ = f.await;
        });
    }

    fn start(self: Arc<Self>, key: String, bk: BlockKey, want: u64) -> Fetch {
        let first = bk.index * BLOCK;
        async move {
            let span =
                tracing::debug_span!("block_fetch", key = %key, block = bk.index, bytes = want);
            let _e = span.enter();
            let res = self
                .client
                .get_object_bytes(&key, Some(RangeSpec::FromTo(first, first + want - 1)))
                .await;
            let res = match res {
                Ok(d) => Ok(d.data),
                // The object is shorter than we were told: it was replaced or truncated.
                Err(e) if e.code() == Some("InvalidRange") => Ok(Bytes::new()),
                Err(e) => Err(FsError::from(e)),
            };
            let mut inner = self.lock();
            if inner.inflight.get(&bk).is_some_and(|(l, _)| *l == want) {
                inner.inflight.remove(&bk);
            }
            if let Ok(data) = &res {
                let better = inner.lru.peek(&bk).is_none_or(|b| b.len() < data.len());
                if better && !data.is_empty() {
                    if let Some(old) = inner.lru.put(bk, data.clone()) {
                        inner.bytes -= old.len() as u64;
                    }
                    inner.bytes += data.len() as u64;
                    while inner.bytes > self.capacity {
                        match inner.lru.pop_lru() {
                            Some((_, b)) => inner.bytes -= b.len() as u64,
                            None => break,
                        }
                    }
                }
            }
            res
        }
        .boxed()
        .shared()
    }

    /// Bytes `offset..offset+len` of `key`, whose remote length is `size`: reads every block in
    /// the range concurrently and joins them.
    pub async fn read(
        self: &Arc<Self>,
        key: &str,
        ino: u64,
        generation: u64,
        offset: u64,
        len: u64,
        size: u64,
    ) -> FsResult<Bytes> {
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
            self.block(key, bk, want)
        });
        let blocks = futures::future::try_join_all(fetches).await?;
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
