//! The OSS calls the filesystem makes, each one request description plus the reading of its
//! answer; sending, signing and retrying live in `request.rs`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;

use super::body::ByteStream;
use super::error::{ClientError, Op};
use super::request::{check_key, request_id, Call};
use super::retry::{Idempotency, RetryPolicy};
use super::Client;
use crate::oss::meta::guess_content_type;
use crate::oss::range::{parse_content_range, resolve, RangeSpec, Resolved};
use crate::oss::xml::{ErrorBody, ListEntry, ListPage};
use crate::oss::ObjectMeta;

/// Settings that take effect when an object is created: sent with AppendObject at position 0
/// (and ignored by OSS on later appends, so not sent then), and with PutObject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Defaults to a guess from the key's extension.
    pub content_type: Option<String>,
    /// `x-oss-object-acl`: default, private, public-read, public-read-write.
    pub acl: Option<String>,
    /// `x-oss-storage-class`: Standard, IA, Archive (cold classes cannot be appended).
    pub storage_class: Option<String>,
    /// `x-oss-server-side-encryption`: AES256, KMS or SM4.
    pub server_side_encryption: Option<String>,
    /// `x-oss-meta-*` without the prefix.
    pub user_meta: BTreeMap<String, String>,
    /// `x-oss-forbid-overwrite: true` for PutObject: fail with FileAlreadyExists instead of
    /// replacing. Not sent with AppendObject, where it means nothing.
    pub forbid_overwrite: bool,
}

impl CreateOptions {
    fn apply<'a>(&self, mut call: Call<'a>, key: &str) -> Result<Call<'a>, ClientError> {
        let ct = self
            .content_type
            .as_deref()
            .unwrap_or_else(|| guess_content_type(key));
        call = call.header("content-type", ct)?;
        if let Some(v) = &self.acl {
            call = call.header("x-oss-object-acl", v)?;
        }
        if let Some(v) = &self.storage_class {
            call = call.header("x-oss-storage-class", v)?;
        }
        if let Some(v) = &self.server_side_encryption {
            call = call.header("x-oss-server-side-encryption", v)?;
        }
        for (name, value) in &self.user_meta {
            let header = format!("x-oss-meta-{}", name.to_ascii_lowercase());
            let n = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                ClientError::InvalidArgument(format!("bad user metadata name {name:?}"))
            })?;
            let v = HeaderValue::from_str(value).map_err(|_| {
                ClientError::InvalidArgument(format!("bad value for user metadata {name:?}"))
            })?;
            call.headers.insert(n, v);
        }
        Ok(call)
    }
}

/// A successful AppendObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// `x-oss-next-append-position`: the object's new length.
    pub next_position: u64,
    /// `x-oss-hash-crc64ecma`: CRC-64 of the whole object after this append (absent only from
    /// servers that do not compute it).
    pub crc64: Option<u64>,
    pub request_id: String,
}

/// A successful PutObject or CopyObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub etag: String,
    pub crc64: Option<u64>,
    pub request_id: String,
}

/// `Content-Range: bytes first-last/total` of a 206.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    /// `None` when the server sent `*`.
    pub total: Option<u64>,
}

/// A GetObject whose body is still to be read.
#[derive(Debug)]
pub struct GetObjectOutput {
    /// Object metadata; `size` is the whole object's length (from Content-Range on a 206).
    pub meta: ObjectMeta,
    /// `None` when the whole object came back (no range asked, or the server ignored it).
    pub content_range: Option<ContentRange>,
    /// Bytes in `body`.
    pub content_length: u64,
    pub request_id: String,
    pub body: ByteStream,
}

/// A GetObject read to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectData {
    pub meta: ObjectMeta,
    pub content_range: Option<ContentRange>,
    pub data: Bytes,
    pub request_id: String,
}

/// A bounded ranged read ([`Client::get_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeData {
    pub data: Bytes,
    /// The object's whole length, when the answer said.
    pub total: Option<u64>,
    pub object_type: Option<crate::oss::ObjectType>,
    /// `x-oss-hash-crc64ecma`: CRC-64 of the whole object (of length `total`), not of `data`.
    pub crc64: Option<u64>,
    pub etag: String,
    pub request_id: String,
}

/// Most bytes reserved up front for an answer (by what it announced, so a lying one cannot make
/// us allocate more than this before sending the bytes).
const MAX_PREALLOC: u64 = 64 << 20;

/// Reads `limit` bytes after skipping `skip` from `body`, then stops (dropping the rest of the
/// answer and its connection). With `exact`, the body must hold exactly `limit` bytes: one more
/// is an error (a server that sends more than its Content-Range said).
async fn read_bounded(
    key: &str,
    request_id: &str,
    mut body: ByteStream,
    mut skip: u64,
    limit: u64,
    exact: bool,
) -> Result<Bytes, ClientError> {
    use futures::StreamExt;
    // Room for the whole answer at once: growing the buffer as chunks arrive would copy the
    // bytes again at every doubling and hold two buffers meanwhile. Allocated only once a
    // second chunk arrives (a single chunk is kept as is).
    let mut out = bytes::BytesMut::new();
    let mut single: Option<Bytes> = None;
    let mut got = 0u64;
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk?;
        if skip > 0 {
            let s = skip.min(chunk.len() as u64);
            skip -= s;
            let _ = chunk.split_to(s as usize);
        }
        if chunk.is_empty() {
            continue;
        }
        let room = limit - got;
        if chunk.len() as u64 > room {
            if exact {
                return Err(ClientError::InvalidResponse {
                    op: Op::GetObject,
                    key: key.to_string(),
                    request_id: request_id.to_string(),
                    reason: format!("the body carries more than the {limit} bytes announced"),
                });
            }
            chunk.truncate(room as usize);
        }
        got += chunk.len() as u64;
        // One chunk (the common case) is kept as is, without a copy.
        if single.is_none() && out.is_empty() {
            single = Some(chunk);
        } else {
            if let Some(first) = single.take() {
                out.reserve(limit.min(MAX_PREALLOC) as usize);
                out.extend_from_slice(&first);
            }
            out.extend_from_slice(&chunk);
        }
        if got == limit && !exact {
            break;
        }
    }
    Ok(single.unwrap_or_else(|| out.freeze()))
}

/// Why the mount-time bucket check failed, with advice a person can act on.
#[derive(Debug, thiserror::Error)]
#[error("{hint} ({cause})")]
pub struct CheckError {
    pub hint: String,
    pub cause: ClientError,
}

fn invalid(op: Op, key: &str, headers: &HeaderMap, reason: impl Into<String>) -> ClientError {
    ClientError::InvalidResponse {
        op,
        key: key.to_string(),
        request_id: request_id(headers),
        reason: reason.into(),
    }
}

fn header_u64(
    op: Op,
    key: &str,
    headers: &HeaderMap,
    name: &str,
) -> Result<Option<u64>, ClientError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| invalid(op, key, headers, format!("bad {name} header {v:?}"))),
    }
}

fn etag(headers: &HeaderMap) -> String {
    headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn meta_from(op: Op, key: &str, headers: &HeaderMap) -> Result<ObjectMeta, ClientError> {
    ObjectMeta::from_headers(headers).map_err(|e| invalid(op, key, headers, e.to_string()))
}

#[derive(Deserialize)]
struct CopyResult {
    #[serde(rename = "ETag", default)]
    etag: String,
}

impl Client {
    /// HeadObject: type, length, next append position, CRC-64, storage class, ETag, mtime and
    /// user metadata of `key`.
    pub async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        check_key(key)?;
        let call = Call::new(Op::HeadObject, Method::HEAD, Some(key));
        self.inner
            .execute(&call, &self.inner.config.retry, |resp| async move {
                meta_from(Op::HeadObject, key, resp.headers())
            })
            .await
    }

    /// GetObject, optionally of one range, with the body as a stream. Ranges are always sent
    /// with `x-oss-range-behavior: standard` (end clamped to the object, 416 InvalidRange past
    /// it); never with If-Match, since an appendable object's ETag changes on every append.
    /// Retries cover the request up to the response headers; a body that breaks off is
    /// reported by the stream and the caller asks again from where it got to.
    pub async fn get_object(
        &self,
        key: &str,
        range: Option<RangeSpec>,
    ) -> Result<GetObjectOutput, ClientError> {
        check_key(key)?;
        let call = get_call(key, range)?;
        self.inner
            .execute(&call, &self.inner.config.retry, |resp| async move {
                get_output(key, range, resp)
            })
            .await
    }

    /// [`Client::get_object`] read into memory, retried as a whole. When a server ignores the
    /// range (200 with the whole object), the requested part is cut out here so callers always
    /// get the bytes they asked for (none if the range starts past the end).
    pub async fn get_object_bytes(
        &self,
        key: &str,
        range: Option<RangeSpec>,
    ) -> Result<ObjectData, ClientError> {
        check_key(key)?;
        let call = get_call(key, range)?;
        self.inner
            .execute(&call, &self.inner.config.retry, |resp| async move {
                let out = get_output(key, range, resp)?;
                let data = out.body.collect().await?;
                let (data, content_range) = match (range, out.content_range) {
                    (Some(spec), None) => {
                        let len = data.len() as u64;
                        match resolve(Some(spec), len, true) {
                            Resolved::Partial { first, last } => (
                                data.slice(first as usize..=last as usize),
                                Some(ContentRange {
                                    first,
                                    last,
                                    total: Some(len),
                                }),
                            ),
                            _ => (Bytes::new(), None),
                        }
                    }
                    (_, cr) => (data, cr),
                };
                Ok(ObjectData {
                    meta: out.meta,
                    content_range,
                    data,
                    request_id: out.request_id,
                })
            })
            .await
    }

    /// Bytes `first..=last` of `key`, read with a bound: at most `last - first + 1` bytes are
    /// taken from any answer. A 206 that carries more than its Content-Range announced, or a
    /// Content-Range other than asked, is an [`ClientError::InvalidResponse`]; a 200 (a server
    /// or gateway that ignored `Range`) is read only up to the range and then dropped, so an
    /// endless or huge body costs no more memory than the range. Fewer bytes than asked means
    /// the object ends earlier (`total` says where, when the server said).
    pub async fn get_range(
        &self,
        key: &str,
        first: u64,
        last: u64,
    ) -> Result<RangeData, ClientError> {
        check_key(key)?;
        if last < first {
            return Err(ClientError::InvalidArgument(format!(
                "empty range {first}..={last}"
            )));
        }
        let range = RangeSpec::FromTo(first, last);
        let call = get_call(key, Some(range))?;
        let want = last - first + 1;
        self.inner
            .execute(&call, &self.inner.config.retry, |resp| async move {
                let out = get_output(key, Some(range), resp)?;
                let (skip, limit, total) = match out.content_range {
                    Some(cr) => (0, cr.last - cr.first + 1, cr.total),
                    // The whole object: cut the range out while reading.
                    None => (first, want, out.body.expected_len()),
                };
                if limit > want {
                    return Err(ClientError::InvalidResponse {
                        op: Op::GetObject,
                        key: key.to_string(),
                        request_id: out.request_id.clone(),
                        reason: format!(
                            "asked for {want} bytes at {first}, the answer announces {limit}"
                        ),
                    });
                }
                let data = read_bounded(
                    key,
                    &out.request_id,
                    out.body,
                    skip,
                    limit,
                    out.content_range.is_some(),
                )
                .await?;
                Ok(RangeData {
                    data,
                    total,
                    object_type: out.meta.object_type,
                    crc64: out.meta.crc64,
                    etag: out.meta.etag,
                    request_id: out.request_id,
                })
            })
            .await
    }

    /// AppendObject of `data` at `position`. `opts` are sent only when `position == 0` (they
    /// matter only when the append creates the object). Never retried once the request may have
    /// reached the server: a timeout, reset, lost response or 5xx comes back as
    /// [`ClientError::Ambiguous`], and a 409 PositionNotEqualToLength carries the object's length
    /// ([`ClientError::next_append_position`]); deciding whether the bytes landed (HEAD, compare
    /// length and CRC) is the caller's job.
    pub async fn append_object(
        &self,
        key: &str,
        position: u64,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<AppendOutcome, ClientError> {
        self.append_inner(key, position, data, opts, false).await
    }

    /// [`Client::append_object`] with `Content-MD5`: OSS refuses (400 InvalidDigest) a body
    /// that did not arrive as sent. For appends whose answer cannot be checked against a known
    /// CRC-64 (the object's CRC at `position` is unknown).
    pub async fn append_object_md5(
        &self,
        key: &str,
        position: u64,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<AppendOutcome, ClientError> {
        self.append_inner(key, position, data, opts, true).await
    }

    async fn append_inner(
        &self,
        key: &str,
        position: u64,
        data: Bytes,
        opts: &CreateOptions,
        md5: bool,
    ) -> Result<AppendOutcome, ClientError> {
        check_key(key)?;
        let mut call = Call::new(Op::AppendObject, Method::POST, Some(key))
            .query("append", "")
            .query("position", position.to_string());
        if md5 {
            use base64::Engine;
            use md5::Digest;
            let digest = md5::Md5::digest(&data);
            call = call.header(
                "content-md5",
                &base64::engine::general_purpose::STANDARD.encode(digest),
            )?;
        }
        call.idempotency = Idempotency::NotIdempotent;
        if position == 0 {
            call = opts.apply(call, key)?;
        }
        call.body = Some(data);
        self.inner
            .execute(&call, &self.inner.config.retry, |resp| async move {
                let h = resp.headers();
                let next = header_u64(Op::AppendObject, key, h, "x-oss-next-append-position")?
                    .ok_or_else(|| {
                        invalid(
                            Op::AppendObject,
                            key,
                            h,
                            "no x-oss-next-append-position in the answer",
                        )
                    })?;
                Ok(AppendOutcome {
                    next_position: next,
                    crc64: header_u64(Op::AppendObject, key, h, "x-oss-hash-crc64ecma")?,
                    request_id: request_id(h),
                })
            })
            .await
    }

    /// PutObject (directory markers, small whole files). Retried like any idempotent call unless
    /// `opts.forbid_overwrite`, where a second attempt could report FileAlreadyExists for our own
    /// first one: then an unclear outcome is [`ClientError::Ambiguous`].
    pub async fn put_object(
        &self,
        key: &str,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<WriteOutcome, ClientError> {
        check_key(key)?;
        let mut call = opts.apply(Call::new(Op::PutObject, Method::PUT, Some(key)), key)?;
        if opts.forbid_overwrite {
            call = call.header("x-oss-forbid-overwrite", "true")?;
            call.idempotency = Idempotency::NotIdempotent;
        }
        call.body = Some(data);
        self.inner
            .execute(&call, &self.inner.config.retry, |resp| async move {
                let h = resp.headers();
                Ok(WriteOutcome {
                    etag: etag(h),
                    crc64: header_u64(Op::PutObject, key, h, "x-oss-hash-crc64ecma")?,
                    request_id: request_id(h),
                })
            })
            .await
    }

    /// DeleteObject. Deleting a missing key succeeds, as on OSS.
    pub async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        check_key(key)?;
        let call = Call::new(Op::DeleteObject, Method::DELETE, Some(key));
        self.inner
            .execute(&call, &self.inner.config.retry, |_| async { Ok(()) })
            .await
    }

    /// CopyObject within the bucket, metadata copied. `forbid_overwrite` as for PutObject.
    pub async fn copy_object(
        &self,
        src_key: &str,
        dst_key: &str,
        forbid_overwrite: bool,
    ) -> Result<WriteOutcome, ClientError> {
        check_key(src_key)?;
        check_key(dst_key)?;
        let source = format!(
            "/{}/{}",
            self.inner.addressing.bucket,
            crate::oss::encode::encode_path(src_key)
        );
        let mut call = Call::new(Op::CopyObject, Method::PUT, Some(dst_key))
            .header("x-oss-copy-source", &source)?;
        if forbid_overwrite {
            call = call.header("x-oss-forbid-overwrite", "true")?;
            call.idempotency = Idempotency::NotIdempotent;
        }
        call.body = Some(Bytes::new());
        self.inner
            .execute(&call, &self.inner.config.retry, |resp| async move {
                let h = resp.headers().clone();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| super::request::transport_error(Op::CopyObject, dst_key, e))?;
                let text = String::from_utf8_lossy(&body);
                // S3-style services can report a failed copy inside a 200.
                if let Some(doc) = ErrorBody::from_xml(&text) {
                    return Err(super::error::oss_error(
                        Op::CopyObject,
                        dst_key,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &h,
                        doc.to_xml().as_bytes(),
                    ));
                }
                let etag_value = match quick_xml::de::from_str::<CopyResult>(&text) {
                    Ok(r) if !r.etag.is_empty() => r.etag,
                    _ => etag(&h),
                };
                Ok(WriteOutcome {
                    etag: etag_value,
                    crc64: header_u64(Op::CopyObject, dst_key, &h, "x-oss-hash-crc64ecma")?,
                    request_id: request_id(&h),
                })
            })
            .await
    }

    /// One ListObjectsV2 page (`encoding-type=url`, decoded in the result). Empty `prefix` and
    /// `None`s are left out of the request.
    pub async fn list_objects_v2(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation_token: Option<&str>,
        start_after: Option<&str>,
        max_keys: Option<u32>,
    ) -> Result<ListPage, ClientError> {
        let call = list_call(prefix, delimiter, continuation_token, start_after, max_keys);
        self.list_with(&call, &self.inner.config.retry).await
    }

    async fn list_with(
        &self,
        call: &Call<'_>,
        policy: &RetryPolicy,
    ) -> Result<ListPage, ClientError> {
        self.inner
            .execute(call, policy, |resp| async move {
                let h = resp.headers().clone();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| super::request::transport_error(Op::ListObjectsV2, "", e))?;
                let text = std::str::from_utf8(&body)
                    .map_err(|_| invalid(Op::ListObjectsV2, "", &h, "listing is not UTF-8"))?;
                ListPage::from_xml(text)
                    .map_err(|e| invalid(Op::ListObjectsV2, "", &h, e.to_string()))
            })
            .await
    }

    /// Every entry under `prefix`, following continuation tokens: objects, then the common
    /// prefixes (directories when `delimiter` is `/`).
    pub async fn list_all(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<ListEntry>, Vec<String>), ClientError> {
        let mut entries = Vec::new();
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_objects_v2(prefix, delimiter, token.as_deref(), None, Some(1000))
                .await?;
            entries.extend(page.contents);
            prefixes.extend(page.common_prefixes);
            match page.next_continuation_token {
                Some(t) if page.is_truncated => {
                    if token.as_deref() == Some(t.as_str()) {
                        return Err(ClientError::InvalidResponse {
                            op: Op::ListObjectsV2,
                            key: String::new(),
                            request_id: String::new(),
                            reason: format!("listing repeats continuation token {t:?}"),
                        });
                    }
                    token = Some(t);
                }
                _ => return Ok((entries, prefixes)),
            }
        }
    }

    /// Mount-time check: a ListObjectsV2 of at most one key under `prefix`, which proves the
    /// endpoint answers, the bucket exists, the keys are right and listing is allowed. Definite
    /// answers fail at once (a refused connection, an unknown host, a timeout, 403, 404): the
    /// error says what to fix. Transient ones (5xx, 503 throttling, a reset, an unreadable
    /// answer) are the server answering: they are retried with the normal policy.
    pub async fn check_bucket(&self, prefix: &str) -> Result<(), CheckError> {
        let call = list_call(prefix, Some("/"), None, None, Some(1));
        let policy = &self.inner.config.retry;
        let started = std::time::Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let cause = match self.list_with(&call, &RetryPolicy::none()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let definite = matches!(
                cause.transport_kind(),
                Some(super::error::TransportKind::Connect | super::error::TransportKind::Timeout)
            ) || !cause.is_transient()
                || matches!(cause, ClientError::Credentials(_));
            let delay = (!definite)
                .then(|| {
                    policy.next_delay(attempts, started.elapsed(), super::retry::jitter_unit())
                })
                .flatten();
            match delay {
                Some(d) => {
                    tracing::warn!(attempt = attempts, error = %cause, "bucket check failed; retrying");
                    tokio::time::sleep(d).await;
                }
                None => {
                    return Err(CheckError {
                        hint: self.check_hint(&cause).await,
                        cause,
                    })
                }
            }
        }
    }

    async fn check_hint(&self, e: &ClientError) -> String {
        let bucket = &self.inner.addressing.bucket;
        let endpoint = &self.inner.config.endpoint;
        // Before asking the provider again below: a missing source would be searched twice.
        match e {
            ClientError::Credentials(super::CredentialsError::NotFound { .. }) => {
                return format!(
                    "no credentials to sign requests with: set {} and {}, or use a passwd file, \
                     ~/.ossutilconfig, --credential-process or --ram-role (README: Credentials)",
                    crate::oss::credentials::ENV_ACCESS_KEY_ID,
                    crate::oss::credentials::ENV_ACCESS_KEY_SECRET
                );
            }
            // The cause, shown right after the hint, already names the source and the fix.
            ClientError::Credentials(_) => return "cannot use the configured credentials".into(),
            _ => {}
        }
        let ak = match &self.inner.credentials {
            Some(p) => p
                .credentials()
                .await
                .map(|c| c.access_key_id)
                .unwrap_or_default(),
            None => String::new(),
        };
        if let Some(kind) = e.transport_kind() {
            return match kind {
                super::error::TransportKind::Connect => format!(
                    "cannot connect to endpoint {endpoint}: check the address, port and http/https"
                ),
                super::error::TransportKind::Timeout => format!(
                    "endpoint {endpoint} did not answer within {:?}",
                    self.inner.config.request_timeout
                ),
                _ => format!("endpoint {endpoint} broke off the connection"),
            };
        }
        match e.code().unwrap_or("") {
            "NoSuchBucket" => format!(
                "bucket {bucket:?} does not exist at {endpoint} (check the bucket name, and that the endpoint is in the bucket's region)"
            ),
            "InvalidAccessKeyId" => format!(
                "access key id {ak:?} is not known to {endpoint} (check {})",
                crate::oss::credentials::ENV_ACCESS_KEY_ID
            ),
            "SignatureDoesNotMatch" => format!(
                "signature rejected: the access key secret does not belong to access key id {ak:?} (check {})",
                crate::oss::credentials::ENV_ACCESS_KEY_SECRET
            ),
            "InvalidSecurityToken" | "SecurityTokenExpired" => format!(
                "the STS token was rejected (check {})",
                crate::oss::credentials::ENV_SESSION_TOKEN
            ),
            "AccessDenied" => format!(
                "access key id {ak:?} may not list bucket {bucket:?} (it needs oss:ListObjects, plus object read/write permissions)"
            ),
            "RequestTimeTooSkewed" => {
                "this machine's clock is more than 15 minutes off OSS's; fix the clock (NTP)".into()
            }
            "SecondLevelDomainForbidden" => format!(
                "{endpoint} refuses path-style requests: drop --path-style"
            ),
            _ => format!("bucket {bucket:?} at {endpoint} is not usable"),
        }
    }
}

fn get_call(key: &str, range: Option<RangeSpec>) -> Result<Call<'_>, ClientError> {
    let mut call = Call::new(Op::GetObject, Method::GET, Some(key));
    if let Some(r) = range {
        call = call
            .header("range", &r.header_value())?
            .header("x-oss-range-behavior", "standard")?;
    }
    Ok(call)
}

fn get_output(
    key: &str,
    range: Option<RangeSpec>,
    resp: reqwest::Response,
) -> Result<GetObjectOutput, ClientError> {
    let h = resp.headers();
    let mut meta = meta_from(Op::GetObject, key, h)?;
    let content_length = meta.size;
    let content_range = if resp.status() == StatusCode::PARTIAL_CONTENT {
        let raw = h
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| invalid(Op::GetObject, key, h, "206 without Content-Range"))?;
        let (first, last, total) = parse_content_range(raw)
            .filter(|(a, b, _)| a <= b)
            .ok_or_else(|| invalid(Op::GetObject, key, h, format!("bad Content-Range {raw:?}")))?;
        let wanted_first = match range {
            Some(RangeSpec::FromTo(a, _)) | Some(RangeSpec::From(a)) => Some(a),
            _ => None,
        };
        if wanted_first.is_some_and(|a| a != first) || last - first + 1 != content_length {
            return Err(invalid(
                Op::GetObject,
                key,
                h,
                format!(
                    "Content-Range {raw:?} does not match the request ({range:?}, {content_length} bytes)"
                ),
            ));
        }
        meta.size = total.unwrap_or(last + 1);
        Some(ContentRange { first, last, total })
    } else {
        None
    };
    Ok(GetObjectOutput {
        meta,
        content_range,
        content_length,
        request_id: request_id(h),
        body: ByteStream::new(key, resp),
    })
}

fn list_call<'a>(
    prefix: &str,
    delimiter: Option<&str>,
    continuation_token: Option<&str>,
    start_after: Option<&str>,
    max_keys: Option<u32>,
) -> Call<'a> {
    let mut call = Call::new(Op::ListObjectsV2, Method::GET, None).query("list-type", "2");
    if !prefix.is_empty() {
        call = call.query("prefix", prefix);
    }
    if let Some(d) = delimiter.filter(|d| !d.is_empty()) {
        call = call.query("delimiter", d);
    }
    if let Some(t) = continuation_token.filter(|t| !t.is_empty()) {
        call = call.query("continuation-token", t);
    }
    if let Some(s) = start_after.filter(|s| !s.is_empty()) {
        call = call.query("start-after", s);
    }
    if let Some(n) = max_keys {
        call = call.query("max-keys", n.to_string());
    }
    call.query("encoding-type", "url")
}
