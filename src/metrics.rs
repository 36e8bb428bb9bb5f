//! Metrics of a mount: owns the process-wide counters (OSS requests by operation and outcome,
//! retries, bytes appended and read, AppendObject latency, filesystem errors by errno), the
//! two backlog gauges (bytes buffered, age of the oldest unsent byte), the `/metrics` endpoint
//! that serves them in Prometheus text format, and the one-line summary logged at unmount.
//!
//! Crate: `prometheus-client`, the Prometheus project's own Rust client: typed metric
//! families, no global recorder to install, no protobuf dependency, and values readable back
//! for the summary. Serving is a few lines of hyper, already a dependency.
//!
//! The registry is process-wide (one process mounts one bucket): the client and the FUSE
//! adapter count with one line each instead of threading a handle through the `Store` seam,
//! the core and the adapter. Nothing here is labelled with keys, paths or credentials: labels
//! are operation names, outcome classes and errno names only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::client::Op;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FsErrorLabels {
    op: &'static str,
    errno: &'static str,
    class: &'static str,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    retries: Family<OpLabels, Counter>,
    failures: Family<OpLabels, Counter>,
    appended_bytes: Counter,
    read_bytes: Counter,
    append_latency: Histogram,
    fs_errors: Family<FsErrorLabels, Counter>,
    buffered_bytes: Gauge,
    oldest_unsent: Gauge<f64, AtomicU64>,
}

/// The outcome classes of one HTTP attempt (`outcome` label).
pub mod outcome {
    pub const OK: &str = "ok";
    pub const NOT_FOUND: &str = "not_found";
    pub const CONFLICT: &str = "conflict";
    pub const DENIED: &str = "denied";
    pub const THROTTLED: &str = "throttled";
    pub const CLIENT_ERROR: &str = "client_error";
    pub const SERVER_ERROR: &str = "server_error";
    pub const TIMEOUT: &str = "timeout";
    pub const NETWORK: &str = "network";
    pub const INVALID_RESPONSE: &str = "invalid_response";
    pub const OTHER: &str = "other";
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("appendfs");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "oss_requests",
            "HTTP requests sent to OSS (every attempt), by operation and outcome",
            requests.clone(),
        );
        let retries = Family::<OpLabels, Counter>::default();
        registry.register(
            "oss_retries",
            "Attempts that were followed by another attempt of the same call",
            retries.clone(),
        );
        let failures = Family::<OpLabels, Counter>::default();
        registry.register(
            "oss_call_failures",
            "Calls that failed after their retries (the error went to the filesystem)",
            failures.clone(),
        );
        let appended_bytes = Counter::default();
        registry.register_with_unit(
            "appended",
            "Bytes OSS confirmed appended (successful AppendObject bodies)",
            Unit::Bytes,
            appended_bytes.clone(),
        );
        let read_bytes = Counter::default();
        registry.register_with_unit(
            "read",
            "Bytes received in GetObject bodies",
            Unit::Bytes,
            read_bytes.clone(),
        );
        // 1 ms to ~65 s: a loopback server answers in about a millisecond, a stalled one in
        // the request timeout.
        let append_latency = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register_with_unit(
            "append_latency",
            "Round trip of each AppendObject attempt, from sending to the answer",
            Unit::Seconds,
            append_latency.clone(),
        );
        let fs_errors = Family::<FsErrorLabels, Counter>::default();
        registry.register(
            "fs_errors",
            "Filesystem requests answered with an error, by operation, errno and class \
             (refusal: by design, such as EPERM; failure: server or network; expected: ENOENT \
             and the like)",
            fs_errors.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register_with_unit(
            "buffered",
            "Bytes accepted from writers and not yet confirmed by OSS",
            Unit::Bytes,
            buffered_bytes.clone(),
        );
        let oldest_unsent = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "oldest_unsent_age",
            "Age of the oldest byte accepted from a writer and not yet confirmed by OSS (0: none)",
            Unit::Seconds,
            oldest_unsent.clone(),
        );
        Metrics {
            registry,
            requests,
            retries,
            failures,
            appended_bytes,
            read_bytes,
            append_latency,
            fs_errors,
            buffered_bytes,
            oldest_unsent,
        }
    }

    /// One HTTP attempt finished (it was sent): its outcome, and for AppendObject its round
    /// trip and, when it succeeded, its body length.
    pub fn attempt(&self, op: Op, outcome: &'static str, elapsed: Duration, body_len: u64) {
        self.requests
            .get_or_create(&RequestLabels {
                op: op.as_str(),
                outcome,
            })
            .inc();
        if op == Op::AppendObject {
            self.append_latency.observe(elapsed.as_secs_f64());
            if outcome == outcome::OK {
                self.appended_bytes.inc_by(body_len);
            }
        }
    }

    pub fn retry(&self, op: Op) {
        self.retries
            .get_or_create(&OpLabels { op: op.as_str() })
            .inc();
    }

    pub fn failure(&self, op: Op) {
        self.failures
            .get_or_create(&OpLabels { op: op.as_str() })
            .inc();
    }

    pub fn bytes_read(&self, n: u64) {
        self.read_bytes.inc_by(n);
    }

    /// A filesystem request answered with `errno`; `class` is how the adapter logged it.
    pub fn fs_error(&self, op: &'static str, errno: i32, class: &'static str) {
        self.fs_errors
            .get_or_create(&FsErrorLabels {
                op,
                errno: errno_name(errno),
                class,
            })
            .inc();
    }

    /// Sets the backlog gauges (sampled by the caller before each scrape and check).
    pub fn set_backlog(&self, buffered: u64, oldest_unsent: Option<Duration>) {
        self.buffered_bytes
            .set(i64::try_from(buffered).unwrap_or(i64::MAX));
        self.oldest_unsent
            .set(oldest_unsent.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The counters in one line, for the log at unmount.
    pub fn summary(&self) -> String {
        let mut requests = Vec::new();
        let (mut total, mut errors, mut retries, mut failures) = (0u64, 0u64, 0u64, 0u64);
        for op in Op::ALL {
            let mut n = 0;
            for o in OUTCOMES {
                let c = self.count(
                    &self.requests,
                    &RequestLabels {
                        op: op.as_str(),
                        outcome: o,
                    },
                );
                n += c;
                if o != outcome::OK {
                    errors += c;
                }
            }
            if n > 0 {
                requests.push(format!("{}={n}", op.as_str()));
            }
            total += n;
            let l = OpLabels { op: op.as_str() };
            retries += self.count(&self.retries, &l);
            failures += self.count(&self.failures, &l);
        }
        format!(
            "requests={total} ({}) error_answers={errors} retries={retries} failed_calls={failures} \
             appended_bytes={} read_bytes={} fs_refusals={} fs_failures={}",
            if requests.is_empty() { "none".to_string() } else { requests.join(" ") },
            self.appended_bytes.get(),
            self.read_bytes.get(),
            self.fs_errors_of_class("refusal"),
            self.fs_errors_of_class("failure"),
        )
    }

    fn count<L>(&self, family: &Family<L, Counter>, labels: &L) -> u64
    where
        L: Clone + std::hash::Hash + Eq,
    {
        family.get(labels).map_or(0, |c| c.get())
    }

    fn fs_errors_of_class(&self, class: &'static str) -> u64 {
        // Scans the known label space: the family does not hand out its keys.
        let mut n = 0;
        for op in FS_OPS {
            for (errno, _) in ERRNO_NAMES {
                n += self.count(
                    &self.fs_errors,
                    &FsErrorLabels {
                        op,
                        errno: errno_name(*errno),
                        class,
                    },
                );
            }
        }
        n
    }
}

const OUTCOMES: [&str; 11] = [
    outcome::OK,
    outcome::NOT_FOUND,
    outcome::CONFLICT,
    outcome::DENIED,
    outcome::THROTTLED,
    outcome::CLIENT_ERROR,
    outcome::SERVER_ERROR,
    outcome::TIMEOUT,
    outcome::NETWORK,
    outcome::INVALID_RESPONSE,
    outcome::OTHER,
];

/// The operation names the adapter reports (its `Site::op` values), for the summary.
const FS_OPS: &[&str] = &[
    "lookup",
    "getattr",
    "setattr",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "statfs",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "access",
    "create",
    "ioctl",
    "fallocate",
    "lseek",
    "copy_file_range",
];

const ERRNO_NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::EIO, "EIO"),
    (libc::EBADF, "EBADF"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::EROFS, "EROFS"),
    (libc::ERANGE, "ERANGE"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ENODATA, "ENODATA"),
    (libc::ENOTSUP, "ENOTSUP"),
    (libc::ESTALE, "ESTALE"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::EINTR, "EINTR"),
];

/// The symbolic name of an errno (`EPERM`), `other` for one not in the table: label values
/// stay a small fixed set.
pub fn errno_name(errno: i32) -> &'static str {
    ERRNO_NAMES
        .iter()
        .find(|(e, _)| *e == errno)
        .map_or("other", |(_, n)| n)
}

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Called before each scrape to bring the gauges up to date.
pub type Sampler = Arc<dyn Fn() + Send + Sync>;

/// A bound metrics endpoint, not yet serving.
pub struct Endpoint {
    listener: tokio::net::TcpListener,
}

impl Endpoint {
    /// Binds `addr` (only that address: `127.0.0.1:9100` stays on loopback). Done before the
    /// mount goes live, so a taken port fails the mount with a message instead of silently
    /// serving nothing.
    pub async fn bind(addr: &str) -> Result<Endpoint, MetricsError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        Ok(Endpoint { listener })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves `GET /metrics` (404 for anything else) until the task is dropped.
    pub async fn serve(self, sample: Sampler) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let sample = sample.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let sample = sample.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &sample)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "metrics connection ended");
                }
            });
        }
    }
}

fn answer<B>(req: &hyper::Request<B>, sample: &Sampler) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, ctype: &'static str, body: String| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ctype),
        );
        r
    };
    let get = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
    if req.uri().path() != "/metrics" {
        return reply(
            404,
            "text/plain; charset=utf-8",
            "not found; try /metrics\n".into(),
        );
    }
    if !get {
        return reply(405, "text/plain; charset=utf-8", "only GET\n".into());
    }
    sample();
    reply(
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        global().render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_summary() {
        // The registry is shared by every test in this binary: compare differences only.
        let m = global();
        let before = m.summary();
        m.attempt(Op::AppendObject, outcome::OK, Duration::from_millis(3), 10);
        m.attempt(
            Op::HeadObject,
            outcome::NOT_FOUND,
            Duration::from_millis(1),
            0,
        );
        m.retry(Op::HeadObject);
        m.fs_error("setattr", libc::EPERM, "refusal");
        m.set_backlog(42, Some(Duration::from_secs(2)));
        let text = m.render();
        assert!(
            text.contains("appendfs_oss_requests_total{op=\"AppendObject\",outcome=\"ok\"}"),
            "{text}"
        );
        assert!(text.contains("appendfs_appended_bytes_total"), "{text}");
        assert!(
            text.contains("appendfs_append_latency_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(
                "appendfs_fs_errors_total{op=\"setattr\",errno=\"EPERM\",class=\"refusal\"}"
            ),
            "{text}"
        );
        assert!(text.contains("appendfs_buffered_bytes 42"), "{text}");
        assert!(
            text.contains("appendfs_oldest_unsent_age_seconds 2.0"),
            "{text}"
        );
        assert_ne!(before, m.summary());
        assert!(m.summary().contains("AppendObject="), "{}", m.summary());
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(errno_name(99999), "other");
    }
}
