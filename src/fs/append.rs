//! Append streams: one per object being written on this mount, shared by every handle writing
//! it. Writes are buffered whole, sent as AppendObject chunks one at a time (the position rule
//! forbids pipelining) when the buffer reaches the chunk size, when its oldest byte reaches the
//! flush interval, or when a handle flushes. Every answer is checked (next position and the
//! combined CRC-64), and an ambiguous outcome is resolved with a HEAD before anything is sent
//! again, so each byte lands exactly once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{watch, Notify};

use super::error::{FsError, FsResult};
use crate::client::{Client, CreateOptions};
use crate::oss::crc64;
use crate::oss::{ObjectType, MAX_OBJECT_SIZE};

/// Settings shared by every stream of a mount.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub chunk_size: u64,
    pub flush_interval: Duration,
    /// Creation settings sent when a stream (re)creates its object at position 0.
    pub create: CreateOptions,
    /// How long the exactly-once loop keeps trying one chunk before failing it.
    pub give_up_after: Duration,
}

/// The global bound on bytes accepted but not yet appended. Writers wait above it.
pub struct DirtyBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Notify,
}

impl DirtyBudget {
    pub fn new(limit: u64) -> Self {
        DirtyBudget {
            limit,
            used: Mutex::new(0),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` more bytes fit (a single write larger than the limit passes alone).
    pub async fn acquire(&self, n: u64) {
        loop {
            let freed = self.freed.notified();
            {
                let mut used = self.lock();
                if *used == 0 || *used + n <= self.limit {
                    *used += n;
                    return;
                }
            }
            freed.await;
        }
    }

    pub fn release(&self, n: u64) {
        let mut used = self.lock();
        *used = used.saturating_sub(n);
        drop(used);
        self.freed.notify_waiters();
    }

    pub fn used(&self) -> u64 {
        *self.lock()
    }
}

struct Pending {
    data: Bytes,
    /// Written with O_APPEND: may move to a new end if another writer got there first.
    append_mode: bool,
}

struct Chunk {
    data: Bytes,
    append_mode: bool,
    /// Sequence number just past this chunk's last byte.
    end_seq: u64,
}

/// A permanent failure of some accepted bytes, kept so flushes of the handles that wrote them
/// can report it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub first_seq: u64,
    pub end_seq: u64,
    pub error: FsError,
}

struct State {
    /// The object's length and CRC as last confirmed by OSS.
    position: u64,
    crc: u64,
    pending: VecDeque<Pending>,
    pending_len: u64,
    /// The chunk being sent, still readable locally.
    inflight: Option<Bytes>,
    /// Bytes ever accepted / finished (appended or failed), as sequence numbers.
    accepted: u64,
    finished: u64,
    oldest: Option<Instant>,
    flush_wanted: bool,
    failures: Vec<Failure>,
    deleted: bool,
    stopping: bool,
    /// Sequence up to which [`AppendStream::drain`] has reported failures.
    drained: u64,
}

impl State {
    /// Bytes accepted here and not yet confirmed: in flight plus buffered.
    fn local(&self) -> u64 {
        self.inflight.as_ref().map_or(0, |b| b.len() as u64) + self.pending_len
    }
}

/// What a handle remembers of its own writes, to know what its flush must wait for.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteMark {
    /// Sequence just past this handle's last write.
    pub last_end: u64,
    /// Everything before this was already reported by an earlier flush.
    pub flushed: u64,
}

pub struct AppendStream {
    /// The object's key; changes when the file is renamed on this mount (under `send_lock`).
    key: Mutex<String>,
    client: Client,
    config: Arc<StreamConfig>,
    budget: Arc<DirtyBudget>,
    state: Mutex<State>,
    wake: Notify,
    progress: watch::Sender<u64>,
    /// Held while a chunk is being sent or the object is being replaced.
    send_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AppendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendStream")
            .field("key", &self.key())
            .finish()
    }
}

impl AppendStream {
    /// A stream for `key` whose object is known to be `position` bytes long with CRC `crc`.
    /// Spawns its uploader on the current runtime.
    pub fn start(
        key: String,
        position: u64,
        crc: u64,
        client: Client,
        config: Arc<StreamConfig>,
        budget: Arc<DirtyBudget>,
    ) -> Arc<Self> {
        let (progress, _) = watch::channel(0);
        let stream = Arc::new(AppendStream {
            key: Mutex::new(key),
            client,
            config,
            budget,
            state: Mutex::new(State {
                position,
                crc,
                pending: VecDeque::new(),
                pending_len: 0,
                inflight: None,
                accepted: 0,
                finished: 0,
                oldest: None,
                flush_wanted: false,
                failures: Vec::new(),
                deleted: false,
                stopping: false,
                drained: 0,
            }),
            wake: Notify::new(),
            progress,
            send_lock: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(stream.clone().run());
        stream
    }

    pub fn key(&self) -> String {
        self.key.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Holds back sending (the file is being renamed); writes keep being buffered.
    pub async fn pause(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.send_lock.lock().await
    }

    /// Points the stream at the object's new key after a rename, while paused. The copy has the
    /// same bytes and CRC, so the known position stays valid.
    pub fn rekey(&self, key: String) {
        *self.key.lock().unwrap_or_else(|e| e.into_inner()) = key;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The confirmed length and the bytes in flight or buffered after it, read together (two
    /// separate reads can straddle a confirmation or a replacement).
    pub fn local_span(&self) -> (u64, u64) {
        let st = self.lock();
        (st.position, st.local())
    }

    /// Length and CRC last confirmed by OSS.
    pub fn remote(&self) -> (u64, u64) {
        let st = self.lock();
        (st.position, st.crc)
    }

    /// Whether nothing is buffered or in flight.
    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        st.pending.is_empty() && st.inflight.is_none()
    }

    /// Adopts a newer remote state seen by a HEAD while nothing is waiting to be sent, which
    /// saves a position conflict on the next append.
    pub fn observe_remote(&self, len: u64, crc: Option<u64>) {
        let mut st = self.lock();
        if let Some(crc) = crc {
            if st.pending.is_empty() && st.inflight.is_none() && len > st.position {
                st.position = len;
                st.crc = crc;
            }
        }
    }

    /// Accepts one write. With `append_mode` (O_APPEND) it goes at the object's real end;
    /// otherwise `offset` must be the current end. Returns the write's end sequence number.
    pub async fn write(&self, offset: u64, data: &[u8], append_mode: bool) -> FsResult<u64> {
        self.write_bytes(offset, Bytes::copy_from_slice(data), append_mode)
            .await
    }

    /// As [`write`](Self::write), taking the buffer without copying it (the FUSE path).
    pub async fn write_bytes(&self, offset: u64, data: Bytes, append_mode: bool) -> FsResult<u64> {
        let n = data.len() as u64;
        self.check_writable(&self.lock(), offset, n, append_mode)?;
        self.budget.acquire(n).await;
        let mut st = self.lock();
        // Checked again: the state may have moved while waiting for budget.
        if let Err(e) = self.check_writable(&st, offset, n, append_mode) {
            drop(st);
            self.budget.release(n);
            return Err(e);
        }
        if n == 0 {
            return Ok(st.accepted);
        }
        st.pending.push_back(Pending { data, append_mode });
        st.pending_len += n;
        st.accepted += n;
        // The first byte of a new batch starts the flush-interval clock. The uploader sleeps
        // without a deadline while nothing is pending, so it must be told, or bytes of a writer
        // that keeps its file open (a logger) waited for the chunk to fill or the file to close,
        // and `tail -f` elsewhere never saw them.
        let first = st.oldest.is_none();
        st.oldest.get_or_insert_with(Instant::now);
        let end = st.accepted;
        let full = st.pending_len >= self.config.chunk_size;
        drop(st);
        if full || first {
            self.wake.notify_one();
        }
        Ok(end)
    }

    /// Refuses a write the object model forbids. The key is only looked up to report it.
    fn check_writable(&self, st: &State, offset: u64, n: u64, append_mode: bool) -> FsResult<()> {
        if st.deleted {
            return Err(FsError::Stale);
        }
        let end = st.position + st.local();
        if !append_mode && offset != end {
            let key = self.key();
            tracing::warn!(
                key,
                offset,
                end,
                "refused a write that is not at the end of the object"
            );
            return Err(FsError::NotPermitted(format!(
                "write at offset {offset} of {key:?}, whose end is {end}: objects can only be appended to"
            )));
        }
        if end + n > MAX_OBJECT_SIZE {
            return Err(FsError::TooLarge);
        }
        Ok(())
    }

    /// Sends everything up to `mark.last_end` and waits for it. Reports a failure of any byte
    /// this handle wrote since its previous flush.
    pub async fn flush(&self, mark: &mut WriteMark) -> FsResult<()> {
        let target = mark.last_end;
        let mut rx = self.progress.subscribe();
        loop {
            {
                let mut st = self.lock();
                if st.finished >= target {
                    let failed = st
                        .failures
                        .iter()
                        .find(|f| f.end_seq > mark.flushed && f.first_seq < target)
                        .cloned();
                    mark.flushed = mark.flushed.max(target);
                    return match failed {
                        Some(f) => Err(f.error),
                        None => Ok(()),
                    };
                }
                st.flush_wanted = true;
            }
            self.wake.notify_one();
            if rx.changed().await.is_err() {
                return Err(FsError::Io("append stream stopped".into()));
            }
        }
    }

    /// Sends everything buffered and waits (used at unmount and SIGTERM). Returns the failures
    /// of this stream so the caller can report each with its byte range.
    pub async fn drain(&self) -> Vec<Failure> {
        let (target, since) = {
            let st = self.lock();
            (st.accepted, st.drained)
        };
        let mut mark = WriteMark {
            last_end: target,
            flushed: 0,
        };
        let _ = self.flush(&mut mark).await;
        let mut st = self.lock();
        st.drained = st.drained.max(target);
        // Each failure is reported by one drain only.
        st.failures
            .iter()
            .filter(|f| f.end_seq > since && f.first_seq < target)
            .cloned()
            .collect()
    }

    /// The object was deleted through this mount: buffered bytes are dropped and every later
    /// write or flush of its handles fails with ESTALE.
    pub fn mark_deleted(&self) {
        let mut st = self.lock();
        st.deleted = true;
        let dropped = st.pending_len;
        st.pending.clear();
        st.pending_len = 0;
        st.oldest = None;
        if st.accepted > st.finished {
            let first_seq = st.finished;
            let end_seq = st.accepted;
            st.failures.push(Failure {
                first_seq,
                end_seq,
                error: FsError::Stale,
            });
            // Nothing more will be sent; a chunk in flight finishes on its own.
            st.finished = end_seq;
        }
        drop(st);
        self.budget.release(dropped);
        self.progress.send_modify(|v| *v += 1);
    }

    /// Truncate-to-zero: drops buffered bytes, then deletes the object and recreates it empty
    /// as Appendable, with no chunk in flight meanwhile.
    pub async fn replace_with_empty(&self) -> FsResult<()> {
        let key = self.key();
        let _sending = self.send_lock.lock().await;
        let dropped = {
            let mut st = self.lock();
            let d = st.pending_len;
            st.pending.clear();
            st.pending_len = 0;
            st.oldest = None;
            st.finished = st.accepted;
            d
        };
        self.budget.release(dropped);
        self.client.delete_object(&key).await?;
        let out = self
            .client
            .append_object(&key, 0, Bytes::new(), &self.config.create)
            .await?;
        if out.next_position != 0 {
            return Err(FsError::Io(format!(
                "recreating {:?} returned next position {}",
                key, out.next_position
            )));
        }
        let mut st = self.lock();
        st.position = 0;
        st.crc = 0;
        st.deleted = false;
        drop(st);
        self.progress.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Bytes at `offset..offset+len` that are buffered or in flight on this mount (offsets
    /// at or past the confirmed remote length), for read-your-writes.
    pub fn read_local(&self, offset: u64, len: u64) -> Option<Bytes> {
        let st = self.lock();
        if offset < st.position {
            return None;
        }
        let mut skip = offset - st.position;
        let mut want = len;
        let mut out = BytesMut::new();
        let pieces = st
            .inflight
            .iter()
            .cloned()
            .chain(st.pending.iter().map(|p| p.data.clone()));
        for piece in pieces {
            if want == 0 {
                break;
            }
            let plen = piece.len() as u64;
            if skip >= plen {
                skip -= plen;
                continue;
            }
            let take = (plen - skip).min(want);
            out.extend_from_slice(&piece[skip as usize..(skip + take) as usize]);
            skip = 0;
            want -= take;
        }
        Some(out.freeze())
    }

    /// Asks the uploader to finish once everything is sent.
    pub fn stop_when_idle(&self) {
        self.lock().stopping = true;
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        loop {
            let sleep_for = {
                let st = self.lock();
                if st.pending.is_empty() {
                    if st.stopping {
                        return;
                    }
                    None
                } else {
                    let age_due = st
                        .oldest
                        .map(|t| self.config.flush_interval.saturating_sub(t.elapsed()))
                        .unwrap_or_default();
                    if st.flush_wanted
                        || st.stopping
                        || st.pending_len >= self.config.chunk_size
                        || age_due.is_zero()
                    {
                        Some(Duration::ZERO)
                    } else {
                        Some(age_due)
                    }
                }
            };
            match sleep_for {
                Some(d) if d.is_zero() => self.send_one().await,
                Some(d) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    fn take_chunk(&self, st: &mut State) -> Option<Chunk> {
        let first = st.pending.front()?;
        let append_mode = first.append_mode;
        let limit = self.config.chunk_size.max(1);
        let mut parts: Vec<Bytes> = Vec::new();
        let mut total = 0u64;
        while let Some(p) = st.pending.front_mut() {
            if p.append_mode != append_mode {
                break;
            }
            let plen = p.data.len() as u64;
            if total + plen <= limit {
                total += plen;
                parts.push(st.pending.pop_front().map(|p| p.data).unwrap_or_default());
            } else if total == 0 {
                // One write larger than a chunk: the only case where a write is split.
                let head = p.data.split_to(limit as usize);
                total = head.len() as u64;
                parts.push(head);
                break;
            } else {
                break;
            }
        }
        st.pending_len -= total;
        if st.pending.is_empty() {
            st.oldest = None;
            st.flush_wanted = false;
        } else {
            // The rest keeps waiting for its own trigger, measured from now.
            st.oldest = Some(Instant::now());
        }
        let data = if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            let mut b = BytesMut::with_capacity(total as usize);
            for p in parts {
                b.extend_from_slice(&p);
            }
            b.freeze()
        };
        st.inflight = Some(data.clone());
        let end_seq = st.finished + total;
        Some(Chunk {
            data,
            append_mode,
            end_seq,
        })
    }

    async fn send_one(&self) {
        let _sending = self.send_lock.lock().await;
        let chunk = {
            let mut st = self.lock();
            match self.take_chunk(&mut st) {
                Some(c) => c,
                None => return,
            }
        };
        let n = chunk.data.len() as u64;
        let result = self.append_exactly_once(&chunk).await;
        let mut st = self.lock();
        st.inflight = None;
        match result {
            Ok((position, crc)) => {
                st.position = position;
                st.crc = crc;
            }
            Err(error) => {
                tracing::error!(
                    key = %self.key(),
                    bytes = n,
                    position = st.position,
                    error = %error,
                    "append failed; these bytes are not on OSS"
                );
                st.failures.push(Failure {
                    first_seq: chunk.end_seq - n,
                    end_seq: chunk.end_seq,
                    error,
                });
            }
        }
        st.finished = st.finished.max(chunk.end_seq);
        drop(st);
        self.budget.release(n);
        self.progress.send_modify(|v| *v += 1);
    }

    /// design.md's exactly-once rule. Returns the object's confirmed (length, CRC) after the
    /// chunk landed.
    ///
    /// A 409 answer is definite (that attempt did nothing), so only an earlier *ambiguous*
    /// attempt can have landed; the chunk counts as landed only if such an attempt was made at
    /// the position where its bytes are now found. Without that rule, a 409 caused by another
    /// writer appending identical bytes (two hosts logging the same heartbeat line) would be
    /// mistaken for our own success and the line lost.
    async fn append_exactly_once(&self, chunk: &Chunk) -> FsResult<(u64, u64)> {
        let key = self.key();
        let started = Instant::now();
        let n = chunk.data.len() as u64;
        let chunk_crc = crc64::checksum(&chunk.data);
        let (mut position, mut crc) = self.remote();
        // Position (and CRC before it) of an attempt whose outcome is unknown.
        let mut ambiguous: Option<(u64, u64)> = None;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if position + n > MAX_OBJECT_SIZE {
                return Err(FsError::TooLarge);
            }
            let expected_crc = crc64::combine(crc, chunk_crc, n);
            let opts = if position == 0 {
                self.config.create.clone()
            } else {
                CreateOptions::default()
            };
            let outcome = self
                .client
                .append_object(&key, position, chunk.data.clone(), &opts)
                .await;
            let cause = match outcome {
                Ok(out) => {
                    if out.next_position != position + n {
                        return Err(FsError::Io(format!(
                            "AppendObject {:?} at {position} of {n} bytes returned next position {} [request id {}]",
                            key, out.next_position, out.request_id
                        )));
                    }
                    return match out.crc64 {
                        Some(c) if c != expected_crc => Err(FsError::Io(format!(
                            "AppendObject {:?} at {position}: CRC-64 {c} from OSS, {expected_crc} expected: data corrupted [request id {}]",
                            key, out.request_id
                        ))),
                        _ => Ok((position + n, expected_crc)),
                    };
                }
                Err(e) if e.is_ambiguous() => {
                    ambiguous = Some((position, crc));
                    e
                }
                Err(e) if e.code() == Some("PositionNotEqualToLength") => e,
                Err(e) => return Err(e.into()),
            };
            tracing::warn!(key = %key, position, bytes = n, attempt, error = %cause, "append outcome unclear; checking the object");
            let meta = self.head_until_answered(started).await?;
            if meta.object_type != Some(ObjectType::Appendable) {
                return Err(FsError::NotPermitted(format!(
                    "{:?} is no longer an appendable object",
                    key
                )));
            }
            let len = meta.next_append_position.unwrap_or(meta.size);
            if let Some((at, crc_before)) = ambiguous {
                if self
                    .landed_at(at, crc_before, chunk_crc, n, len, meta.crc64)
                    .await?
                {
                    tracing::info!(key = %key, position = at, bytes = n, "the earlier attempt had landed");
                    let end_crc = if len == at + n {
                        crc64::combine(crc_before, chunk_crc, n)
                    } else {
                        meta.crc64.unwrap_or(0)
                    };
                    return Ok((len, end_crc));
                }
            }
            let unchanged = len == position && meta.crc64.is_none_or(|c| c == crc);
            if !unchanged {
                if !chunk.append_mode {
                    return Err(FsError::Io(format!(
                        "{:?} changed under a positional writer (expected length {position}, found {len})",
                        key
                    )));
                }
                // Another writer appended first: move to the new end.
                position = len;
                crc = meta.crc64.unwrap_or(0);
            }
            if started.elapsed() > self.config.give_up_after {
                return Err(FsError::Io(format!(
                    "gave up appending to {:?} after {attempt} attempts: {cause}",
                    key
                )));
            }
            // Back off only when nothing moved (the server is in trouble). When another writer
            // moved the end, retry at once: it made progress, so nothing is stuck, and any pause
            // lets a busy writer move the end again, so this one kept losing the race and was
            // starved (two mounts appending in loops: one waited for the other to finish).
            if unchanged {
                let backoff = Duration::from_millis((20u64 << attempt.min(6)).min(1000));
                tokio::time::sleep(backoff).await;
            }
        }
    }

    /// Whether our chunk (`n` bytes with CRC `chunk_crc`) sits at `at` in the object, whose
    /// length is now `len`: by the whole-object CRC when it ends there, else by reading it back.
    async fn landed_at(
        &self,
        at: u64,
        crc_before: u64,
        chunk_crc: u64,
        n: u64,
        len: u64,
        head_crc: Option<u64>,
    ) -> FsResult<bool> {
        let key = self.key();
        if len < at + n {
            return Ok(false);
        }
        if len == at + n {
            return Ok(head_crc.is_none_or(|c| c == crc64::combine(crc_before, chunk_crc, n)));
        }
        if n == 0 {
            return Ok(true);
        }
        let range = crate::client::RangeSpec::FromTo(at, at + n - 1);
        let data = self.client.get_object_bytes(&key, Some(range)).await?.data;
        Ok(data.len() as u64 == n && crc64::checksum(&data) == chunk_crc)
    }

    async fn head_until_answered(&self, started: Instant) -> FsResult<crate::oss::ObjectMeta> {
        let key = self.key();
        let mut wait = Duration::from_millis(20);
        loop {
            match self.client.head_object(&key).await {
                Ok(m) => return Ok(m),
                Err(e) if e.is_no_such_key() => return Err(FsError::Stale),
                Err(e) if started.elapsed() > self.config.give_up_after => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "HEAD after an unclear append failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
