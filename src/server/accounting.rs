//! Request accounting of the local server (`GET /_appendfs/stats`): every request counted under
//! its operation by status class, rejected and fault-injected ones included, plus the body bytes
//! received and sent, so a benchmark can report billed requests and traffic per operation.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Counts of one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpTraffic {
    /// Every request, answered or not.
    pub requests: u64,
    #[serde(rename = "2xx")]
    pub status_2xx: u64,
    #[serde(rename = "3xx")]
    pub status_3xx: u64,
    #[serde(rename = "4xx")]
    pub status_4xx: u64,
    #[serde(rename = "5xx")]
    pub status_5xx: u64,
    /// Connections dropped without an answer (fault injection: reset, lost-response).
    pub dropped: u64,
    /// Request body bytes the server read.
    pub bytes_received: u64,
    /// Response body bytes the server wrote.
    pub bytes_sent: u64,
}

impl OpTraffic {
    fn add(&mut self, o: &OpTraffic) {
        self.requests += o.requests;
        self.status_2xx += o.status_2xx;
        self.status_3xx += o.status_3xx;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.dropped += o.dropped;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
    }
}

/// The whole accounting: per operation, and the sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub total: OpTraffic,
    pub operations: BTreeMap<String, OpTraffic>,
}

#[derive(Default)]
pub struct Accounting {
    ops: Mutex<BTreeMap<&'static str, OpTraffic>>,
}

impl Accounting {
    fn with(&self, op: &'static str, f: impl FnOnce(&mut OpTraffic)) {
        // Counters stay consistent whatever panicked while holding the lock.
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        f(ops.entry(op).or_default());
    }

    /// One answered request and the body bytes read from it.
    pub fn answered(&self, op: &'static str, status: u16, bytes_received: u64) {
        self.with(op, |t| {
            t.requests += 1;
            t.bytes_received += bytes_received;
            match status {
                200..=299 => t.status_2xx += 1,
                300..=399 => t.status_3xx += 1,
                400..=499 => t.status_4xx += 1,
                _ => t.status_5xx += 1,
            }
        });
    }

    /// One request whose connection was dropped without an answer.
    pub fn dropped(&self, op: &'static str, bytes_received: u64) {
        self.with(op, |t| {
            t.requests += 1;
            t.dropped += 1;
            t.bytes_received += bytes_received;
        });
    }

    /// Response body bytes as they are handed to the connection.
    pub fn sent(&self, op: &'static str, n: u64) {
        self.with(op, |t| t.bytes_sent += n);
    }

    pub fn snapshot(&self) -> Traffic {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = OpTraffic::default();
        for t in ops.values() {
            total.add(t);
        }
        Traffic {
            total,
            operations: ops
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_totals() {
        let a = Accounting::default();
        a.answered("PutObject", 200, 10);
        a.answered("PutObject", 403, 0);
        a.answered("Unknown", 405, 3);
        a.answered("GetObject", 304, 0);
        a.answered("GetObject", 503, 0);
        a.dropped("AppendObject", 5);
        a.sent("GetObject", 7);
        let t = a.snapshot();
        let put = &t.operations["PutObject"];
        assert_eq!((put.requests, put.status_2xx, put.status_4xx), (2, 1, 1));
        assert_eq!(t.operations["GetObject"].status_3xx, 1);
        assert_eq!(t.operations["GetObject"].status_5xx, 1);
        assert_eq!(t.total.requests, 6);
        assert_eq!(t.total.dropped, 1);
        assert_eq!((t.total.bytes_received, t.total.bytes_sent), (18, 7));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["operations"]["Unknown"]["4xx"], 1);
    }
}
