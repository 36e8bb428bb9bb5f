//! design.md's exactly-once rule as one function, used by every path that appends: the append
//! streams, `create` (a zero-length append at 0) and rename's re-append of an object.
//!
//! AppendObject is not idempotent. An attempt that provably did not apply (connection
//! refused, body not fully sent, a 409, a definite error) is simply tried again within the
//! budget. An attempt whose request went out whole without an answer (reset, timeout, lost
//! answer, 5xx) is *ambiguous*: before anything is sent again, HEAD tells the object's length
//! and CRC-64, and the chunk counts as landed only if an ambiguous attempt was made at the
//! position where its bytes are now found (by the whole-object CRC when it ends there, else by
//! reading the bytes back). A 409 alone is never taken as proof: another host appending
//! identical bytes (two hosts logging the same heartbeat) would be mistaken for our success.
//!
//! The one case the protocol cannot decide: an ambiguous attempt that did not apply, followed
//! by another host appending the very same bytes at the very same position. Both hosts then
//! believe the bytes are theirs, and one copy is missing. When foreign appends are known
//! (a 409, or the object grew past our attempt) such a decision is logged at WARN.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::rescue::Outcome;
use crate::client::{ClientError, CreateOptions};
use crate::fs::error::FsError;
use crate::fs::store::Store;
use crate::oss::{crc64, ObjectType, MAX_OBJECT_SIZE};

/// One chunk to append exactly once.
pub struct Job<'a> {
    pub store: &'a dyn Store,
    pub key: &'a str,
    /// Sent when the append creates the object (position 0).
    pub create: &'a CreateOptions,
    /// The object's length and CRC-64 as last confirmed.
    pub position: u64,
    pub crc: u64,
    pub data: &'a Bytes,
    /// `O_APPEND`: when another writer moved the end, append at the new end. Otherwise the
    /// object must still end at `position` (a positional writer), or the chunk fails.
    pub follow_end: bool,
    /// No new attempt starts after this.
    pub deadline: Instant,
}

/// Why a chunk could not be appended, and whether its bytes may be on OSS anyway.
#[derive(Debug, Clone)]
pub struct Failed {
    pub error: FsError,
    pub outcome: Outcome,
    /// Where the bytes were meant to go last.
    pub position: u64,
}

/// Where the object ends once the chunk landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub position: u64,
    pub crc: u64,
    /// Where the chunk's first byte went.
    pub at: u64,
    /// 409s this chunk got before it landed.
    pub lost_races: u32,
    /// How long the last attempt took.
    pub round_trip: Duration,
}

/// Errors after which no attempt can succeed: the error to report, or the cause back.
fn definite(e: ClientError) -> Result<FsError, ClientError> {
    match e.code() {
        Some("ObjectNotAppendable" | "FileImmutable") => Ok(FsError::NotPermitted(format!(
            "{} is not an appendable object",
            e.oss().map(|o| format!("{:?}", o.key)).unwrap_or_default()
        ))),
        Some("InvalidArgument" | "InvalidObjectName" | "EntityTooLarge" | "NoSuchBucket") => {
            Ok(FsError::from(e))
        }
        _ if matches!(
            e,
            ClientError::InvalidKey { .. } | ClientError::InvalidArgument(_)
        ) =>
        {
            Ok(FsError::from(e))
        }
        _ => Err(e),
    }
}

/// Waits for `fut` unless `cancel` turns true first (the shutdown grace ended).
async fn or_cancel<T>(
    cancel: &mut watch::Receiver<bool>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    if *cancel.borrow() {
        return None;
    }
    tokio::select! {
        v = fut => Some(v),
        // Err (no sender: nobody can cancel) disables this branch.
        Ok(_) = cancel.wait_for(|c| *c) => None,
    }
}

fn backoff(attempt: u32) -> Duration {
    let ms = (50u64 << attempt.min(5)).min(2000);
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2))
}

/// Appends `job.data` exactly once, or says why not.
pub async fn append(job: Job<'_>, cancel: &mut watch::Receiver<bool>) -> Result<Landed, Failed> {
    let key = job.key;
    let n = job.data.len() as u64;
    let chunk_crc = crc64::checksum(job.data);
    // The object's CRC-64 at `position`, unless a 409 moved us to an end whose CRC we do not
    // know: then the body's integrity is checked by OSS (Content-MD5) instead, and the
    // answer's CRC is adopted.
    let (mut position, mut crc) = (job.position, Some(job.crc));
    // Position (and CRC before it) of attempts whose outcome is unknown.
    let mut ambiguous: Vec<(u64, Option<u64>)> = Vec::new();
    // Another writer is known to append to this object.
    let mut foreign = false;
    let mut attempt = 0u32;
    // 409s lost by this chunk so far (for the spreading pause after each).
    let mut conflicts = 0u32;
    let mut last_error: Option<ClientError> = None;
    let fail = |error: FsError, ambiguous: &[(u64, Option<u64>)], position| Failed {
        error,
        outcome: if ambiguous.is_empty() {
            Outcome::NotAppended
        } else {
            Outcome::Unknown
        },
        position,
    };
    loop {
        attempt += 1;
        if position + n > MAX_OBJECT_SIZE {
            return Err(fail(FsError::TooLarge, &ambiguous, position));
        }
        if attempt > 1 && Instant::now() > job.deadline {
            let why = last_error.map_or_else(|| "no answer".to_string(), |e| e.to_string());
            return Err(fail(
                FsError::Io(format!(
                    "gave up appending {n} bytes to {key:?} after {} attempts: {why}",
                    attempt - 1
                )),
                &ambiguous,
                position,
            ));
        }
        if *cancel.borrow() {
            return Err(fail(FsError::ShuttingDown, &ambiguous, position));
        }
        let expected_crc = crc.map(|c| crc64::combine(c, chunk_crc, n));
        let opts = if position == 0 {
            job.create.clone()
        } else {
            CreateOptions::default()
        };
        let send = async {
            match crc {
                Some(_) => {
                    job.store
                        .append(key, position, job.data.clone(), &opts)
                        .await
                }
                None => {
                    job.store
                        .append_verified(key, position, job.data.clone(), &opts)
                        .await
                }
            }
        };
        let sent = Instant::now();
        let Some(outcome) = or_cancel(cancel, send).await else {
            // Cut off mid-request: it may still apply.
            ambiguous.push((position, crc));
            return Err(fail(FsError::ShuttingDown, &ambiguous, position));
        };
        let cause = match outcome {
            Ok(out) => {
                if out.next_position != position + n {
                    return Err(Failed {
                        error: FsError::Io(format!(
                            "AppendObject {key:?} at {position} of {n} bytes answered next position {} [request id {}]: the answer does not match the request",
                            out.next_position, out.request_id
                        )),
                        outcome: Outcome::Unknown,
                        position,
                    });
                }
                return match (expected_crc, out.crc64) {
                    (Some(e), Some(c)) if c != e => Err(Failed {
                        error: FsError::Io(format!(
                            "AppendObject {key:?} at {position}: OSS has CRC-64 {c}, {e} expected: the object does not hold what was sent [request id {}]",
                            out.request_id
                        )),
                        outcome: Outcome::Unknown,
                        position,
                    }),
                    (Some(e), _) => Ok(Landed {
                        position: position + n,
                        crc: e,
                        at: position,
                        lost_races: conflicts,
                        round_trip: sent.elapsed(),
                    }),
                    // The body was checked by Content-MD5; the object's CRC is OSS's word.
                    (None, c) => Ok(Landed {
                        position: position + n,
                        crc: c.unwrap_or(0),
                        at: position,
                        lost_races: conflicts,
                        round_trip: sent.elapsed(),
                    }),
                };
            }
            Err(e) => e,
        };
        let cause = match definite(cause) {
            Ok(err) => return Err(fail(err, &ambiguous, position)),
            Err(cause) => cause,
        };
        let conflict = cause.code() == Some("PositionNotEqualToLength");
        if conflict {
            foreign = true;
            // Another writer moved the end and no attempt of ours can have landed: the 409
            // says where the end is, so go there without asking HEAD (the CRC there is
            // unknown; the next attempt carries Content-MD5 instead).
            if let (true, true, Some(len)) = (
                ambiguous.is_empty(),
                job.follow_end,
                cause.next_append_position(),
            ) {
                position = len;
                crc = None;
                last_error = Some(cause);
                conflicts += 1;
                // Every writer that lost this race learned the same new end at once.
                let pause = super::contention::after_lost_race(sent.elapsed(), conflicts);
                // (A zero sleep would still wait for the timer's next millisecond tick.)
                if !pause.is_zero() && or_cancel(cancel, tokio::time::sleep(pause)).await.is_none()
                {
                    return Err(fail(FsError::ShuttingDown, &ambiguous, position));
                }
                continue;
            }
        } else if cause.is_ambiguous() {
            ambiguous.push((position, crc));
        } else {
            // Provably not applied (refused, body not sent, 403, throttled before reading):
            // wait and try the same position again; a 409 will tell if the end moved.
            tracing::debug!(key, position, bytes = n, attempt, error = %cause, "append not applied; retrying");
            last_error = Some(cause);
            if or_cancel(cancel, tokio::time::sleep(backoff(attempt)))
                .await
                .is_none()
            {
                return Err(fail(FsError::ShuttingDown, &ambiguous, position));
            }
            continue;
        }
        if !conflict {
            tracing::warn!(key, position, bytes = n, attempt, error = %cause, "append outcome unknown; checking the object");
        }
        last_error = Some(cause);
        // Learn the object's state; HEAD is idempotent, so this waits out an outage.
        let mut absent = 0u32;
        let meta = loop {
            let Some(r) = or_cancel(cancel, job.store.head(key)).await else {
                return Err(fail(FsError::ShuttingDown, &ambiguous, position));
            };
            match r {
                Ok(m) => break Some(m),
                // A truncate elsewhere is a delete and a create: give the create a moment
                // before taking the object for deleted.
                Err(e) if e.is_no_such_key() && job.follow_end && position > 0 && absent < 3 => {
                    absent += 1;
                    let pause = Duration::from_millis(100 * u64::from(absent));
                    if or_cancel(cancel, tokio::time::sleep(pause)).await.is_none() {
                        return Err(fail(FsError::ShuttingDown, &ambiguous, position));
                    }
                }
                Err(e) if e.is_no_such_key() => break None,
                Err(e) if Instant::now() > job.deadline => {
                    return Err(fail(FsError::from(e), &ambiguous, position))
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "HEAD after an unclear append failed; retrying");
                    if or_cancel(cancel, tokio::time::sleep(backoff(attempt)))
                        .await
                        .is_none()
                    {
                        return Err(fail(FsError::ShuttingDown, &ambiguous, position));
                    }
                }
            }
        };
        let Some(meta) = meta else {
            if position == 0 {
                // Not created yet (or deleted before anything of ours): create it.
                continue;
            }
            return Err(fail(FsError::Stale, &ambiguous, position));
        };
        if meta.object_type != Some(ObjectType::Appendable) {
            return Err(fail(
                FsError::NotPermitted(format!(
                    "{key:?} was replaced by a {} object",
                    meta.object_type.map_or("non-appendable", |t| t.as_str())
                )),
                &ambiguous,
                position,
            ));
        }
        let len = meta.next_append_position.unwrap_or(meta.size);
        for &(at, crc_before) in ambiguous.iter().rev() {
            let grown_past = len > at + n;
            match landed_at(
                job.store, key, at, crc_before, chunk_crc, n, len, meta.crc64,
            )
            .await
            {
                Ok(true) => {
                    if foreign || grown_past {
                        tracing::warn!(key, position = at, bytes = n, "an unclear append is taken as landed: its bytes are at its position, though other writers append to this object too (identical bytes from another host would look the same)");
                    } else {
                        tracing::info!(
                            key,
                            position = at,
                            bytes = n,
                            "the unclear append had landed"
                        );
                    }
                    let end_crc = match crc_before {
                        Some(c) if len == at + n => crc64::combine(c, chunk_crc, n),
                        _ => meta.crc64.unwrap_or(0),
                    };
                    return Ok(Landed {
                        position: len,
                        crc: end_crc,
                        at,
                        lost_races: conflicts,
                        round_trip: sent.elapsed(),
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(key, error = %e, "could not read back an unclear append; asking again");
                    continue;
                }
            }
        }
        let unchanged =
            len == position && (crc.is_none() || meta.crc64.is_none_or(|c| Some(c) == crc));
        if !unchanged {
            if !job.follow_end {
                return Err(fail(
                    FsError::Io(format!(
                        "{key:?} changed under a positional writer (it was to end at {position}, it ends at {len})"
                    )),
                    &ambiguous,
                    position,
                ));
            }
            foreign = true;
            position = len;
            crc = meta.crc64;
        } else if crc.is_none() && meta.crc64.is_some() {
            // Nothing moved, and HEAD tells the CRC we lacked: retry with it, at once.
            crc = meta.crc64;
        } else if or_cancel(cancel, tokio::time::sleep(backoff(attempt)))
            .await
            .is_none()
        {
            // Nothing moved: the server is in trouble; back off. (When another writer moved
            // the end, retry at once: any pause lets a busy writer win the race again.)
            return Err(fail(FsError::ShuttingDown, &ambiguous, position));
        }
    }
}

/// Whether our chunk (`n` bytes with CRC `chunk_crc`) sits at `at` in the object, whose length
/// is now `len`: by the whole-object CRC when it ends there, else by reading it back.
#[allow(clippy::too_many_arguments)]
async fn landed_at(
    store: &dyn Store,
    key: &str,
    at: u64,
    crc_before: Option<u64>,
    chunk_crc: u64,
    n: u64,
    len: u64,
    head_crc: Option<u64>,
) -> Result<bool, ClientError> {
    if len < at + n {
        return Ok(false);
    }
    if let (true, Some(before)) = (len == at + n, crc_before) {
        return Ok(head_crc.is_none_or(|c| c == crc64::combine(before, chunk_crc, n)));
    }
    if n == 0 {
        return Ok(true);
    }
    // Elsewhere in the object, or at its end with the CRC before it unknown: read it back.
    let data = store.get_range(key, at, at + n - 1).await?.data;
    Ok(data.len() as u64 == n && crc64::checksum(&data) == chunk_crc)
}
