//! Per-operation request counters, so tests (and `--debug` output) can see how many HTTP requests
//! each kind of call costs: a HEAD sneaking into every append shows up as a number. Every count
//! is mirrored into the process-wide [`crate::metrics`], with the outcome of each attempt.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::{ClientError, Op, TransportKind};
use crate::metrics::{self, outcome};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: [AtomicU64; Op::ALL.len()],
    retries: [AtomicU64; Op::ALL.len()],
    failures: [AtomicU64; Op::ALL.len()],
}

impl Counters {
    pub fn request(&self, op: Op) {
        self.requests[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry(&self, op: Op) {
        self.retries[op.index()].fetch_add(1, Ordering::Relaxed);
        metrics::global().retry(op);
    }

    pub fn failure(&self, op: Op) {
        self.failures[op.index()].fetch_add(1, Ordering::Relaxed);
        metrics::global().failure(op);
    }

    /// An attempt that was sent has finished: its outcome class, round trip and body length
    /// (the body counts as appended only for a successful AppendObject).
    pub fn attempt_done(
        &self,
        op: Op,
        result: Result<(), &ClientError>,
        elapsed: Duration,
        body_len: u64,
    ) {
        metrics::global().attempt(op, outcome_of(result), elapsed, body_len);
    }
}

/// Bytes of a GetObject body as they arrive.
pub(crate) fn bytes_read(n: u64) {
    metrics::global().bytes_read(n);
}

/// The outcome class of one attempt (the `outcome` label): a fixed, small set.
pub(crate) fn outcome_of(result: Result<(), &ClientError>) -> &'static str {
    match result {
        Ok(()) => outcome::OK,
        Err(ClientError::Oss(e)) => match e.status {
            404 => outcome::NOT_FOUND,
            409 => outcome::CONFLICT,
            403 => outcome::DENIED,
            429 | 503 => outcome::THROTTLED,
            500..=599 => outcome::SERVER_ERROR,
            _ => outcome::CLIENT_ERROR,
        },
        Err(ClientError::Transport { kind, .. }) => match kind {
            TransportKind::Timeout => outcome::TIMEOUT,
            _ => outcome::NETWORK,
        },
        Err(ClientError::Ambiguous { cause, .. }) => outcome_of(Err(cause)),
        Err(ClientError::InvalidResponse { .. }) => outcome::INVALID_RESPONSE,
        Err(_) => outcome::OTHER,
    }
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        let mut ops = BTreeMap::new();
        for op in Op::ALL {
            let i = op.index();
            let c = OpCounts {
                requests: self.requests[i].load(Ordering::Relaxed),
                retries: self.retries[i].load(Ordering::Relaxed),
                failures: self.failures[i].load(Ordering::Relaxed),
            };
            if c != OpCounts::default() {
                ops.insert(op.as_str(), c);
            }
        }
        Stats { ops }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// HTTP requests sent (every attempt, retries included).
    pub requests: u64,
    /// Attempts that were followed by another attempt of the same call.
    pub retries: u64,
    /// Calls that returned an error to their caller.
    pub failures: u64,
}

/// A snapshot of the counters; operations never used are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub ops: BTreeMap<&'static str, OpCounts>,
}

impl Stats {
    pub fn get(&self, op: Op) -> OpCounts {
        self.ops.get(op.as_str()).copied().unwrap_or_default()
    }

    /// HTTP requests sent for `op`.
    pub fn requests(&self, op: Op) -> u64 {
        self.get(op).requests
    }

    /// Requests per operation name, the shape of the local server's statistics.
    pub fn requests_by_name(&self) -> BTreeMap<String, u64> {
        self.ops
            .iter()
            .map(|(k, v)| (k.to_string(), v.requests))
            .collect()
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let mut ops = BTreeMap::new();
        for (name, c) in &self.ops {
            let e = earlier.ops.get(name).copied().unwrap_or_default();
            let d = OpCounts {
                requests: c.requests - e.requests,
                retries: c.retries - e.retries,
                failures: c.failures - e.failures,
            };
            if d != OpCounts::default() {
                ops.insert(*name, d);
            }
        }
        Stats { ops }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_differences() {
        let c = Counters::default();
        c.request(Op::AppendObject);
        let before = c.snapshot();
        c.request(Op::AppendObject);
        c.request(Op::HeadObject);
        c.retry(Op::HeadObject);
        let now = c.snapshot();
        assert_eq!(now.requests(Op::AppendObject), 2);
        assert_eq!(now.requests(Op::GetObject), 0);
        assert!(!now.ops.contains_key("GetObject"));
        let d = now.since(&before);
        assert_eq!(d.requests(Op::AppendObject), 1);
        assert_eq!(
            d.get(Op::HeadObject),
            OpCounts {
                requests: 1,
                retries: 1,
                failures: 0
            }
        );
        assert_eq!(now.requests_by_name().get("AppendObject").copied(), Some(2));
    }
}
