//! The OSS operations of the local server, one function each, on top of [`Store`]: AppendObject,
//! PutObject, CopyObject, GetObject (ranges, conditionals), HeadObject, GetObjectMeta,
//! DeleteObject, ListObjectsV2 / ListObjects, and the bucket calls the SDKs need; multipart
//! calls are routed here and answered in [`multipart`].

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, Response, StatusCode};
use md5::{Digest, Md5};

use super::http::{empty, full, Body, OssError, OssRequest};
use super::list::{self, ListParams};
use super::multipart;
use super::store::{CreateAttrs, ObjectRecord, StoreError};
use super::{CopyAppendable, ServerState};
use crate::oss::meta::{canonical_storage_class, guess_content_type, STORED_HTTP_HEADERS};
use crate::oss::range::{self, RangeSpec, Resolved};
use crate::oss::xml::{copy_result_xml, iso8601, ListEntry, ListPage};
use crate::oss::{ObjectType, MAX_OBJECT_SIZE};

/// GET bodies are sent in pieces of this size so a large object never sits in memory whole.
const READ_PIECE: u64 = 1024 * 1024;
/// User metadata limit per object.
const MAX_USER_META: usize = 8 * 1024;

/// The operation a request asks for, by the name OSS gives it: the one routing table, used by
/// [`dispatch`] and by the accounting (which also names requests refused before dispatch).
/// `Unknown` is answered 405, `NotImplemented` 501.
pub fn operation_name(req: &OssRequest) -> &'static str {
    let m = &req.method;
    if req.bucket.is_none() {
        return if *m == Method::GET {
            "ListBuckets"
        } else {
            "Unknown"
        };
    }
    if req.key.is_none() {
        return match *m {
            Method::PUT if req.query.iter().all(|(k, _)| k.is_empty()) => "PutBucket",
            Method::DELETE if req.query.is_empty() => "DeleteBucket",
            Method::GET if req.has("bucketInfo") => "GetBucketInfo",
            Method::GET if req.has("location") => "GetBucketLocation",
            Method::GET if req.has("uploads") => "ListMultipartUploads",
            Method::GET if req.q("list-type") == Some("2") => "ListObjectsV2",
            Method::GET
                if req
                    .query
                    .iter()
                    .all(|(k, _)| LIST_V1_PARAMS.contains(&k.as_str())) =>
            {
                "ListObjects"
            }
            Method::HEAD | Method::GET | Method::PUT | Method::POST | Method::DELETE => {
                "NotImplemented"
            }
            _ => "Unknown",
        };
    }
    let copy = req.headers.contains_key("x-oss-copy-source");
    if req.has("uploadId") || (*m == Method::POST && req.has("uploads")) {
        return match *m {
            Method::POST if req.has("uploads") => "InitiateMultipartUpload",
            Method::PUT if copy => "UploadPartCopy",
            Method::PUT => "UploadPart",
            Method::POST => "CompleteMultipartUpload",
            Method::DELETE => "AbortMultipartUpload",
            Method::GET => "ListParts",
            _ => "Unknown",
        };
    }
    match *m {
        Method::POST if req.has("append") => "AppendObject",
        Method::PUT if copy => "CopyObject",
        Method::PUT => "PutObject",
        Method::GET => "GetObject",
        Method::HEAD if req.has("objectMeta") => "GetObjectMeta",
        Method::HEAD => "HeadObject",
        Method::DELETE => "DeleteObject",
        _ => "Unknown",
    }
}

pub async fn dispatch(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
) -> Result<Response<Body>, OssError> {
    let op = operation_name(req);
    if op == "Unknown" {
        return Err(method_not_allowed());
    }
    if op == "NotImplemented" {
        return Err(OssError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "This bucket operation is not implemented by the appendfs local server.",
        ));
    }
    state.count(op);
    let bucket = req.bucket.clone().unwrap_or_default();
    let Some(key) = req.key.clone() else {
        return match op {
            "ListBuckets" => list_buckets(state).await,
            _ => bucket_op(state, req, op, &bucket).await,
        };
    };
    let (b, k) = (bucket.as_str(), key.as_str());
    match op {
        "InitiateMultipartUpload" => multipart::initiate(state, req, b, k).await,
        "UploadPartCopy" => multipart::upload_part_copy(state, req, b, k).await,
        "UploadPart" => multipart::upload_part(state, req, b, k).await,
        "CompleteMultipartUpload" => multipart::complete(state, req, b, k).await,
        "AbortMultipartUpload" => multipart::abort(state, req, b, k).await,
        "ListParts" => multipart::list_parts(state, req, b, k).await,
        "AppendObject" => append(state, req, b, k).await,
        "CopyObject" => copy(state, req, b, k).await,
        "PutObject" => put(state, req, b, k).await,
        "GetObject" => get(state, req, b, k, false).await,
        "GetObjectMeta" => object_meta(state, b, k).await,
        "HeadObject" => get(state, req, b, k, true).await,
        "DeleteObject" => {
            state
                .run(move |s| {
                    s.delete(&bucket, &key)
                        .map_err(|e| OssError::from_store(e, &bucket, &key))
                })
                .await?;
            Ok(status(StatusCode::NO_CONTENT))
        }
        _ => Err(method_not_allowed()),
    }
}

pub(super) fn method_not_allowed() -> OssError {
    OssError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
    )
}

pub(super) fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = code;
    r
}

pub(super) fn xml(body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    r
}

pub(super) fn set(resp: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

async fn bucket_op(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
    op: &'static str,
    bucket: &str,
) -> Result<Response<Body>, OssError> {
    let b = bucket.to_string();
    match op {
        "PutBucket" => {
            if !crate::oss::valid_bucket_name(bucket) {
                return Err(OssError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidBucketName",
                    "The specified bucket is not valid.",
                )
                .extra("BucketName", bucket));
            }
            state
                .run(move |s| {
                    s.create_bucket(&b)
                        .map_err(|e| OssError::from_store(e, &b, ""))
                })
                .await?;
            Ok(status(StatusCode::OK))
        }
        "DeleteBucket" => {
            state
                .run(move |s| {
                    s.delete_bucket(&b)
                        .map_err(|e| OssError::from_store(e, &b, ""))
                })
                .await?;
            Ok(status(StatusCode::NO_CONTENT))
        }
        "GetBucketInfo" => bucket_info(state, bucket).await,
        "GetBucketLocation" => {
            require_bucket(state, bucket).await?;
            Ok(xml(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint>oss-{}</LocationConstraint>\n",
                state.config.region
            )))
        }
        "ListMultipartUploads" => multipart::list_uploads(state, req, bucket).await,
        "ListObjectsV2" => list_v2(state, req, bucket).await,
        "ListObjects" => list_v1(state, req, bucket).await,
        _ => Err(method_not_allowed()),
    }
}

const LIST_V1_PARAMS: &[&str] = &["prefix", "marker", "delimiter", "max-keys", "encoding-type"];

async fn require_bucket(state: &Arc<ServerState>, bucket: &str) -> Result<(), OssError> {
    let b = bucket.to_string();
    match state
        .run(move |s| s.bucket(&b).map_err(|e| OssError::from_store(e, &b, "")))
        .await?
    {
        Some(_) => Ok(()),
        None => Err(OssError::no_such_bucket(bucket)),
    }
}

async fn bucket_info(state: &Arc<ServerState>, bucket: &str) -> Result<Response<Body>, OssError> {
    let b = bucket.to_string();
    let rec = state
        .run(move |s| s.bucket(&b).map_err(|e| OssError::from_store(e, &b, "")))
        .await?
        .ok_or_else(|| OssError::no_such_bucket(bucket))?;
    let created = DateTime::from_timestamp_millis(rec.created_ms).unwrap_or_default();
    let region = &state.config.region;
    Ok(xml(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<BucketInfo>
  <Bucket>
    <AccessMonitor>Disabled</AccessMonitor>
    <CreationDate>{created}</CreationDate>
    <ExtranetEndpoint>oss-{region}.aliyuncs.com</ExtranetEndpoint>
    <IntranetEndpoint>oss-{region}-internal.aliyuncs.com</IntranetEndpoint>
    <Location>oss-{region}</Location>
    <StorageClass>Standard</StorageClass>
    <TransferAcceleration>Disabled</TransferAcceleration>
    <CrossRegionReplication>Disabled</CrossRegionReplication>
    <Name>{bucket}</Name>
    <ResourceGroupId>rg-default</ResourceGroupId>
    <Owner>
      <DisplayName>appendfs</DisplayName>
      <ID>appendfs</ID>
    </Owner>
    <AccessControlList>
      <Grant>private</Grant>
    </AccessControlList>
    <ServerSideEncryptionRule>
      <SSEAlgorithm>None</SSEAlgorithm>
    </ServerSideEncryptionRule>
    <BucketPolicy>
      <LogBucket></LogBucket>
      <LogPrefix></LogPrefix>
    </BucketPolicy>
    <DataRedundancyType>LRS</DataRedundancyType>
    <Versioning></Versioning>
    <Comment></Comment>
  </Bucket>
</BucketInfo>
",
        created = iso8601(created),
    )))
}

async fn list_buckets(state: &Arc<ServerState>) -> Result<Response<Body>, OssError> {
    let all = state
        .run(|s| s.buckets().map_err(|e| OssError::from_store(e, "", "")))
        .await?;
    let region = &state.config.region;
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult>\n  <Owner><ID>appendfs</ID><DisplayName>appendfs</DisplayName></Owner>\n  <Buckets>\n");
    for (name, rec) in all {
        let created = DateTime::from_timestamp_millis(rec.created_ms).unwrap_or_default();
        s.push_str(&format!(
            "    <Bucket><CreationDate>{}</CreationDate><ExtranetEndpoint>oss-{region}.aliyuncs.com</ExtranetEndpoint><IntranetEndpoint>oss-{region}-internal.aliyuncs.com</IntranetEndpoint><Location>oss-{region}</Location><Name>{name}</Name><Region>{region}</Region><StorageClass>Standard</StorageClass></Bucket>\n",
            iso8601(created)
        ));
    }
    s.push_str("  </Buckets>\n</ListAllMyBucketsResult>\n");
    Ok(xml(s))
}

/// Creation attributes from request headers, validated as the service does.
pub(super) fn create_attrs(req: &OssRequest, key: &str) -> Result<CreateAttrs, OssError> {
    let storage_class = match req.header("x-oss-storage-class") {
        None => "Standard".to_string(),
        Some(c) => canonical_storage_class(c)
            .ok_or_else(|| OssError::invalid_argument(format!("Invalid storage class {c:?}")))?
            .to_string(),
    };
    let acl = match req.header("x-oss-object-acl") {
        None => None,
        Some(a @ ("default" | "private" | "public-read" | "public-read-write")) => {
            Some(a.to_string())
        }
        Some(a) => {
            return Err(OssError::invalid_argument(format!(
                "Invalid object acl {a:?}"
            )))
        }
    };
    let sse = match req.header("x-oss-server-side-encryption") {
        None => None,
        Some(v @ ("AES256" | "KMS" | "SM4")) => Some(v.to_string()),
        Some(v) => {
            return Err(OssError::invalid_argument(format!(
                "Invalid server side encryption {v:?}"
            )))
        }
    };
    let mut user_meta = BTreeMap::new();
    let mut meta_size = 0;
    let mut http_headers = BTreeMap::new();
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if let Some(m) = name.as_str().strip_prefix("x-oss-meta-") {
            meta_size += m.len() + value.len();
            user_meta.insert(m.to_string(), value);
        } else if STORED_HTTP_HEADERS.contains(&name.as_str()) {
            http_headers.insert(name.as_str().to_string(), value);
        }
    }
    if meta_size > MAX_USER_META {
        return Err(OssError::invalid_argument("User metadata exceeds 8 KB"));
    }
    Ok(CreateAttrs {
        content_type: req
            .header("content-type")
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| guess_content_type(key))
            .to_string(),
        storage_class,
        acl,
        sse,
        user_meta,
        http_headers,
        tagging: req.header("x-oss-tagging").map(str::to_string),
    })
}

/// Checks Content-MD5 when sent.
pub(super) fn check_md5(req: &OssRequest, body: &[u8]) -> Result<(), OssError> {
    if let Some(sent) = req.header("content-md5") {
        let actual = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body));
        if sent.trim() != actual {
            return Err(OssError::new(
                StatusCode::BAD_REQUEST,
                "InvalidDigest",
                "The Content-MD5 you specified was invalid.",
            ));
        }
    }
    Ok(())
}

/// Rejects a declared body over 5 GiB before reading it.
pub(super) fn check_declared_length(req: &OssRequest) -> Result<(), OssError> {
    match req
        .header("content-length")
        .map(|v| v.trim().parse::<u64>())
    {
        Some(Ok(n)) if n > MAX_OBJECT_SIZE => Err(OssError::invalid_argument(
            "Your proposed upload exceeds the maximum allowed size",
        )),
        Some(Err(_)) => Err(OssError::invalid_argument("Content-Length is not a number")),
        _ => Ok(()),
    }
}

async fn append(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let position: u64 = match req.q("position") {
        None => {
            return Err(
                OssError::invalid_argument("Missing position for append object")
                    .ec("0016-00000501"),
            );
        }
        Some(p) => p.parse().map_err(|_| {
            OssError::invalid_argument(format!("position {p:?} is not an integer"))
                .ec("0016-00000502")
        })?,
    };
    check_declared_length(req)?;
    let attrs = create_attrs(req, key)?;
    // Refuse a doomed append before reading its body (which may be large). The store checks
    // again, atomically, when applying.
    let declared = req
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (b, k) = (bucket.to_string(), key.to_string());
    let current = state
        .run(move |s| s.head(&b, &k).map_err(|e| OssError::from_store(e, &b, &k)))
        .await?;
    let early = match &current {
        Some(cur) if cur.object_type != ObjectType::Appendable => Some(StoreError::NotAppendable),
        Some(cur) if cur.size != position => Some(StoreError::PositionMismatch {
            position,
            length: cur.size,
        }),
        _ if declared.is_some_and(|n| position.saturating_add(n) > MAX_OBJECT_SIZE) => {
            Some(StoreError::TooLarge)
        }
        _ => None,
    };
    if let Some(e) = early {
        return Err(OssError::from_store(e, bucket, key));
    }
    let body = req.take_body().await?;
    check_md5(req, &body)?;
    let (b, k) = (bucket.to_string(), key.to_string());
    let rec = state
        .run(move |s| {
            s.append(&b, &k, position, body, &attrs)
                .map_err(|e| OssError::from_store(e, &b, &k))
        })
        .await?;
    let mut resp = status(StatusCode::OK);
    set(&mut resp, "etag", &rec.etag);
    set(
        &mut resp,
        "x-oss-next-append-position",
        &rec.size.to_string(),
    );
    set(&mut resp, "x-oss-hash-crc64ecma", &rec.crc64.to_string());
    if let Some(sse) = &rec.sse {
        set(&mut resp, "x-oss-server-side-encryption", sse);
    }
    Ok(resp)
}

async fn put(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    if !req.headers.contains_key("content-length") && !req.headers.contains_key("transfer-encoding")
    {
        return Err(OssError::new(
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        ));
    }
    check_declared_length(req)?;
    let attrs = create_attrs(req, key)?;
    let forbid = req
        .header("x-oss-forbid-overwrite")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let body = req.take_body().await?;
    check_md5(req, &body)?;
    let (b, k) = (bucket.to_string(), key.to_string());
    let rec = state
        .run(move |s| {
            s.put(&b, &k, body, &attrs, forbid)
                .map_err(|e| OssError::from_store(e, &b, &k))
        })
        .await?;
    let mut resp = status(StatusCode::OK);
    set(&mut resp, "etag", &rec.etag);
    set(&mut resp, "x-oss-hash-crc64ecma", &rec.crc64.to_string());
    if let Some(md5) = &rec.content_md5 {
        set(&mut resp, "content-md5", md5);
    }
    Ok(resp)
}

/// If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since (or their
/// `x-oss-copy-source-` forms): `Err` carries the 412 or 304 answer.
pub(super) fn check_conditions(
    req: &OssRequest,
    prefix: &str,
    rec: &ObjectRecord,
) -> Result<(), OssError> {
    let h = |name: &str| req.header(&format!("{prefix}{name}"));
    let same_etag = |v: &str| {
        v.split(',').any(|t| {
            let t = t.trim();
            t == "*"
                || t.trim_matches('"')
                    .eq_ignore_ascii_case(rec.etag.trim_matches('"'))
        })
    };
    let modified = rec.last_modified_ms.div_euclid(1000);
    let parse = |v: &str| {
        httpdate::parse_http_date(v)
            .ok()
            .map(|t| DateTime::<Utc>::from(t).timestamp())
    };
    let failed = || {
        OssError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        )
    };
    let not_modified = || OssError::new(StatusCode::NOT_MODIFIED, "NotModified", "Not Modified");
    if let Some(v) = h("if-match") {
        if !same_etag(v) {
            return Err(failed());
        }
    } else if let Some(t) = h("if-unmodified-since").and_then(parse) {
        if modified > t {
            return Err(failed());
        }
    }
    if let Some(v) = h("if-none-match") {
        if same_etag(v) {
            return Err(not_modified());
        }
    } else if let Some(t) = h("if-modified-since").and_then(parse) {
        if modified <= t {
            return Err(not_modified());
        }
    }
    Ok(())
}

pub(super) async fn head_record(
    state: &Arc<ServerState>,
    bucket: &str,
    key: &str,
) -> Result<ObjectRecord, OssError> {
    let (b, k) = (bucket.to_string(), key.to_string());
    state
        .run(move |s| s.head(&b, &k).map_err(|e| OssError::from_store(e, &b, &k)))
        .await?
        .ok_or_else(|| OssError::no_such_key(key))
}

async fn object_meta(
    state: &Arc<ServerState>,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let rec = head_record(state, bucket, key).await?;
    let mut resp = status(StatusCode::OK);
    set(&mut resp, "content-length", &rec.size.to_string());
    set(&mut resp, "etag", &rec.etag);
    set(
        &mut resp,
        "last-modified",
        &httpdate::fmt_http_date(rec.meta().last_modified.unwrap_or_default().into()),
    );
    set(
        &mut resp,
        "x-oss-last-access-time",
        &httpdate::fmt_http_date(rec.meta().last_modified.unwrap_or_default().into()),
    );
    set(&mut resp, "x-oss-hash-crc64ecma", &rec.crc64.to_string());
    Ok(resp)
}

async fn get(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
    bucket: &str,
    key: &str,
    head: bool,
) -> Result<Response<Body>, OssError> {
    let spec = req.header("range").and_then(RangeSpec::parse);
    let standard = req
        .header("x-oss-range-behavior")
        .is_some_and(|v| v.eq_ignore_ascii_case("standard"));
    // An object replaced between HEAD and read is looked up again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let rec = head_record(state, bucket, key).await?;
        check_conditions(req, "", &rec)?;
        let resolved = range::resolve(spec, rec.size, standard);
        let (first, len, code) = match resolved {
            Resolved::Full => (0, rec.size, StatusCode::OK),
            Resolved::Partial { first, last } => {
                (first, last - first + 1, StatusCode::PARTIAL_CONTENT)
            }
            Resolved::Unsatisfiable => {
                return Err(OssError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "The requested range cannot be satisfied",
                )
                .header("content-range", format!("bytes */{}", rec.size)));
            }
        };
        let body = if head {
            Ok(empty())
        } else {
            read_body(state, bucket, key, &rec, first, len).await
        };
        let body = match body {
            Ok(b) => b,
            Err(StoreError::Changed) if attempts < 3 => continue,
            Err(e) => return Err(OssError::from_store(e, bucket, key)),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = code;
        rec.meta().write_headers(resp.headers_mut());
        set(&mut resp, "content-length", &len.to_string());
        set(&mut resp, "accept-ranges", "bytes");
        if code == StatusCode::PARTIAL_CONTENT {
            set(
                &mut resp,
                "content-range",
                &range::content_range(first, first + len - 1, rec.size),
            );
        }
        for (param, header) in [
            ("response-content-type", "content-type"),
            ("response-content-language", "content-language"),
            ("response-expires", "expires"),
            ("response-cache-control", "cache-control"),
            ("response-content-disposition", "content-disposition"),
            ("response-content-encoding", "content-encoding"),
        ] {
            if let Some(v) = req.q_nonempty(param) {
                set(&mut resp, header, v);
            }
        }
        return Ok(resp);
    }
}

/// The body of a GET: small ranges in one piece, large ones as a stream of pieces. The first
/// piece is read before answering so that a replaced object is detected before the status line.
async fn read_body(
    state: &Arc<ServerState>,
    bucket: &str,
    key: &str,
    rec: &ObjectRecord,
    first: u64,
    len: u64,
) -> Result<Body, StoreError> {
    use http_body_util::BodyExt;
    let piece = len.min(READ_PIECE);
    let (b, k, r) = (bucket.to_string(), key.to_string(), rec.clone());
    let head = state
        .run_store(move |s| s.read(&b, &k, &r, first, piece))
        .await?;
    if piece == len {
        return Ok(full(head));
    }
    let state = state.clone();
    let (bucket, key, rec) = (bucket.to_string(), key.to_string(), rec.clone());
    let rest = futures::stream::unfold(first + piece, move |pos| {
        let state = state.clone();
        let (b, k, r) = (bucket.clone(), key.clone(), rec.clone());
        async move {
            let end = first + len;
            if pos >= end {
                return None;
            }
            let n = (end - pos).min(READ_PIECE);
            let res = state
                .run_store(move |s| s.read(&b, &k, &r, pos, n))
                .await
                .map(hyper::body::Frame::data)
                .map_err(|e| std::io::Error::other(e.to_string()));
            Some((res, pos + n))
        }
    });
    let stream = futures::StreamExt::chain(
        futures::stream::once(async move { Ok(hyper::body::Frame::data(head)) }),
        rest,
    );
    Ok(http_body_util::StreamBody::new(stream).boxed())
}

/// The source of a CopyObject or UploadPartCopy (`x-oss-copy-source: /bucket/key`) and its
/// record, with the `x-oss-copy-source-if-*` conditions checked.
pub(super) async fn copy_source(
    state: &Arc<ServerState>,
    req: &OssRequest,
) -> Result<(String, String, ObjectRecord), OssError> {
    let source = req
        .header("x-oss-copy-source")
        .unwrap_or_default()
        .to_string();
    let source = source.split('?').next().unwrap_or_default();
    let decoded = crate::oss::encode::decode(source)
        .ok_or_else(|| OssError::invalid_argument("x-oss-copy-source is not valid"))?;
    let (src_bucket, src_key) = decoded
        .trim_start_matches('/')
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .map(|(b, k)| (b.to_string(), k.to_string()))
        .ok_or_else(|| OssError::invalid_argument("x-oss-copy-source must be /bucket/key"))?;
    let src = head_record(state, &src_bucket, &src_key).await?;
    check_conditions(req, "x-oss-copy-source-", &src).map_err(|e| {
        // A copy answers 412 for both kinds of failed condition.
        if e.status == StatusCode::NOT_MODIFIED {
            OssError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold.",
            )
        } else {
            e
        }
    })?;
    Ok((src_bucket, src_key, src))
}

async fn copy(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let (src_bucket, src_key, src) = copy_source(state, req).await?;
    let replace = req
        .header("x-oss-metadata-directive")
        .is_some_and(|v| v.eq_ignore_ascii_case("REPLACE"));
    let attrs = if replace {
        create_attrs(req, key)?
    } else {
        let mut a = CreateAttrs {
            content_type: src.content_type.clone(),
            storage_class: src.storage_class.clone(),
            acl: src.acl.clone(),
            sse: src.sse.clone(),
            user_meta: src.user_meta.clone(),
            http_headers: src.http_headers.clone(),
            tagging: src.tagging.clone(),
        };
        if let Some(c) = req.header("x-oss-storage-class") {
            a.storage_class = canonical_storage_class(c)
                .ok_or_else(|| OssError::invalid_argument(format!("Invalid storage class {c:?}")))?
                .to_string();
        }
        a
    };
    let same = src_bucket == bucket && src_key == key;
    let rec = if same {
        // Copy onto itself changes metadata only, for every object type.
        let (b, k) = (bucket.to_string(), key.to_string());
        state
            .run(move |s| {
                s.update_meta(&b, &k, &attrs)
                    .map_err(|e| OssError::from_store(e, &b, &k))
            })
            .await?
    } else {
        if src.object_type == ObjectType::Appendable
            && state.config.copy_appendable == CopyAppendable::Reject
        {
            return Err(OssError::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "The source object is an appendable object and cannot be copied.",
            ));
        }
        let forbid = req
            .header("x-oss-forbid-overwrite")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let data = match read_all(state, &src_bucket, &src_key, &src).await {
            Ok(d) => d,
            Err(e) => return Err(OssError::from_store(e, &src_bucket, &src_key)),
        };
        let (b, k) = (bucket.to_string(), key.to_string());
        state
            .run(move |s| {
                s.put(&b, &k, data, &attrs, forbid)
                    .map_err(|e| OssError::from_store(e, &b, &k))
            })
            .await?
    };
    let mut resp = xml(copy_result_xml(&rec.etag, rec.last_modified()));
    set(&mut resp, "etag", &rec.etag);
    set(&mut resp, "x-oss-hash-crc64ecma", &rec.crc64.to_string());
    Ok(resp)
}

pub(super) async fn read_all(
    state: &Arc<ServerState>,
    bucket: &str,
    key: &str,
    rec: &ObjectRecord,
) -> Result<Bytes, StoreError> {
    let (b, k, r) = (bucket.to_string(), key.to_string(), rec.clone());
    state
        .run_store(move |s| s.read(&b, &k, &r, 0, r.size))
        .await
}

fn max_keys(req: &OssRequest) -> Result<usize, OssError> {
    match req.q_nonempty("max-keys") {
        None => Ok(100),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                OssError::invalid_argument(format!("max-keys {v:?} must be between 1 and 1000"))
            }),
    }
}

fn list_arg<'a>(req: &'a OssRequest, name: &str) -> Result<&'a str, OssError> {
    let v = req.q(name).unwrap_or("");
    if v.len() >= 1024 {
        return Err(OssError::invalid_argument(format!(
            "{name} is longer than 1023 bytes"
        )));
    }
    Ok(v)
}

fn entries(contents: Vec<(String, ObjectRecord)>) -> Vec<ListEntry> {
    contents
        .into_iter()
        .map(|(key, r)| ListEntry {
            key,
            last_modified: r.last_modified(),
            etag: r.etag,
            object_type: r.object_type,
            size: r.size,
            storage_class: r.storage_class,
        })
        .collect()
}

async fn list_v2(
    state: &Arc<ServerState>,
    req: &OssRequest,
    bucket: &str,
) -> Result<Response<Body>, OssError> {
    let prefix = list_arg(req, "prefix")?.to_string();
    let delimiter = list_arg(req, "delimiter")?.to_string();
    let start_after = req.q_nonempty("start-after").map(str::to_string);
    let token = req.q_nonempty("continuation-token").map(str::to_string);
    let max = max_keys(req)?;
    let mut from = prefix.as_bytes().to_vec();
    if let Some(t) = &token {
        // The token wins over start-after, as in S3.
        let at = list::decode_token(t).ok_or_else(|| {
            OssError::invalid_argument("The continuation token provided is incorrect")
        })?;
        from = from.max(at);
    } else if let Some(sa) = &start_after {
        from = from.max(list::after(sa.as_bytes()));
    }
    let out = run_list(state, bucket, &prefix, &delimiter, from, max).await?;
    let page = ListPage {
        bucket: bucket.to_string(),
        prefix,
        start_after,
        continuation_token: token,
        max_keys: max as u32,
        delimiter,
        encoding_url: req.q("encoding-type") == Some("url"),
        is_truncated: out.truncated,
        next_continuation_token: out.next_from.as_deref().map(list::encode_token),
        contents: entries(out.contents),
        common_prefixes: out.common_prefixes,
    };
    Ok(xml(page.to_xml()))
}

/// One page of the listing engine, off the async workers for a disk store.
async fn run_list(
    state: &Arc<ServerState>,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    from: Vec<u8>,
    max_keys: usize,
) -> Result<list::ListOutcome, OssError> {
    let (b, p, d) = (
        bucket.to_string(),
        prefix.to_string(),
        delimiter.to_string(),
    );
    state
        .run(move |s| {
            let params = ListParams {
                prefix: &p,
                delimiter: &d,
                from,
                max_keys,
            };
            list::list(s, &b, &params).map_err(|e| OssError::from_store(e, &b, ""))
        })
        .await
}

/// ListObjects (V1, marker based), which oss2's `ObjectIterator` uses.
async fn list_v1(
    state: &Arc<ServerState>,
    req: &OssRequest,
    bucket: &str,
) -> Result<Response<Body>, OssError> {
    use crate::oss::encode::encode;
    let prefix = list_arg(req, "prefix")?.to_string();
    let delimiter = list_arg(req, "delimiter")?.to_string();
    let marker = list_arg(req, "marker")?.to_string();
    let max = max_keys(req)?;
    let mut from = prefix.as_bytes().to_vec();
    if !marker.is_empty() {
        // A marker that is a rolled-up common prefix resumes after the whole group.
        let group_end =
            (!delimiter.is_empty() && marker.starts_with(&prefix) && marker.ends_with(&delimiter))
                .then(|| list::successor(marker.as_bytes()))
                .flatten();
        from = from.max(group_end.unwrap_or_else(|| list::after(marker.as_bytes())));
    }
    let out = run_list(state, bucket, &prefix, &delimiter, from, max).await?;
    let url = req.q("encoding-type") == Some("url");
    let enc = |v: &str| {
        quick_xml::escape::escape(if url { encode(v) } else { v.to_string() }).into_owned()
    };
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>\n");
    s.push_str(&format!("  <Name>{bucket}</Name>\n  <Prefix>{}</Prefix>\n  <Marker>{}</Marker>\n  <MaxKeys>{max}</MaxKeys>\n  <Delimiter>{}</Delimiter>\n", enc(&prefix), enc(&marker), enc(&delimiter)));
    if url {
        s.push_str("  <EncodingType>url</EncodingType>\n");
    }
    s.push_str(&format!("  <IsTruncated>{}</IsTruncated>\n", out.truncated));
    if out.truncated {
        if let Some(last) = &out.last {
            s.push_str(&format!("  <NextMarker>{}</NextMarker>\n", enc(last)));
        }
    }
    for e in entries(out.contents) {
        s.push_str(&format!(
            "  <Contents>\n    <Key>{}</Key>\n    <LastModified>{}</LastModified>\n    <ETag>{}</ETag>\n    <Type>{}</Type>\n    <Size>{}</Size>\n    <StorageClass>{}</StorageClass>\n    <Owner>\n      <ID>appendfs</ID>\n      <DisplayName>appendfs</DisplayName>\n    </Owner>\n  </Contents>\n",
            enc(&e.key),
            iso8601(e.last_modified),
            quick_xml::escape::escape(&e.etag),
            e.object_type.as_str(),
            e.size,
            e.storage_class
        ));
    }
    for p in &out.common_prefixes {
        s.push_str(&format!(
            "  <CommonPrefixes>\n    <Prefix>{}</Prefix>\n  </CommonPrefixes>\n",
            enc(p)
        ));
    }
    s.push_str("</ListBucketResult>\n");
    Ok(xml(s))
}
