//! One logical call, many attempts: build the URL, sign with fresh credentials and the corrected
//! clock, send, turn error statuses into [`ClientError::Oss`], retry per the policy, and wrap
//! failures of non-idempotent calls that may have been applied as [`ClientError::Ambiguous`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, HeaderValue, Method};
use tracing::Instrument;

use super::config::SignatureVersion;
use super::error::{oss_error, ClientError, KeyProblem, Op, TransportKind};
use super::retry::{is_retryable, jitter_unit, Idempotency, RetryPolicy};
use super::Inner;
use crate::oss::encode::build_query;
use crate::oss::sign::{v1_sign_headers, V4Signer, PRODUCT};

/// A call as the operations describe it; the engine turns it into attempts.
pub(crate) struct Call<'a> {
    pub op: Op,
    pub method: Method,
    /// `None` for bucket-level calls.
    pub key: Option<&'a str>,
    /// Decoded name/value pairs, in the order they go on the wire.
    pub query: Vec<(String, String)>,
    /// Unsigned headers; the signature ones are added per attempt.
    pub headers: HeaderMap,
    /// Sent for PUT and POST (even when empty: OSS wants a Content-Length).
    pub body: Option<Bytes>,
    pub idempotency: Idempotency,
}

impl Call<'_> {
    pub fn new(op: Op, method: Method, key: Option<&str>) -> Call<'_> {
        Call {
            op,
            method,
            key,
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
            idempotency: Idempotency::Idempotent,
        }
    }

    pub fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_string(), value.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Result<Self, ClientError> {
        let v = HeaderValue::from_str(value).map_err(|_| {
            ClientError::InvalidArgument(format!(
                "value of header {name} cannot be sent: {value:?}"
            ))
        })?;
        self.headers.insert(name, v);
        Ok(self)
    }

    pub fn key_str(&self) -> &str {
        self.key.unwrap_or("")
    }
}

/// Rejects keys that cannot be sent as a URL path.
pub(crate) fn check_key(key: &str) -> Result<(), ClientError> {
    let problem = if key.is_empty() {
        KeyProblem::Empty
    } else if key.len() > crate::oss::MAX_KEY_LEN {
        KeyProblem::TooLong
    } else if key == "." || key == ".." {
        KeyProblem::DotName
    } else {
        return Ok(());
    };
    Err(ClientError::InvalidKey {
        key: key.to_string(),
        problem,
    })
}

pub(crate) fn transport_error(op: Op, key: &str, e: reqwest::Error) -> ClientError {
    ClientError::Transport {
        op,
        key: key.to_string(),
        kind: transport_kind(&e),
        source: Box::new(e),
    }
}

/// The request body as a one-chunk stream that records when HTTP took its last byte. The flag
/// is set when the bytes are handed over, the earliest moment they can be on the wire: while it
/// is unset the server cannot hold the whole body. (Content-Length is set explicitly, so the
/// stream does not turn the request into a chunked one.)
fn tracked_body(body: Bytes, sent: Arc<AtomicBool>) -> reqwest::Body {
    if body.is_empty() {
        // Nothing to hand over: the request is complete once its head is written, which the
        // connection error cannot tell apart, so count it as sent (ambiguous, never a loss).
        sent.store(true, Ordering::SeqCst);
        return reqwest::Body::from(body);
    }
    let stream = futures::stream::once(async move {
        sent.store(true, Ordering::SeqCst);
        Ok::<Bytes, std::io::Error>(body)
    });
    reqwest::Body::wrap_stream(stream)
}

/// Sorts a reqwest failure by what it says about the request having been sent.
fn transport_kind(e: &reqwest::Error) -> TransportKind {
    if e.is_connect() {
        return TransportKind::Connect;
    }
    if e.is_timeout() {
        return TransportKind::Timeout;
    }
    if e.is_body() || e.is_decode() {
        return TransportKind::Body;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return TransportKind::Reset;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return TransportKind::Reset;
            }
        }
        source = s.source();
    }
    TransportKind::Other
}

pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-oss-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

impl Inner {
    /// Runs `call` until it succeeds or the policy gives up. `handle` turns a success response
    /// into the result and runs inside the attempt's time limit, so reading a body there is
    /// covered by retries too; returning a stream from it hands the body out unbounded.
    pub(crate) async fn execute<T, F, Fut>(
        &self,
        call: &Call<'_>,
        policy: &RetryPolicy,
        handle: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut skew_corrected = false;
        loop {
            attempts += 1;
            let err = match self.attempt(call, attempts, &handle).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // A rejected clock is a definite refusal: after correcting it, sending again is
            // safe even for AppendObject.
            if !skew_corrected && err.code() == Some("RequestTimeTooSkewed") {
                skew_corrected = true;
                self.counters.retry(call.op);
                continue;
            }
            if is_retryable(&err, call.idempotency) {
                if let Some(delay) = policy.next_delay(attempts, started.elapsed(), jitter_unit()) {
                    self.counters.retry(call.op);
                    tracing::debug!(op = %call.op, key = call.key_str(), attempt = attempts,
                        ?delay, error = %err, "retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            self.counters.failure(call.op);
            return Err(self.finish_error(call, err));
        }
    }

    fn finish_error(&self, call: &Call<'_>, err: ClientError) -> ClientError {
        if call.idempotency == Idempotency::Idempotent {
            return err;
        }
        let maybe_applied = match &err {
            ClientError::Transport { kind, .. } => {
                !matches!(kind, TransportKind::Connect | TransportKind::NotSent)
            }
            ClientError::Oss(e) => e.status >= 500,
            // A 2xx whose headers made no sense: it did apply, somewhere.
            ClientError::InvalidResponse { .. } => true,
            _ => false,
        };
        if maybe_applied {
            ClientError::Ambiguous {
                op: call.op,
                key: call.key_str().to_string(),
                cause: Box::new(err),
            }
        } else {
            err
        }
    }

    async fn attempt<T, F, Fut>(
        &self,
        call: &Call<'_>,
        attempt: u32,
        handle: &F,
    ) -> Result<T, ClientError>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let span = tracing::debug_span!(
            "oss_request",
            op = %call.op,
            method = %call.method,
            key = call.key_str(),
            attempt,
            status = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
        let body_sent = Arc::new(AtomicBool::new(false));
        // Set once the request goes out: only sent attempts have an outcome and a round trip.
        let mut sent_at: Option<Instant> = None;
        let work = async {
            let request = self.build(call, &body_sent).await?;
            self.counters.request(call.op);
            sent_at = Some(Instant::now());
            let response = self.http.execute(request).await.map_err(|e| {
                let mut err = transport_error(call.op, call.key_str(), e);
                // A body never handed over whole cannot have been applied: say so, so that a
                // non-idempotent call is not reported as of unknown outcome.
                if let ClientError::Transport { kind, .. } = &mut err {
                    if *kind != TransportKind::Connect && !body_sent.load(Ordering::SeqCst) {
                        *kind = TransportKind::NotSent;
                    }
                }
                err
            })?;
            let status = response.status();
            let span = tracing::Span::current();
            span.record("status", status.as_u16());
            span.record("request_id", request_id(response.headers()).as_str());
            if status.is_success() {
                handle(response).await
            } else {
                let headers = response.headers().clone();
                // A body that breaks off still leaves the status and headers to report.
                let body = response.bytes().await.unwrap_or_default();
                let err = oss_error(call.op, call.key_str(), status, &headers, &body);
                if err.code() == Some("RequestTimeTooSkewed") {
                    self.correct_clock(&headers);
                }
                tracing::debug!(error = %err, "OSS error");
                Err(err)
            }
        };
        let result = match tokio::time::timeout(self.config.request_timeout, work)
            .instrument(span)
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ClientError::Transport {
                op: call.op,
                key: call.key_str().to_string(),
                kind: if body_sent.load(Ordering::SeqCst) {
                    TransportKind::Timeout
                } else {
                    TransportKind::NotSent
                },
                source: format!(
                    "no complete response within {:?}",
                    self.config.request_timeout
                )
                .into(),
            }),
        };
        if let Some(at) = sent_at {
            let body_len = call.body.as_ref().map_or(0, |b| b.len() as u64);
            self.counters.attempt_done(
                call.op,
                result.as_ref().map(|_| ()),
                at.elapsed(),
                body_len,
            );
        }
        result
    }

    /// The signed request for one attempt.
    async fn build(
        &self,
        call: &Call<'_>,
        body_sent: &Arc<AtomicBool>,
    ) -> Result<reqwest::Request, ClientError> {
        let url = self.addressing.url(call.key, &build_query(&call.query));
        let url = reqwest::Url::parse(&url)
            .map_err(|e| ClientError::InvalidArgument(format!("cannot form a URL: {e}")))?;
        let mut headers = call.headers.clone();
        if let Some(provider) = &self.credentials {
            let creds = provider.credentials().await?;
            let now = Utc::now() + chrono::Duration::milliseconds(self.clock_offset_ms());
            let bucket = Some(self.addressing.bucket.as_str());
            let method = call.method.as_str();
            match self.config.signature {
                SignatureVersion::V4 => V4Signer {
                    credentials: &creds,
                    region: &self.addressing.region,
                    product: PRODUCT,
                    now,
                }
                .sign_headers(
                    method,
                    bucket,
                    call.key,
                    &call.query,
                    &mut headers,
                    &[],
                ),
                SignatureVersion::V1 => v1_sign_headers(
                    &creds,
                    now,
                    method,
                    bucket,
                    call.key,
                    &call.query,
                    &mut headers,
                ),
            }
        }
        let mut request = reqwest::Request::new(call.method.clone(), url);
        *request.headers_mut() = headers;
        if call.body.is_none() {
            body_sent.store(true, Ordering::SeqCst);
        }
        if let Some(body) = &call.body {
            // Explicit, because hyper leaves it out for an empty body and OSS then answers
            // 411 MissingContentLength (directory markers, creating appends).
            request
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            *request.body_mut() = Some(tracked_body(body.clone(), body_sent.clone()));
        }
        Ok(request)
    }

    /// Adopts the server's clock from the `Date` of a RequestTimeTooSkewed answer, as the SDKs do.
    fn correct_clock(&self, headers: &HeaderMap) {
        let server = headers
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        if let Some(server) = server {
            let server: chrono::DateTime<Utc> = server.into();
            let offset = (server - Utc::now()).num_milliseconds();
            tracing::warn!(
                offset_ms = offset,
                "OSS rejected our clock; correcting signatures by the server's Date"
            );
            self.set_clock_offset_ms(offset);
        }
    }
}
