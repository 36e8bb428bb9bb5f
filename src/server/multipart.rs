//! Multipart upload in the local server, as OSS does it: InitiateMultipartUpload, UploadPart,
//! UploadPartCopy, CompleteMultipartUpload (also `x-oss-complete-all`), AbortMultipartUpload,
//! ListParts and ListMultipartUploads, with their XML bodies. The rules of a completion (part
//! order, ETags, the 100 KiB minimum, the combined CRC-64 and the `"<HEX>-<count>"` ETag) are in
//! [`plan_complete`]; the stores only keep parts and concatenate the ones it picks.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode};
use md5::{Digest, Md5};
use serde::Deserialize;

use super::http::{Body, OssError, OssRequest};
use super::ops::{check_declared_length, check_md5, copy_source, create_attrs, set, status, xml};
use super::store::{new_upload_id, now_ms, ObjectRecord, PartRecord, StoreError, UploadRecord};
use super::ServerState;
use crate::oss::crc64;
use crate::oss::encode::encode;
use crate::oss::range::{self, RangeSpec, Resolved};
use crate::oss::xml::iso8601;
use crate::oss::ObjectType;

/// Part numbers OSS accepts.
pub const PART_NUMBERS: std::ops::RangeInclusive<u32> = 1..=10_000;
/// Every part but the last must be at least this large (checked at completion).
pub const MIN_PART_SIZE: u64 = 100 * 1024;
/// Page size limit of ListParts and ListMultipartUploads.
const MAX_PAGE: usize = 1000;

/// Builds the object a completion creates from the upload and its stored parts. `wanted` is the
/// client's part list (number, ETag) in request order, or `None` for `x-oss-complete-all`
/// (every stored part, in order). Returns the record and the parts to concatenate.
pub fn plan_complete(
    upload: &UploadRecord,
    stored: &[PartRecord],
    wanted: Option<&[(u32, String)]>,
) -> Result<(ObjectRecord, Vec<PartRecord>), StoreError> {
    let chosen: Vec<PartRecord> = match wanted {
        None => stored.to_vec(),
        Some(list) => {
            if list.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(StoreError::InvalidPartOrder);
            }
            let mut out = Vec::with_capacity(list.len());
            for (number, etag) in list {
                let part = stored
                    .iter()
                    .find(|p| p.number == *number)
                    .filter(|p| same_etag(&p.etag, etag))
                    .ok_or(StoreError::InvalidPart(*number))?;
                out.push(part.clone());
            }
            out
        }
    };
    if chosen.is_empty() {
        return Err(StoreError::MalformedPartList);
    }
    if let Some(small) = chosen[..chosen.len() - 1]
        .iter()
        .find(|p| p.size < MIN_PART_SIZE)
    {
        return Err(StoreError::EntityTooSmall(small.number));
    }
    let mut size = 0u64;
    let mut crc = 0u64;
    let mut digests = Md5::new();
    for p in &chosen {
        crc = crc64::combine(crc, p.crc64, p.size);
        size += p.size;
        // Part ETags are our own quoted hex MD5s; the object's ETag hashes their binary form,
        // as S3-style services do, so it changes whenever any part does.
        let raw = hex::decode(p.etag.trim_matches('"')).unwrap_or_default();
        digests.update(&raw);
    }
    let etag = format!(
        "\"{}-{}\"",
        hex::encode_upper(digests.finalize()),
        chosen.len()
    );
    let mut record = ObjectRecord::created(ObjectType::Multipart, b"", etag, None, &upload.attrs);
    record.size = size;
    record.crc64 = crc;
    Ok((record, chosen))
}

/// ETags compare without quotes and case (clients echo them back in various forms).
fn same_etag(a: &str, b: &str) -> bool {
    a.trim()
        .trim_matches('"')
        .eq_ignore_ascii_case(b.trim().trim_matches('"'))
}

fn url_encoding(req: &OssRequest) -> bool {
    req.q("encoding-type") == Some("url")
}

/// Pushes `<name>value</name>`, escaping the value.
fn elem(s: &mut String, name: &str, value: &str) {
    s.push('<');
    s.push_str(name);
    s.push('>');
    s.push_str(&quick_xml::escape::escape(value));
    s.push_str("</");
    s.push_str(name);
    s.push('>');
}

fn xml_doc(root: &str, fill: impl FnOnce(&mut String)) -> String {
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}>");
    fill(&mut s);
    s.push_str(&format!("</{root}>\n"));
    s
}

fn upload_id(req: &OssRequest) -> Result<String, OssError> {
    req.q_nonempty("uploadId")
        .map(str::to_string)
        .ok_or_else(|| OssError::invalid_argument("uploadId is empty"))
}

fn part_number(req: &OssRequest) -> Result<u32, OssError> {
    let raw = req.q("partNumber").unwrap_or_default();
    raw.parse::<u32>()
        .ok()
        .filter(|n| PART_NUMBERS.contains(n))
        .ok_or_else(|| {
            OssError::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive.",
            )
            .ec("0017-00000220")
            .extra("ArgumentName", "PartNumber")
            .extra("ArgumentValue", raw)
        })
}

fn no_such_upload(upload_id: &str) -> OssError {
    OssError::new(
        StatusCode::NOT_FOUND,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
    .extra("UploadId", upload_id)
}

/// Maps a storage outcome of a multipart call to its OSS error.
fn store_error(e: StoreError, bucket: &str, key: &str, upload_id: &str) -> OssError {
    match e {
        StoreError::NoSuchUpload => no_such_upload(upload_id),
        other => OssError::from_store(other, bucket, key),
    }
}

/// The upload named by `uploadId`, which must belong to `key`: an id used under another key is
/// as unknown as an invalid one.
async fn require_upload(
    state: &Arc<ServerState>,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<UploadRecord, OssError> {
    let (b, id) = (bucket.to_string(), upload_id.to_string());
    let found = state
        .run(move |s| s.upload(&b, &id).map_err(|e| store_error(e, &b, "", &id)))
        .await?;
    found
        .filter(|u| u.key == key)
        .ok_or_else(|| no_such_upload(upload_id))
}

/// InitiateMultipartUpload: `POST /key?uploads`.
pub async fn initiate(
    state: &Arc<ServerState>,
    req: &OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let upload = UploadRecord {
        upload_id: new_upload_id(),
        key: key.to_string(),
        initiated_ms: now_ms(),
        attrs: create_attrs(req, key)?,
    };
    let (b, u) = (bucket.to_string(), upload.clone());
    state
        .run(move |s| {
            s.create_upload(&b, &u)
                .map_err(|e| OssError::from_store(e, &b, &u.key))
        })
        .await?;
    let url = url_encoding(req);
    Ok(xml(xml_doc("InitiateMultipartUploadResult", |s| {
        if url {
            elem(s, "EncodingType", "url");
        }
        elem(s, "Bucket", bucket);
        elem(s, "Key", &if url { encode(key) } else { key.to_string() });
        elem(s, "UploadId", &upload.upload_id);
    })))
}

fn part_response(part: &PartRecord) -> Response<Body> {
    let mut resp = status(StatusCode::OK);
    part_headers(&mut resp, part);
    resp
}

fn part_headers(resp: &mut Response<Body>, part: &PartRecord) {
    set(resp, "etag", &part.etag);
    set(resp, "x-oss-hash-crc64ecma", &part.crc64.to_string());
    if let Ok(raw) = hex::decode(part.etag.trim_matches('"')) {
        set(
            resp,
            "content-md5",
            &base64::engine::general_purpose::STANDARD.encode(raw),
        );
    }
}

async fn store_part(
    state: &Arc<ServerState>,
    bucket: &str,
    key: &str,
    upload_id: &str,
    number: u32,
    data: Bytes,
) -> Result<PartRecord, OssError> {
    let (b, k, id) = (bucket.to_string(), key.to_string(), upload_id.to_string());
    state
        .run(move |s| {
            s.put_part(&b, &id, number, data)
                .map_err(|e| store_error(e, &b, &k, &id))
        })
        .await
}

/// UploadPart: `PUT /key?partNumber=N&uploadId=ID` with the part as body.
pub async fn upload_part(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let number = part_number(req)?;
    let id = upload_id(req)?;
    check_declared_length(req)?;
    // Refuse before reading a body that could be large.
    require_upload(state, bucket, key, &id).await?;
    let body = req.take_body().await?;
    check_md5(req, &body)?;
    let part = store_part(state, bucket, key, &id, number, body).await?;
    Ok(part_response(&part))
}

/// UploadPartCopy: UploadPart with `x-oss-copy-source` (and optionally
/// `x-oss-copy-source-range: bytes=first-last`) instead of a body.
pub async fn upload_part_copy(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let number = part_number(req)?;
    let id = upload_id(req)?;
    require_upload(state, bucket, key, &id).await?;
    let (src_bucket, src_key, src) = copy_source(state, req).await?;
    if src.object_type == ObjectType::Appendable {
        // The UploadPartCopy page: "Objects uploaded by calling AppendObject cannot be copied."
        return Err(OssError::invalid_argument(
            "The source object is an appendable object and cannot be copied.",
        ));
    }
    let spec = req
        .header("x-oss-copy-source-range")
        .and_then(RangeSpec::parse);
    let (first, len) = match range::resolve(spec, src.size, true) {
        Resolved::Full => (0, src.size),
        Resolved::Partial { first, last } => (first, last - first + 1),
        Resolved::Unsatisfiable => {
            return Err(OssError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range cannot be satisfied",
            ))
        }
    };
    let (sb, sk, rec) = (src_bucket.clone(), src_key.clone(), src.clone());
    let data = state
        .run_store(move |s| s.read(&sb, &sk, &rec, first, len))
        .await
        .map_err(|e| OssError::from_store(e, &src_bucket, &src_key))?;
    let part = store_part(state, bucket, key, &id, number, data).await?;
    let mut resp = xml(xml_doc("CopyPartResult", |s| {
        elem(
            s,
            "LastModified",
            &iso8601(
                chrono::DateTime::from_timestamp_millis(part.last_modified_ms).unwrap_or_default(),
            ),
        );
        elem(s, "ETag", &part.etag);
    }));
    part_headers(&mut resp, &part);
    Ok(resp)
}

#[derive(Deserialize)]
struct CompleteBody {
    #[serde(rename = "Part", default)]
    parts: Vec<CompletePart>,
}

#[derive(Deserialize)]
struct CompletePart {
    #[serde(rename = "PartNumber")]
    number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

fn malformed_xml() -> OssError {
    OssError::new(
        StatusCode::BAD_REQUEST,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

/// CompleteMultipartUpload: `POST /key?uploadId=ID` with the part list, or with
/// `x-oss-complete-all: yes` and no body.
pub async fn complete(
    state: &Arc<ServerState>,
    req: &mut OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let id = upload_id(req)?;
    require_upload(state, bucket, key, &id).await?;
    let forbid = req
        .header("x-oss-forbid-overwrite")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let all = req
        .header("x-oss-complete-all")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let body = req.take_body().await?;
    let wanted: Option<Vec<(u32, String)>> = if all {
        if !body.is_empty() {
            return Err(OssError::invalid_argument(
                "Should not specify the part list when x-oss-complete-all is yes.",
            ));
        }
        None
    } else {
        let text = std::str::from_utf8(&body).map_err(|_| malformed_xml())?;
        let parsed: CompleteBody = quick_xml::de::from_str(text).map_err(|_| malformed_xml())?;
        Some(
            parsed
                .parts
                .into_iter()
                .map(|p| (p.number, p.etag))
                .collect(),
        )
    };
    let (b, k, uid) = (bucket.to_string(), key.to_string(), id.clone());
    let rec = state
        .run(move |s| {
            s.complete_upload(
                &b,
                &uid,
                &|u, stored| plan_complete(u, stored, wanted.as_deref()),
                forbid,
            )
            .map_err(|e| store_error(e, &b, &k, &uid))
        })
        .await?;
    let url = url_encoding(req);
    let shown_key = if url { encode(key) } else { key.to_string() };
    let mut resp = xml(xml_doc("CompleteMultipartUploadResult", |s| {
        if url {
            elem(s, "EncodingType", "url");
        }
        elem(
            s,
            "Location",
            &format!("http://{}/{bucket}/{shown_key}", req.host),
        );
        elem(s, "Bucket", bucket);
        elem(s, "Key", &shown_key);
        elem(s, "ETag", &rec.etag);
    }));
    set(&mut resp, "etag", &rec.etag);
    set(&mut resp, "x-oss-hash-crc64ecma", &rec.crc64.to_string());
    Ok(resp)
}

/// AbortMultipartUpload: `DELETE /key?uploadId=ID`.
pub async fn abort(
    state: &Arc<ServerState>,
    req: &OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let id = upload_id(req)?;
    require_upload(state, bucket, key, &id).await?;
    let (b, k, uid) = (bucket.to_string(), key.to_string(), id);
    state
        .run(move |s| {
            s.abort_upload(&b, &uid)
                .map_err(|e| store_error(e, &b, &k, &uid))
        })
        .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// A page size parameter: absent or empty means `MAX_PAGE`.
fn page_size(req: &OssRequest, name: &str) -> Result<usize, OssError> {
    match req.q_nonempty(name) {
        None => Ok(MAX_PAGE),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                OssError::invalid_argument(format!("{name} {v:?} must be between 1 and 1000"))
            }),
    }
}

/// ListParts: `GET /key?uploadId=ID[&max-parts=N][&part-number-marker=M]`.
pub async fn list_parts(
    state: &Arc<ServerState>,
    req: &OssRequest,
    bucket: &str,
    key: &str,
) -> Result<Response<Body>, OssError> {
    let id = upload_id(req)?;
    let upload = require_upload(state, bucket, key, &id).await?;
    let max = page_size(req, "max-parts")?;
    let marker: u32 = match req.q_nonempty("part-number-marker") {
        None => 0,
        Some(v) => v.parse().map_err(|_| {
            OssError::invalid_argument(format!("part-number-marker {v:?} is not a number"))
        })?,
    };
    let (b, k, uid) = (bucket.to_string(), key.to_string(), id.clone());
    let all = state
        .run(move |s| s.parts(&b, &uid).map_err(|e| store_error(e, &b, &k, &uid)))
        .await?;
    let after: Vec<&PartRecord> = all.iter().filter(|p| p.number > marker).collect();
    let truncated = after.len() > max;
    let page = &after[..after.len().min(max)];
    let next = page.last().map_or(marker, |p| p.number);
    let url = url_encoding(req);
    Ok(xml(xml_doc("ListPartsResult", |s| {
        if url {
            elem(s, "EncodingType", "url");
        }
        elem(s, "Bucket", bucket);
        elem(s, "Key", &if url { encode(key) } else { key.to_string() });
        elem(s, "UploadId", &id);
        elem(s, "StorageClass", &upload.attrs.storage_class);
        elem(s, "PartNumberMarker", &marker.to_string());
        elem(s, "NextPartNumberMarker", &next.to_string());
        elem(s, "MaxParts", &max.to_string());
        elem(s, "IsTruncated", if truncated { "true" } else { "false" });
        for p in page {
            s.push_str("<Part>");
            elem(s, "PartNumber", &p.number.to_string());
            elem(
                s,
                "LastModified",
                &iso8601(
                    chrono::DateTime::from_timestamp_millis(p.last_modified_ms).unwrap_or_default(),
                ),
            );
            elem(s, "ETag", &p.etag);
            elem(s, "HashCrc64ecma", &p.crc64.to_string());
            elem(s, "Size", &p.size.to_string());
            s.push_str("</Part>");
        }
    })))
}

/// One entry of a ListMultipartUploads page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEntry {
    Upload(UploadRecord),
    /// Keys rolled up at the delimiter.
    Prefix(String),
}

/// A ListMultipartUploads page over `all` (ordered by key, then upload id): the entries and
/// whether more follow.
pub fn page_uploads(
    all: &[UploadRecord],
    prefix: &str,
    delimiter: &str,
    key_marker: &str,
    upload_id_marker: &str,
    max: usize,
) -> (Vec<UploadEntry>, bool) {
    let mut out: Vec<UploadEntry> = Vec::new();
    // A key marker that is a rolled-up prefix skips the whole group.
    let marker_is_group = !delimiter.is_empty()
        && !key_marker.is_empty()
        && key_marker.starts_with(prefix)
        && key_marker.ends_with(delimiter);
    for u in all {
        if !u.key.starts_with(prefix) {
            continue;
        }
        if !key_marker.is_empty() {
            let after = if marker_is_group {
                u.key.as_str() > key_marker && !u.key.starts_with(key_marker)
            } else {
                u.key.as_str() > key_marker
                    || (u.key == key_marker
                        && !upload_id_marker.is_empty()
                        && u.upload_id.as_str() > upload_id_marker)
            };
            if !after {
                continue;
            }
        }
        let group = (!delimiter.is_empty())
            .then(|| {
                u.key[prefix.len()..]
                    .find(delimiter)
                    .map(|i| u.key[..prefix.len() + i + delimiter.len()].to_string())
            })
            .flatten();
        let entry = match group {
            Some(g) => {
                if matches!(out.last(), Some(UploadEntry::Prefix(p)) if *p == g) {
                    continue;
                }
                UploadEntry::Prefix(g)
            }
            None => UploadEntry::Upload(u.clone()),
        };
        if out.len() == max {
            return (out, true);
        }
        out.push(entry);
    }
    (out, false)
}

/// ListMultipartUploads: `GET /?uploads` on the bucket.
pub async fn list_uploads(
    state: &Arc<ServerState>,
    req: &OssRequest,
    bucket: &str,
) -> Result<Response<Body>, OssError> {
    let prefix = req.q("prefix").unwrap_or_default().to_string();
    let delimiter = req.q("delimiter").unwrap_or_default().to_string();
    let key_marker = req.q("key-marker").unwrap_or_default().to_string();
    // Without a key marker the upload id marker means nothing (the API reference says so).
    let id_marker = if key_marker.is_empty() {
        String::new()
    } else {
        req.q("upload-id-marker").unwrap_or_default().to_string()
    };
    let max = page_size(req, "max-uploads")?;
    let b = bucket.to_string();
    let all = state
        .run(move |s| s.uploads(&b).map_err(|e| OssError::from_store(e, &b, "")))
        .await?;
    let (entries, truncated) =
        page_uploads(&all, &prefix, &delimiter, &key_marker, &id_marker, max);
    let (next_key, next_id) = match entries.last() {
        Some(UploadEntry::Upload(u)) if truncated => (u.key.clone(), u.upload_id.clone()),
        Some(UploadEntry::Prefix(p)) if truncated => (p.clone(), String::new()),
        _ => (String::new(), String::new()),
    };
    let url = url_encoding(req);
    let enc = |v: &str| if url { encode(v) } else { v.to_string() };
    Ok(xml(xml_doc("ListMultipartUploadsResult", |s| {
        if url {
            elem(s, "EncodingType", "url");
        }
        elem(s, "Bucket", bucket);
        elem(s, "KeyMarker", &enc(&key_marker));
        elem(s, "UploadIdMarker", &id_marker);
        elem(s, "NextKeyMarker", &enc(&next_key));
        elem(s, "NextUploadIdMarker", &next_id);
        elem(s, "Delimiter", &enc(&delimiter));
        elem(s, "Prefix", &enc(&prefix));
        elem(s, "MaxUploads", &max.to_string());
        elem(s, "IsTruncated", if truncated { "true" } else { "false" });
        for e in &entries {
            match e {
                UploadEntry::Upload(u) => {
                    s.push_str("<Upload>");
                    elem(s, "Key", &enc(&u.key));
                    elem(s, "UploadId", &u.upload_id);
                    elem(s, "StorageClass", &u.attrs.storage_class);
                    elem(
                        s,
                        "Initiated",
                        &iso8601(
                            chrono::DateTime::from_timestamp_millis(u.initiated_ms)
                                .unwrap_or_default(),
                        ),
                    );
                    s.push_str("</Upload>");
                }
                UploadEntry::Prefix(p) => {
                    s.push_str("<CommonPrefixes>");
                    elem(s, "Prefix", &enc(p));
                    s.push_str("</CommonPrefixes>");
                }
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::CreateAttrs;

    fn upload(key: &str, id: &str) -> UploadRecord {
        UploadRecord {
            upload_id: id.into(),
            key: key.into(),
            initiated_ms: 0,
            attrs: CreateAttrs {
                storage_class: "Standard".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn completion_rules() {
        let a = vec![7u8; MIN_PART_SIZE as usize];
        let b = b"tail".to_vec();
        let parts = vec![PartRecord::new(1, &a), PartRecord::new(3, &b)];
        let u = upload("k", "1");
        let list = |v: &[(u32, &str)]| -> Vec<(u32, String)> {
            v.iter().map(|(n, e)| (*n, e.to_string())).collect()
        };
        let (rec, chosen) = plan_complete(
            &u,
            &parts,
            Some(&list(&[
                (1, &parts[0].etag),
                (3, parts[1].etag.trim_matches('"')),
            ])),
        )
        .unwrap();
        let whole = [a.as_slice(), b.as_slice()].concat();
        assert_eq!(rec.crc64, crc64::checksum(&whole));
        assert_eq!(rec.size, whole.len() as u64);
        assert_eq!(rec.object_type, ObjectType::Multipart);
        assert!(rec.etag.ends_with("-2\"") && rec.etag.len() == 2 + 32 + 2);
        assert_eq!(chosen.len(), 2);
        assert_eq!(plan_complete(&u, &parts, None).unwrap().0.etag, rec.etag);
        assert!(matches!(
            plan_complete(
                &u,
                &parts,
                Some(&list(&[(3, &parts[1].etag), (1, &parts[0].etag)]))
            ),
            Err(StoreError::InvalidPartOrder)
        ));
        assert!(matches!(
            plan_complete(&u, &parts, Some(&list(&[(1, "\"00\"")]))),
            Err(StoreError::InvalidPart(1))
        ));
        assert!(matches!(
            plan_complete(&u, &parts, Some(&list(&[(2, &parts[0].etag)]))),
            Err(StoreError::InvalidPart(2))
        ));
        let small = vec![PartRecord::new(1, b"x"), PartRecord::new(2, b"y")];
        assert!(matches!(
            plan_complete(&u, &small, None),
            Err(StoreError::EntityTooSmall(1))
        ));
        // A single small part is the last part: allowed.
        assert!(plan_complete(&u, &small[..1], None).is_ok());
        assert!(matches!(
            plan_complete(&u, &[], None),
            Err(StoreError::MalformedPartList)
        ));
    }

    #[test]
    fn upload_paging() {
        let all = vec![
            upload("a", "1"),
            upload("a", "2"),
            upload("d/x", "3"),
            upload("d/y", "4"),
            upload("z", "5"),
        ];
        let keys = |v: &[UploadEntry]| -> Vec<String> {
            v.iter()
                .map(|e| match e {
                    UploadEntry::Upload(u) => format!("{}:{}", u.key, u.upload_id),
                    UploadEntry::Prefix(p) => p.clone(),
                })
                .collect()
        };
        let (p1, t1) = page_uploads(&all, "", "", "", "", 2);
        assert_eq!((keys(&p1), t1), (vec!["a:1".into(), "a:2".into()], true));
        let (p2, t2) = page_uploads(&all, "", "", "a", "1", 10);
        assert_eq!(keys(&p2), vec!["a:2", "d/x:3", "d/y:4", "z:5"]);
        assert!(!t2);
        let (p3, _) = page_uploads(&all, "", "", "a", "", 10);
        assert_eq!(keys(&p3), vec!["d/x:3", "d/y:4", "z:5"]);
        let (p4, t4) = page_uploads(&all, "", "/", "", "", 2);
        assert_eq!((keys(&p4), t4), (vec!["a:1".into(), "a:2".into()], true));
        let (p5, _) = page_uploads(&all, "", "/", "a", "2", 10);
        assert_eq!(keys(&p5), vec!["d/", "z:5"]);
        let (p6, _) = page_uploads(&all, "", "/", "d/", "", 10);
        assert_eq!(keys(&p6), vec!["z:5"]);
        let (p7, _) = page_uploads(&all, "d/", "", "", "", 10);
        assert_eq!(keys(&p7), vec!["d/x:3", "d/y:4"]);
    }
}
