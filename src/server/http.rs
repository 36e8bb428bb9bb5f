//! The HTTP face of the local server: connection handling (hyper), addressing (path style,
//! virtual-hosted `Host: bucket.anything`, absolute-form request lines), authentication with the
//! shared verifier, fault injection, and OSS-shaped responses: the XML `<Error>` body, or for HEAD
//! the base64 `x-oss-err` header, with a request id on everything.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use super::store::StoreError;
use super::ServerState;
use crate::oss::encode::{decode, parse_query};
use crate::oss::sign::{self, Claim, Rejection, RequestParts};
use crate::oss::xml::ErrorBody;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A parsed request as the operations see it.
pub struct OssRequest {
    pub id: String,
    pub method: Method,
    pub host: String,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    /// Taken once by the operation that consumes it.
    pub body: Option<Incoming>,
    /// Body bytes read so far (accounting).
    pub body_read: u64,
}

impl OssRequest {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, treating an empty value as absent (oss2 sends `prefix=` and friends).
    pub fn q_nonempty(&self, name: &str) -> Option<&str> {
        self.q(name).filter(|v| !v.is_empty())
    }

    pub fn has(&self, name: &str) -> bool {
        self.q(name).is_some()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request body, whole. A body cut short (client gone, reset) is an error: nothing of it
    /// is applied.
    pub async fn take_body(&mut self) -> Result<Bytes, OssError> {
        let body = self
            .body
            .take()
            .ok_or_else(|| OssError::internal("request body already taken"))?;
        let read = body.collect().await.map(|c| c.to_bytes()).map_err(|e| {
            OssError::new(
                StatusCode::BAD_REQUEST,
                "RequestTimeout",
                format!("could not read the request body: {e}"),
            )
        })?;
        self.body_read += read.len() as u64;
        Ok(read)
    }
}

/// An OSS error response.
#[derive(Debug)]
pub struct OssError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub ec: Option<&'static str>,
    pub extras: Vec<(String, String)>,
    pub headers: Vec<(&'static str, String)>,
}

impl OssError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        OssError {
            status,
            code,
            message: message.into(),
            ec: None,
            extras: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn ec(mut self, ec: &'static str) -> Self {
        self.ec = Some(ec);
        self
    }

    pub fn extra(mut self, name: &str, value: impl Into<String>) -> Self {
        self.extras.push((name.to_string(), value.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub fn no_such_key(key: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        )
        .ec("0026-00000001")
        .extra("Key", key)
    }

    pub fn no_such_bucket(bucket: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        )
        .ec("0015-00000101")
        .extra("BucketName", bucket)
    }

    /// Maps a storage outcome for `bucket`/`key` to its OSS error.
    pub fn from_store(e: StoreError, bucket: &str, key: &str) -> Self {
        match e {
            StoreError::NoSuchBucket => Self::no_such_bucket(bucket),
            StoreError::NoSuchKey | StoreError::Changed => Self::no_such_key(key),
            StoreError::NotAppendable => Self::new(
                StatusCode::CONFLICT,
                "ObjectNotAppendable",
                "The object is not appendable",
            )
            .ec("0026-00000017"),
            StoreError::PositionMismatch { length, .. } => Self::new(
                StatusCode::CONFLICT,
                "PositionNotEqualToLength",
                "Position is not equal to file length",
            )
            .ec("0026-00000016")
            .header("x-oss-next-append-position", length.to_string()),
            StoreError::TooLarge => {
                Self::invalid_argument("Your proposed upload exceeds the maximum allowed size")
            }
            StoreError::ClassNotAppendable(class) => Self::invalid_argument(format!(
                "Storage class {class} does not support AppendObject"
            ))
            .ec("0016-00000503"),
            StoreError::AlreadyExists => Self::new(
                StatusCode::CONFLICT,
                "FileAlreadyExists",
                "The object you specified already exists and can not be overwritten.",
            ),
            StoreError::BucketNotEmpty => Self::new(
                StatusCode::CONFLICT,
                "BucketNotEmpty",
                "The bucket you tried to delete is not empty.",
            ),
            StoreError::NoSuchUpload => Self::new(
                StatusCode::NOT_FOUND,
                "NoSuchUpload",
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
            ),
            StoreError::InvalidPart(n) => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                "One or more of the specified parts could not be found or the specified entity tag might not have matched the part's entity tag.",
            )
            .extra("PartNumber", n.to_string()),
            StoreError::InvalidPartOrder => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidPartOrder",
                "The list of parts was not in ascending order. Parts must be ordered by part number.",
            )
            .ec("0042-00000209"),
            StoreError::EntityTooSmall(n) => Self::new(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size.",
            )
            .ec("0042-00000213")
            .extra("PartNumber", n.to_string()),
            StoreError::MalformedPartList => Self::new(
                StatusCode::BAD_REQUEST,
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our published schema.",
            ),
            StoreError::Io(_) | StoreError::Index(_) | StoreError::InUse => {
                tracing::error!(bucket, key, error = %e, "storage failure");
                Self::internal("We encountered an internal error. Please try again.")
            }
        }
    }

    fn into_response(self, req_id: &str, host: &str, head: bool) -> Response<Body> {
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
            request_id: req_id.to_string(),
            host_id: host.to_string(),
            ec: self.ec.map(str::to_string),
            extras: self.extras,
        };
        let mut resp = if head {
            let mut r = Response::new(empty());
            if let Ok(v) = HeaderValue::from_str(&body.to_header()) {
                r.headers_mut().insert("x-oss-err", v);
            }
            r
        } else {
            let mut r = Response::new(full(body.to_xml()));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/xml"));
            r
        };
        *resp.status_mut() = self.status;
        if let Some(ec) = self.ec.and_then(|e| HeaderValue::from_str(e).ok()) {
            resp.headers_mut().insert("x-oss-ec", ec);
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(HeaderName::from_static(name), v);
            }
        }
        resp
    }
}

/// Why a connection is dropped without an answer (fault injection).
#[derive(Debug, thiserror::Error)]
#[error("fault injection: {0}")]
pub struct DropConnection(&'static str);

pub fn request_id() -> String {
    format!("{:024X}", rand::random::<u128>() >> 32)
}

fn is_ip_or_localhost(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// Splits a request into bucket and key. Virtual-hosted when the first label of the host is a
/// bucket name and the rest is an IP or `localhost` (`bucket.127.0.0.1:9000`), or the first label
/// names an existing bucket (`bucket.oss-cn-hangzhou.aliyuncs.com`); path style otherwise.
pub fn address(
    host: &str,
    raw_path: &str,
    bucket_exists: impl Fn(&str) -> bool,
) -> Result<(Option<String>, Option<String>), OssError> {
    let hostname = strip_port(host);
    let virtual_bucket = if is_ip_or_localhost(hostname) {
        None
    } else {
        hostname.split_once('.').and_then(|(first, rest)| {
            let first = first.to_ascii_lowercase();
            (crate::oss::valid_bucket_name(&first)
                && (is_ip_or_localhost(rest) || bucket_exists(&first)))
            .then_some(first)
        })
    };
    let path = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let bad_name = || {
        OssError::new(
            StatusCode::BAD_REQUEST,
            "InvalidObjectName",
            "The specified object is not valid.",
        )
    };
    let key_of = |raw: &str| -> Result<Option<String>, OssError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let key = decode(raw).ok_or_else(bad_name)?;
        if key.len() > crate::oss::MAX_KEY_LEN {
            return Err(bad_name());
        }
        Ok(Some(key))
    };
    match virtual_bucket {
        Some(b) => Ok((Some(b), key_of(path)?)),
        None => {
            // Split the bucket off the raw path first: oss2 sends `/` inside keys as `%2F`.
            let (b, rest) = path.split_once('/').unwrap_or((path, ""));
            if b.is_empty() {
                return Ok((None, None));
            }
            let bucket = decode(b).ok_or_else(|| OssError::invalid_argument("bad bucket name"))?;
            Ok((Some(bucket), key_of(rest)?))
        }
    }
}

fn rejection_error(r: Rejection, access_key_id: &str) -> OssError {
    match r {
        Rejection::UnknownAccessKey => OssError::new(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The OSS Access Key Id you provided does not exist in our records.",
        )
        .extra("OSSAccessKeyId", access_key_id),
        Rejection::Mismatch {
            string_to_sign,
            provided,
        } => OssError::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
        .ec("0002-00000040")
        .extra("OSSAccessKeyId", access_key_id)
        .extra("SignatureProvided", provided)
        .extra("StringToSign", string_to_sign),
        Rejection::Skewed => OssError::new(
            StatusCode::FORBIDDEN,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )
        .extra("ServerTime", crate::oss::xml::iso8601(Utc::now())),
        Rejection::Expired => OssError::new(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired.")
            .ec("0002-00000236"),
        Rejection::BadToken => OssError::new(
            StatusCode::FORBIDDEN,
            "InvalidSecurityToken",
            "The security token you provided is invalid.",
        ),
        Rejection::Invalid(why) => OssError::invalid_argument(why),
    }
}

fn authenticate(state: &ServerState, req: &OssRequest) -> Result<(), OssError> {
    let claim = sign::parse_claim(&req.headers, &req.query)
        .map_err(|e| OssError::invalid_argument(e.to_string()))?;
    let Some(creds) = &state.config.credentials else {
        if state.config.anonymous {
            return Ok(());
        }
        return Err(OssError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "The server has no credentials configured.",
        ));
    };
    let ak = match &claim {
        Claim::Anonymous if state.config.anonymous => return Ok(()),
        Claim::Anonymous => {
            return Err(OssError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "You have no right to access this object because of bucket acl.",
            ))
        }
        Claim::V4 { access_key_id, .. } | Claim::V1 { access_key_id, .. } => access_key_id.clone(),
    };
    let parts = RequestParts {
        method: req.method.as_str(),
        bucket: req.bucket.as_deref(),
        key: req.key.as_deref(),
        query: &req.query,
        headers: &req.headers,
    };
    sign::verify(creds, &claim, &parts, Utc::now()).map_err(|r| rejection_error(r, &ak))
}

fn finish(mut resp: Response<Body>, req_id: &str) -> Response<Body> {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(req_id) {
        h.insert("x-oss-request-id", v);
    }
    h.insert("server", HeaderValue::from_static("AliyunOSS"));
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now())) {
        h.insert("date", v);
    }
    if let Ok(v) = HeaderValue::from_str(&Utc::now().timestamp_millis().to_string()) {
        h.insert("x-oss-server-time", v);
    }
    resp
}

/// Entry point for one HTTP request: answers it, then counts it in the accounting.
pub async fn handle(
    state: Arc<ServerState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let id = request_id();
    if req.uri().path() == "/_appendfs/stats" {
        // Out of band: neither shaped nor counted, so reading it does not change a benchmark.
        let body = serde_json::to_string(&state.accounting.snapshot()).unwrap_or_default();
        let mut resp = Response::new(full(body));
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return Ok(finish(resp, &id));
    }
    let mut op = "Invalid";
    let mut received = 0;
    let outcome = answer(&state, req, &id, &mut op, &mut received).await;
    match &outcome {
        Ok(resp) => {
            state
                .accounting
                .answered(op, resp.status().as_u16(), received);
        }
        Err(_) => state.accounting.dropped(op, received),
    }
    let resp = outcome?;
    if let Some(d) = state.config.latency {
        // After the work, before the status line: the answer's first byte arrives this much
        // later than on loopback, as one round trip to OSS would add.
        tokio::time::sleep(d).await;
    }
    let counting = state.clone();
    Ok(resp.map(|body| {
        body.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                counting.accounting.sent(op, d.len() as u64);
            }
            f
        })
        .boxed()
    }))
}

/// Answers one request. `op` is set to the operation's name as soon as the request is parsed,
/// and `received` to the request body bytes read, for the accounting.
async fn answer(
    state: &Arc<ServerState>,
    req: Request<Incoming>,
    id: &str,
    op: &mut &'static str,
    received: &mut u64,
) -> Result<Response<Body>, DropConnection> {
    let (parts, body) = req.into_parts();
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let head = parts.method == Method::HEAD;
    let span = tracing::info_span!("oss_request", id = %id, method = %parts.method, path = %parts.uri.path());
    // Parsed before the faults are drawn so that injected failures are counted under the
    // operation they hit; a request that does not parse is answered with its error below.
    let parsed = (|| {
        let (bucket, key) = address(&host, parts.uri.path(), |b| state.bucket_exists(b))?;
        let query = parse_query(parts.uri.query().unwrap_or("")).ok_or_else(|| {
            OssError::invalid_argument("query string is not valid percent-encoded UTF-8")
        })?;
        Ok::<_, OssError>(OssRequest {
            id: id.to_string(),
            method: parts.method.clone(),
            host: host.clone(),
            bucket,
            key,
            query,
            headers: parts.headers.clone(),
            body: None,
            body_read: 0,
        })
    })();
    if let Ok(r) = &parsed {
        *op = super::ops::operation_name(r);
    }
    let decision = state.faults.decide();
    if let Some(d) = decision.delay {
        tokio::time::sleep(d).await;
    }
    if decision.reset {
        let _e = span.enter();
        tracing::info!("fault: reset");
        return Err(DropConnection("reset"));
    }
    // The body stays here until an operation takes it, so that an answer sent before reading
    // it can still leave the connection usable.
    let mut unread = Some(body);
    let result: Result<Response<Body>, OssError> = if decision.error500 {
        let _e = span.enter();
        tracing::info!("fault: error500");
        Err(OssError::internal(
            "We encountered an internal error. Please try again. (injected)",
        ))
    } else if decision.throttle503 {
        let _e = span.enter();
        tracing::info!("fault: throttle503");
        Err(OssError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "Please reduce your request rate. (injected)",
        ))
    } else {
        async {
            let mut req = parsed?;
            req.body = unread.take();
            let res = match authenticate(state, &req) {
                Ok(()) => super::ops::dispatch(state, &mut req).await,
                Err(e) => Err(e),
            };
            unread = req.body.take();
            *received += req.body_read;
            res
        }
        .instrument_in(span.clone())
        .await
    };

    if decision.lost_response {
        let _e = span.enter();
        tracing::info!("fault: lost-response (request applied, answer dropped)");
        return Err(DropConnection("lost-response"));
    }
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let _e = span.enter();
            tracing::debug!(code = e.code, status = e.status.as_u16(), "error response");
            e.into_response(id, &host, head)
        }
    };
    if let Some(body) = unread {
        match drain(body).await {
            Some(n) => *received += n,
            None => {
                // hyper cannot reuse a connection with an unread body: say so instead of
                // closing silently under a client that would send its next request there.
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
    }
    Ok(finish(resp, id))
}

/// Reads and discards a request body that no operation consumed, if it is small and arrives
/// promptly, and returns its length; `None` when the connection must be closed instead.
async fn drain(body: Incoming) -> Option<u64> {
    const LIMIT: usize = 16 * 1024 * 1024;
    if hyper::body::Body::size_hint(&body).lower() > LIMIT as u64 {
        return None; // declared too large: not worth waiting for
    }
    let limited = http_body_util::Limited::new(body, LIMIT);
    match tokio::time::timeout(std::time::Duration::from_secs(2), limited.collect()).await {
        Ok(Ok(c)) => Some(c.to_bytes().len() as u64),
        _ => None,
    }
}

trait InstrumentIn: std::future::Future + Sized {
    fn instrument_in(self, span: tracing::Span) -> tracing::instrument::Instrumented<Self> {
        tracing::Instrument::instrument(self, span)
    }
}
impl<F: std::future::Future> InstrumentIn for F {}

/// Serves one accepted connection until it closes or the server stops; paced when the server
/// has a bandwidth limit.
pub async fn serve_connection(
    state: Arc<ServerState>,
    stream: tokio::net::TcpStream,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match state.config.bandwidth {
        Some(rate) => serve_io(state, super::shape::Paced::new(stream, rate), stop).await,
        None => serve_io(state, stream, stop).await,
    }
}

async fn serve_io<I>(state: Arc<ServerState>, io: I, mut stop: tokio::sync::watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, path: &str) -> (Option<String>, Option<String>) {
        address(host, path, |b| b == "known").unwrap()
    }

    #[test]
    fn addressing() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            addr("127.0.0.1:9000", "/bkt/dir%2Fa%20b.log"),
            (s("bkt"), s("dir/a b.log"))
        );
        assert_eq!(addr("127.0.0.1:9000", "/bkt/"), (s("bkt"), None));
        assert_eq!(addr("127.0.0.1:9000", "/bkt"), (s("bkt"), None));
        assert_eq!(addr("127.0.0.1:9000", "/"), (None, None));
        assert_eq!(addr("bkt.127.0.0.1:9000", "/a/b"), (s("bkt"), s("a/b")));
        assert_eq!(addr("bkt.localhost", "/a"), (s("bkt"), s("a")));
        assert_eq!(
            addr("known.oss-cn-hangzhou.aliyuncs.com", "/k"),
            (s("known"), s("k"))
        );
        assert_eq!(
            addr("oss-cn-hangzhou.aliyuncs.com", "/bkt/k"),
            (s("bkt"), s("k"))
        );
        assert_eq!(addr("[::1]:9000", "/bkt/k"), (s("bkt"), s("k")));
        assert_eq!(
            addr("localhost:9000", "/bkt/..%2F..%2Fetc"),
            (s("bkt"), s("../../etc"))
        );
        assert!(address("h", &format!("/b/{}", "k".repeat(1024)), |_| false).is_err());
        assert!(address("h", "/b/%FF", |_| false).is_err());
    }
}
