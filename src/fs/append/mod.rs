//! Append streams: one per object being written on this mount, shared by every handle writing
//! it. Writes are buffered whole and sent as AppendObject chunks one at a time (the position
//! rule forbids pipelining) when the buffer reaches the chunk size, when its oldest byte
//! reaches the flush interval, when a handle flushes, when writers wait for room (pressure),
//! and at shutdown. Each chunk goes through [`exactly_once`], so it lands exactly once or
//! is saved to the [`rescue`] file.
//!
//! Lifecycle of a stream: *running* (writes accepted) → *closed for writes* (the mount is
//! draining: later writes fail with `EIO`, nothing acknowledged is dropped) → stopped (the
//! uploader ends once nothing is left). A stream whose object was deleted (here or elsewhere)
//! is *gone*: its handles get `ESTALE`.
//!
//! An acknowledged byte is the daemon's to deliver: when a chunk cannot be appended within the
//! retry budget, it and every byte buffered behind it go to the rescue file, so the object
//! keeps a clean prefix and no later byte lands after the hole. The next write or open for
//! writing of the object then fails with `EIO` (a writer is told); after that, appending
//! resumes at the object's end.

pub mod budget;
pub mod contention;
pub mod exactly_once;
pub mod rescue;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{watch, Notify};

use self::budget::DirtyBudget;
use self::rescue::{Outcome, Rescue};
use super::error::{FsError, FsResult};
use super::store::Store;
use crate::client::CreateOptions;
use crate::oss::MAX_OBJECT_SIZE;

/// Settings shared by every stream of a mount.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub chunk_size: u64,
    pub flush_interval: Duration,
    /// Creation settings sent when a stream (re)creates its object at position 0.
    pub create: CreateOptions,
    /// How long one chunk is retried (outages included) before it goes to the rescue file.
    pub give_up_after: Duration,
}

/// What every stream of a mount shares.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub config: Arc<StreamConfig>,
    pub budget: Arc<DirtyBudget>,
    pub rescue: Arc<Rescue>,
    /// Turns true when the shutdown grace ends: attempts in flight are cut off.
    pub cancel: watch::Receiver<bool>,
}

struct Pending {
    data: Bytes,
    /// Written with O_APPEND: may move to a new end if another writer got there first.
    append_mode: bool,
    /// The handle that wrote it.
    writer: u64,
}

struct Chunk {
    data: Bytes,
    append_mode: bool,
    writers: Vec<u64>,
    /// Sequence number just past this chunk's last byte.
    end_seq: u64,
}

/// Accepted bytes that did not reach OSS, kept so flushes of the handles that wrote them can
/// report it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub first_seq: u64,
    pub end_seq: u64,
    pub error: FsError,
    pub writers: Vec<u64>,
}

struct State {
    /// The object's length and CRC as last confirmed by OSS.
    position: u64,
    crc: u64,
    pending: VecDeque<Pending>,
    pending_len: u64,
    /// The chunk being sent, still readable locally.
    inflight: Option<Bytes>,
    /// Bytes ever accepted / finished (appended, rescued or dropped), as sequence numbers.
    accepted: u64,
    finished: u64,
    oldest: Option<Instant>,
    /// `oldest` of the chunk in flight when it was taken, for the age of the oldest unsent
    /// byte (metrics, backlog warning): a stalled send must keep showing its age.
    inflight_since: Option<Instant>,
    flush_wanted: bool,
    failures: Vec<Failure>,
    /// Bytes were rescued and no writer has been told yet.
    hole: bool,
    /// The mount is draining: no more writes.
    closed: bool,
    /// The object was deleted: handles get ESTALE.
    gone: bool,
    /// The uploader ends once nothing is pending.
    stopping: bool,
    /// Whether the uploader task is alive (a write after it ended starts it again).
    running: bool,
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
    shared: Arc<Shared>,
    state: Mutex<State>,
    wake: Notify,
    progress: watch::Sender<u64>,
    /// Held while a chunk is being sent or the object is being renamed, replaced or deleted;
    /// it guards what is known of other writers of the object.
    send_lock: tokio::sync::Mutex<contention::Contention>,
    /// This stream, to start its uploader again.
    this: std::sync::Weak<AppendStream>,
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
    pub fn start(key: String, position: u64, crc: u64, shared: Arc<Shared>) -> Arc<Self> {
        let (progress, _) = watch::channel(0);
        let stream = Arc::new_cyclic(|this| AppendStream {
            this: this.clone(),
            key: Mutex::new(key),
            shared,
            state: Mutex::new(State {
                position,
                crc,
                pending: VecDeque::new(),
                pending_len: 0,
                inflight: None,
                accepted: 0,
                finished: 0,
                oldest: None,
                inflight_since: None,
                flush_wanted: false,
                failures: Vec::new(),
                hole: false,
                closed: false,
                gone: false,
                stopping: false,
                running: true,
            }),
            wake: Notify::new(),
            progress,
            send_lock: tokio::sync::Mutex::new(contention::Contention::default()),
        });
        stream.spawn_uploader();
        stream
    }

    fn spawn_uploader(self: &Arc<Self>) {
        // Subscribed here, not in the task: a writer may wait for room before the task first
        // runs, and that pressure must not count as already seen.
        let pressure = self.shared.budget.pressure();
        tokio::spawn(self.clone().run(pressure));
    }

    pub fn key(&self) -> String {
        self.key.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Holds back sending (the file is being renamed or deleted); writes keep being buffered.
    /// Waits for a chunk in flight to finish first.
    pub async fn pause(&self) -> tokio::sync::MutexGuard<'_, contention::Contention> {
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

    /// When the oldest byte not yet confirmed by OSS (in flight or buffered) was buffered.
    pub fn oldest_unsent(&self) -> Option<Instant> {
        let st = self.lock();
        st.inflight.as_ref().and(st.inflight_since).or(st.oldest)
    }

    /// Whether the object is known deleted (here or elsewhere).
    pub fn is_gone(&self) -> bool {
        self.lock().gone
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

    /// Whether a new handle may write: tells the first opener about a hole (once), refuses
    /// while shutting down or when the object is gone.
    pub fn check_open(&self) -> FsResult<()> {
        let mut st = self.lock();
        self.told(&mut st)
    }

    fn told(&self, st: &mut State) -> FsResult<()> {
        if st.gone {
            return Err(FsError::Stale);
        }
        if st.closed {
            return Err(FsError::ShuttingDown);
        }
        if st.hole {
            st.hole = false;
            return Err(FsError::Hole(self.key()));
        }
        Ok(())
    }

    /// As [`write_bytes`](Self::write_bytes) for writer 0, copying `data` (tests, tools).
    pub async fn write(&self, offset: u64, data: &[u8], append_mode: bool) -> FsResult<u64> {
        self.write_bytes(0, offset, Bytes::copy_from_slice(data), append_mode)
            .await
    }

    /// Accepts one write by handle `writer`, taking the buffer without copying it. With
    /// `append_mode` (O_APPEND) it goes at the object's real end; otherwise `offset` must be
    /// the current end. Returns the write's end sequence number.
    pub async fn write_bytes(
        &self,
        writer: u64,
        offset: u64,
        data: Bytes,
        append_mode: bool,
    ) -> FsResult<u64> {
        let n = data.len() as u64;
        {
            let mut st = self.lock();
            self.told(&mut st)?;
            self.check_writable(&st, offset, n, append_mode)?;
            if n == 0 {
                return Ok(st.accepted);
            }
        }
        self.shared.budget.acquire(n).await;
        let mut st = self.lock();
        // Checked again: the state may have moved while waiting for room.
        let ok = self
            .told(&mut st)
            .and_then(|()| self.check_writable(&st, offset, n, append_mode));
        if let Err(e) = ok {
            drop(st);
            self.shared.budget.release(n);
            return Err(e);
        }
        st.pending.push_back(Pending {
            data,
            append_mode,
            writer,
        });
        // A handle still writes after the stream was let go (its inode forgotten or its
        // object replaced elsewhere): keep sending.
        st.stopping = false;
        if !st.running {
            st.running = true;
            if let Some(this) = self.this.upgrade() {
                this.spawn_uploader();
            }
        }
        st.pending_len += n;
        st.accepted += n;
        // The first byte of a new batch starts the flush-interval clock; the uploader sleeps
        // without a deadline while nothing is pending, so it must be told.
        let first = st.oldest.is_none();
        st.oldest.get_or_insert_with(Instant::now);
        let end = st.accepted;
        let full = st.pending_len >= self.shared.config.chunk_size;
        drop(st);
        if full || first {
            self.wake.notify_one();
        }
        Ok(end)
    }

    /// Refuses a write the object model forbids. The key is only looked up to report it.
    fn check_writable(&self, st: &State, offset: u64, n: u64, append_mode: bool) -> FsResult<()> {
        let end = st.position + st.local();
        if !append_mode && offset != end {
            let key = self.key();
            tracing::info!(
                key,
                offset,
                end,
                errno = "EPERM",
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
    /// handle `writer` wrote since its previous flush, and only those.
    pub async fn flush(&self, writer: u64, mark: &mut WriteMark) -> FsResult<()> {
        let target = mark.last_end;
        let mut rx = self.progress.subscribe();
        loop {
            {
                let mut st = self.lock();
                if st.finished >= target {
                    let failed = st
                        .failures
                        .iter()
                        .find(|f| {
                            f.writers.contains(&writer)
                                && f.end_seq > mark.flushed
                                && f.first_seq < target
                        })
                        .map(|f| f.error.clone());
                    mark.flushed = mark.flushed.max(target);
                    return match failed {
                        Some(e) => Err(e),
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

    /// A handle closed: its failures need not be kept for it any more.
    pub fn forget_writer(&self, writer: u64) {
        let mut st = self.lock();
        for f in &mut st.failures {
            f.writers.retain(|w| *w != writer);
        }
        st.failures.retain(|f| !f.writers.is_empty());
    }

    /// Sends everything accepted so far and waits until it is appended or rescued.
    pub async fn drain(&self) {
        let target = self.lock().accepted;
        let mut mark = WriteMark {
            last_end: target,
            flushed: target,
        };
        let _ = self.flush(u64::MAX, &mut mark).await;
    }

    /// The mount is draining: writes from now on fail with `EIO`; what was accepted is still
    /// sent.
    pub fn close_for_writes(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// The object was deleted through this mount (the stream is paused by the caller): buffered
    /// bytes are dropped (the user deleted them) and every later write or flush of its handles
    /// fails with ESTALE.
    pub fn mark_deleted(&self) {
        let mut st = self.lock();
        st.gone = true;
        let dropped = st.pending_len;
        let writers: Vec<u64> = st.pending.iter().map(|p| p.writer).collect();
        st.pending.clear();
        st.pending_len = 0;
        st.oldest = None;
        if st.accepted > st.finished {
            let (first_seq, end_seq) = (st.finished, st.accepted);
            st.failures.push(Failure {
                first_seq,
                end_seq,
                error: FsError::Stale,
                writers,
            });
            st.finished = end_seq;
        }
        st.stopping = true;
        drop(st);
        self.shared.budget.release(dropped);
        self.progress.send_modify(|v| *v += 1);
        self.wake.notify_one();
    }

    /// Truncate-to-zero: deletes the object, drops buffered bytes (the truncate discards
    /// them) and recreates it empty as Appendable (exactly once), with no chunk in flight
    /// meanwhile. A failed delete leaves everything as it was.
    pub async fn replace_with_empty(&self) -> FsResult<()> {
        let key = self.key();
        let _sending = self.send_lock.lock().await;
        // Delete first: if that fails, nothing was truncated and the buffered bytes stay.
        self.shared.store.delete(&key).await?;
        let dropped = {
            let mut st = self.lock();
            let d = st.pending_len;
            st.pending.clear();
            st.pending_len = 0;
            st.oldest = None;
            st.finished = st.accepted;
            d
        };
        self.shared.budget.release(dropped);
        self.progress.send_modify(|v| *v += 1);
        let empty = Bytes::new();
        let mut cancel = self.shared.cancel.clone();
        // Another host may have created it again meanwhile (appending to it): that object is
        // the truncated file's successor, so join its end.
        let landed = exactly_once::append(
            exactly_once::Job {
                store: self.shared.store.as_ref(),
                key: &key,
                create: &self.shared.config.create,
                position: 0,
                crc: 0,
                data: &empty,
                follow_end: true,
                deadline: Instant::now() + self.shared.config.give_up_after,
            },
            &mut cancel,
        )
        .await
        .map_err(|f| f.error)?;
        let mut st = self.lock();
        st.position = landed.position;
        st.crc = landed.crc;
        st.gone = false;
        st.hole = false;
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

    async fn run(self: Arc<Self>, mut pressure: watch::Receiver<u64>) {
        let mut cancel = self.shared.cancel.clone();
        loop {
            let sleep_for = {
                let mut st = self.lock();
                if st.pending.is_empty() {
                    if st.stopping {
                        st.running = false;
                        return;
                    }
                    None
                } else {
                    let age_due = st
                        .oldest
                        .map(|t| {
                            self.shared
                                .config
                                .flush_interval
                                .saturating_sub(t.elapsed())
                        })
                        .unwrap_or_default();
                    if st.flush_wanted
                        || st.stopping
                        || st.closed
                        || *cancel.borrow()
                        || st.pending_len >= self.shared.config.chunk_size
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
                        // A writer waits for room: send now rather than at the interval.
                        Ok(()) = pressure.changed() => { self.lock().flush_wanted = true; }
                        Ok(()) = cancel.changed() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        Ok(()) = cancel.changed() => {}
                    }
                }
            }
        }
    }

    fn take_chunk(&self, st: &mut State) -> Option<Chunk> {
        let first = st.pending.front()?;
        let append_mode = first.append_mode;
        let limit = self.shared.config.chunk_size.max(1);
        let mut parts: Vec<Bytes> = Vec::new();
        let mut writers: Vec<u64> = Vec::new();
        let mut total = 0u64;
        while let Some(p) = st.pending.front_mut() {
            if p.append_mode != append_mode {
                break;
            }
            let plen = p.data.len() as u64;
            if !writers.contains(&p.writer) {
                writers.push(p.writer);
            }
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
        st.inflight_since = st.oldest;
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
            writers,
            end_seq,
        })
    }

    async fn send_one(&self) {
        let mut sending = self.send_lock.lock().await;
        if let Some(pause) = sending.before_send() {
            // Others are appending and this writer had its run: step aside, cancellably.
            let mut cancel = self.shared.cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                Ok(_) = cancel.wait_for(|c| *c) => {}
            }
        }
        let (chunk, position, crc) = {
            let mut st = self.lock();
            if st.gone {
                return;
            }
            match self.take_chunk(&mut st) {
                Some(c) => (c, st.position, st.crc),
                None => return,
            }
        };
        let key = self.key();
        let n = chunk.data.len() as u64;
        let mut cancel = self.shared.cancel.clone();
        let result = exactly_once::append(
            exactly_once::Job {
                store: self.shared.store.as_ref(),
                key: &key,
                create: &self.shared.config.create,
                position,
                crc,
                data: &chunk.data,
                follow_end: chunk.append_mode,
                deadline: Instant::now() + self.shared.config.give_up_after,
            },
            &mut cancel,
        )
        .await;
        let mut st = self.lock();
        st.inflight = None;
        match result {
            Ok(landed) => {
                sending.landed(landed.lost_races, landed.round_trip);
                st.position = landed.position;
                st.crc = landed.crc;
                st.finished = st.finished.max(chunk.end_seq);
                drop(st);
                self.shared.budget.release(n);
            }
            Err(failed) => {
                // The chunk and everything behind it leave together: no later byte may land
                // after the hole before a writer has been told. The hole is marked first, so
                // writes arriving while the bytes are saved are refused; the bytes count as
                // finished (and a flush reports them) only once they are in the rescue file.
                let rest: Vec<Pending> = st.pending.drain(..).collect();
                let rest_len = st.pending_len;
                st.pending_len = 0;
                st.oldest = None;
                st.flush_wanted = false;
                st.hole = true;
                if matches!(failed.error, FsError::Stale) {
                    st.gone = true;
                }
                let end_seq = st.accepted;
                drop(st);
                self.rescue(&key, &chunk.data, &rest, &failed);
                let mut writers = chunk.writers.clone();
                for p in &rest {
                    if !writers.contains(&p.writer) {
                        writers.push(p.writer);
                    }
                }
                let mut st = self.lock();
                st.failures.push(Failure {
                    first_seq: chunk.end_seq - n,
                    end_seq,
                    error: failed.error.clone(),
                    writers,
                });
                st.finished = st.finished.max(end_seq);
                drop(st);
                self.shared.budget.release(n + rest_len);
            }
        }
        self.progress.send_modify(|v| *v += 1);
    }

    /// Saves a failed chunk and the bytes behind it, and logs where they went.
    fn rescue(&self, key: &str, chunk: &Bytes, rest: &[Pending], failed: &exactly_once::Failed) {
        let reason = failed.error.to_string();
        let mut rest_bytes = BytesMut::new();
        for p in rest {
            rest_bytes.extend_from_slice(&p.data);
        }
        let n = chunk.len() as u64;
        let saved = self
            .shared
            .rescue
            .save(key, failed.position, chunk, failed.outcome, &reason)
            .and_then(|p| {
                if rest_bytes.is_empty() {
                    Ok(p)
                } else {
                    self.shared.rescue.save(
                        key,
                        failed.position + n,
                        &rest_bytes,
                        Outcome::NotAppended,
                        "buffered behind a chunk that could not be appended",
                    )
                }
            });
        let outcome = match failed.outcome {
            Outcome::NotAppended => "not appended",
            Outcome::Unknown => "outcome unknown (may be on OSS: compare length and CRC-64)",
        };
        match saved {
            Ok(path) => tracing::error!(
                key,
                position = failed.position,
                bytes = n + rest_bytes.len() as u64,
                rescue_file = %path.display(),
                errno = "EIO",
                error = %failed.error,
                "acknowledged bytes could not be appended ({outcome}); saved to the rescue file. The next write or open of this file fails with EIO"
            ),
            Err(e) => tracing::error!(
                key,
                position = failed.position,
                bytes = n + rest_bytes.len() as u64,
                errno = "EIO",
                error = %failed.error,
                rescue_error = %e,
                "acknowledged bytes could not be appended ({outcome}) and the rescue file could not be written: THEY ARE LOST"
            ),
        }
    }
}
