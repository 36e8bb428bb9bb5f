//! When a failed attempt is tried again and how long to wait first: jittered exponential backoff
//! bounded by an attempt count and a total deadline. Which failures qualify is decided here too,
//! so the policy can be read (and tested) in one place.

use std::time::Duration;

use super::error::{ClientError, TransportKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Ceiling of the first backoff; it doubles per retry up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt (attempts in
    /// flight are bounded by the request timeout instead).
    pub total_deadline: Duration,
}

impl Default for RetryPolicy {
    /// Generous enough that a FUSE `stat` rides out a server restart or a burst of 5xx, short
    /// enough that a dead endpoint surfaces as `EIO` within a minute.
    fn default() -> Self {
        RetryPolicy {
            // Attempts are cheap next to a failed `stat`; the deadline bounds the time.
            max_attempts: 12,
            base_delay: Duration::from_millis(100),
            // Short waits, many attempts: a stat rides out a restart or a burst of lost
            // answers, and a dead endpoint still surfaces as EIO within about 15 s.
            max_delay: Duration::from_secs(2),
            total_deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Upper bound of the wait before retry number `retry` (1 = the first retry):
    /// `base_delay * 2^(retry-1)`, capped at `max_delay`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        self.base_delay
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// "Equal jitter": half the ceiling plus `unit` (uniform in `[0, 1)`) times the other half,
    /// so clients that failed together spread out but never hammer back at once.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let c = self.ceiling(retry);
        c / 2 + (c / 2).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait before the next attempt after `attempts_made` attempts and `elapsed` time, or
    /// `None` when the budget (attempts or deadline) is spent.
    pub fn next_delay(&self, attempts_made: u32, elapsed: Duration, unit: f64) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let d = self.delay(attempts_made, unit);
        (elapsed + d < self.total_deadline).then_some(d)
    }
}

/// Whether a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Sending it twice has the effect of sending it once (GET, HEAD, LIST, DELETE, plain PUT).
    Idempotent,
    /// AppendObject, PutObject/CopyObject with forbid-overwrite: retried only when the request
    /// provably never reached the server (connection not established).
    NotIdempotent,
}

/// Whether `err` is worth another attempt.
pub fn is_retryable(err: &ClientError, idempotency: Idempotency) -> bool {
    match err {
        // Nothing (or not all of the body) was sent: safe for every request.
        ClientError::Transport {
            kind: TransportKind::Connect | TransportKind::NotSent,
            ..
        } => true,
        _ if idempotency == Idempotency::NotIdempotent => false,
        ClientError::Transport { .. } => true,
        ClientError::Oss(e) => {
            e.status >= 500
                || e.status == 429
                // The server gave up reading our body (slow link); the request did not apply.
                || e.code == "RequestTimeout"
        }
        _ => false,
    }
}

/// A fresh uniform number in `[0, 1)` for jitter.
pub(crate) fn jitter_unit() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::error::{Op, OssError};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: ms(100),
            max_delay: ms(1000),
            total_deadline: Duration::from_secs(60),
        };
        let ceilings: Vec<_> = (1..=6).map(|r| p.ceiling(r)).collect();
        assert_eq!(
            ceilings,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(p.ceiling(u32::MAX), ms(1000));
        // Equal jitter stays within [ceiling/2, ceiling].
        for r in 1..8 {
            assert_eq!(p.delay(r, 0.0), p.ceiling(r) / 2);
            assert!(p.delay(r, 0.999) <= p.ceiling(r));
            assert!(p.delay(r, 0.5) > p.ceiling(r) / 2);
        }
    }

    #[test]
    fn budget_is_attempts_and_deadline() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: ms(100),
            max_delay: ms(1000),
            total_deadline: ms(1000),
        };
        assert_eq!(p.next_delay(1, ms(0), 0.0), Some(ms(50)));
        assert_eq!(p.next_delay(2, ms(0), 0.0), Some(ms(100)));
        assert_eq!(p.next_delay(3, ms(0), 0.0), None);
        assert_eq!(p.next_delay(1, ms(960), 0.0), None);
        assert_eq!(RetryPolicy::none().next_delay(1, ms(0), 0.0), None);
        // The default gives up well within its deadline even when every wait is the longest.
        let d = RetryPolicy::default();
        let worst: Duration = (1..d.max_attempts).map(|r| d.ceiling(r)).sum();
        assert!(worst < d.total_deadline, "{worst:?}");
    }

    #[test]
    fn what_is_retried() {
        use Idempotency::*;
        let oss = |status: u16, code: &str| {
            ClientError::Oss(Box::new(OssError {
                op: Op::GetObject,
                key: "k".into(),
                status,
                code: code.into(),
                message: String::new(),
                request_id: String::new(),
                ec: None,
                next_append_position: None,
            }))
        };
        let transport = |kind| ClientError::Transport {
            op: Op::AppendObject,
            key: "k".into(),
            kind,
            source: "x".into(),
        };
        assert!(is_retryable(&oss(500, "InternalError"), Idempotent));
        assert!(is_retryable(&oss(503, "ServiceUnavailable"), Idempotent));
        assert!(is_retryable(&oss(429, "Throttled"), Idempotent));
        assert!(is_retryable(&oss(400, "RequestTimeout"), Idempotent));
        assert!(!is_retryable(&oss(404, "NoSuchKey"), Idempotent));
        assert!(!is_retryable(
            &oss(403, "SignatureDoesNotMatch"),
            Idempotent
        ));
        for kind in [
            TransportKind::Timeout,
            TransportKind::Reset,
            TransportKind::Body,
            TransportKind::Other,
        ] {
            assert!(is_retryable(&transport(kind), Idempotent));
            assert!(!is_retryable(&transport(kind), NotIdempotent), "{kind:?}");
        }
        // AppendObject: a 5xx may have been applied; only an unopened connection is retried.
        assert!(!is_retryable(&oss(500, "InternalError"), NotIdempotent));
        assert!(!is_retryable(&oss(503, "SlowDown"), NotIdempotent));
        assert!(is_retryable(
            &transport(TransportKind::Connect),
            NotIdempotent
        ));
        assert!(is_retryable(
            &transport(TransportKind::NotSent),
            NotIdempotent
        ));
    }
}
