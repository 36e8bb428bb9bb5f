//! Object metadata as it travels in response headers (HEAD, GET, append): the server writes it
//! with [`ObjectMeta::write_headers`], the client reads it with [`ObjectMeta::from_headers`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ObjectType {
    Normal,
    Appendable,
    Multipart,
    Symlink,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Normal => "Normal",
            ObjectType::Appendable => "Appendable",
            ObjectType::Multipart => "Multipart",
            ObjectType::Symlink => "Symlink",
        }
    }

    /// Unknown names read as `Normal`: the safe choice, since only Appendable objects are written.
    pub fn parse(s: &str) -> Self {
        match s {
            "Appendable" => ObjectType::Appendable,
            "Multipart" => ObjectType::Multipart,
            "Symlink" => ObjectType::Symlink,
            _ => ObjectType::Normal,
        }
    }
}

/// Storage classes that AppendObject accepts. Cold classes are refused by the service.
pub fn storage_class_appendable(class: &str) -> bool {
    matches!(class, "Standard" | "IA" | "Archive")
}

/// Canonical spelling of a storage class name, or `None` when OSS has no such class.
pub fn canonical_storage_class(class: &str) -> Option<&'static str> {
    [
        "Standard",
        "IA",
        "Archive",
        "ColdArchive",
        "DeepColdArchive",
    ]
    .into_iter()
    .find(|c| c.eq_ignore_ascii_case(class))
}

/// Standard HTTP headers OSS stores with an object at creation and returns on HEAD/GET.
pub const STORED_HTTP_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "expires",
];

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    pub size: u64,
    pub object_type: Option<ObjectType>,
    /// As sent, with its quotes.
    pub etag: String,
    pub last_modified: Option<DateTime<Utc>>,
    pub crc64: Option<u64>,
    pub next_append_position: Option<u64>,
    pub storage_class: Option<String>,
    pub content_type: Option<String>,
    pub content_md5: Option<String>,
    pub server_side_encryption: Option<String>,
    pub acl: Option<String>,
    /// `x-oss-meta-*` without the prefix, names lower-cased.
    pub user_meta: BTreeMap<String, String>,
    /// Cache-Control, Content-Disposition, Content-Encoding, Expires.
    pub http_headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad response header {name}: {value:?}")]
pub struct HeaderError {
    pub name: &'static str,
    pub value: String,
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn parse_u64(h: &HeaderMap, name: &'static str) -> Result<Option<u64>, HeaderError> {
    match get(h, name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| HeaderError {
            name,
            value: v.to_string(),
        }),
    }
}

impl ObjectMeta {
    /// Reads the metadata headers of a HEAD/GET/append response. `size` comes from
    /// Content-Length, which for a ranged GET is the range length: callers then take the total
    /// from Content-Range.
    pub fn from_headers(h: &HeaderMap) -> Result<Self, HeaderError> {
        let last_modified = match get(h, "last-modified") {
            None => None,
            Some(v) => Some(
                httpdate::parse_http_date(v)
                    .map_err(|_| HeaderError {
                        name: "last-modified",
                        value: v.to_string(),
                    })?
                    .into(),
            ),
        };
        let mut user_meta = BTreeMap::new();
        let mut http_headers = BTreeMap::new();
        for (name, value) in h {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if let Some(m) = name.as_str().strip_prefix("x-oss-meta-") {
                user_meta.insert(m.to_string(), value);
            } else if STORED_HTTP_HEADERS.contains(&name.as_str()) {
                http_headers.insert(name.as_str().to_string(), value);
            }
        }
        Ok(ObjectMeta {
            size: parse_u64(h, "content-length")?.unwrap_or(0),
            object_type: get(h, "x-oss-object-type").map(ObjectType::parse),
            etag: get(h, "etag").unwrap_or("").to_string(),
            last_modified,
            crc64: parse_u64(h, "x-oss-hash-crc64ecma")?,
            next_append_position: parse_u64(h, "x-oss-next-append-position")?,
            storage_class: get(h, "x-oss-storage-class").map(str::to_string),
            content_type: get(h, "content-type").map(str::to_string),
            content_md5: get(h, "content-md5").map(str::to_string),
            server_side_encryption: get(h, "x-oss-server-side-encryption").map(str::to_string),
            acl: None,
            user_meta,
            http_headers,
        })
    }

    /// Writes the HEAD/GET metadata headers (everything except Content-Length, which the caller
    /// sets for the body it actually sends).
    pub fn write_headers(&self, h: &mut HeaderMap) {
        let mut put = |name: &str, value: &str| {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                h.insert(n, v);
            }
        };
        if !self.etag.is_empty() {
            put("etag", &self.etag);
        }
        if let Some(t) = self.last_modified {
            put("last-modified", &httpdate::fmt_http_date(t.into()));
        }
        if let Some(t) = self.object_type {
            put("x-oss-object-type", t.as_str());
        }
        if let Some(c) = self.crc64 {
            put("x-oss-hash-crc64ecma", &c.to_string());
        }
        if let Some(p) = self.next_append_position {
            put("x-oss-next-append-position", &p.to_string());
        }
        if let Some(s) = &self.storage_class {
            put("x-oss-storage-class", s);
        }
        if let Some(s) = &self.content_type {
            put("content-type", s);
        }
        if let Some(s) = &self.content_md5 {
            put("content-md5", s);
        }
        if let Some(s) = &self.server_side_encryption {
            put("x-oss-server-side-encryption", s);
        }
        for (k, v) in &self.user_meta {
            put(&format!("x-oss-meta-{k}"), v);
        }
        for (k, v) in &self.http_headers {
            put(k, v);
        }
    }
}

/// Content-Type from a key's extension, as the SDKs guess it.
pub fn guess_content_type(key: &str) -> &'static str {
    let ext = key
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt" | "log" | "text" | "out" | "err") => "text/plain",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("jsonl" | "ndjson") => "application/x-ndjson",
        Some("xml") => "application/xml",
        Some("html" | "htm") => "text/html",
        Some("md") => "text/markdown",
        Some("gz") => "application/gzip",
        Some("zip") => "application/zip",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn headers_round_trip() {
        let mut m = ObjectMeta {
            size: 0,
            object_type: Some(ObjectType::Appendable),
            etag: "\"A5750CC1A7FD15A2DC6300000000AAAA\"".into(),
            last_modified: Some(Utc.timestamp_opt(1_675_403_836, 0).unwrap()),
            crc64: Some(18020588380933092773),
            next_append_position: Some(4),
            storage_class: Some("Standard".into()),
            content_type: Some("text/plain".into()),
            content_md5: None,
            server_side_encryption: Some("AES256".into()),
            acl: None,
            user_meta: [("author".to_string(), "alice".to_string())].into(),
            http_headers: [("cache-control".to_string(), "no-cache".to_string())].into(),
        };
        let mut h = HeaderMap::new();
        m.write_headers(&mut h);
        h.insert("content-length", HeaderValue::from_static("4"));
        m.size = 4;
        assert_eq!(ObjectMeta::from_headers(&h).unwrap(), m);
        assert_eq!(h["last-modified"], "Fri, 03 Feb 2023 05:57:16 GMT");
    }

    #[test]
    fn bad_numbers_are_errors() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-oss-next-append-position",
            HeaderValue::from_static("12x"),
        );
        assert_eq!(
            ObjectMeta::from_headers(&h).unwrap_err().name,
            "x-oss-next-append-position"
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type("logs/app.LOG"), "text/plain");
        assert_eq!(guess_content_type("a.b/noext"), "application/octet-stream");
        assert_eq!(guess_content_type("x.json"), "application/json");
    }
}
