//! The XML bodies both sides exchange: the `<Error>` document (also carried base64-encoded in the
//! `x-oss-err` header of bodiless HEAD errors), ListObjectsV2 results and CopyObject results.
//! Written without a namespace, as the service does (oss2 fails on a namespaced listing).

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::escape::escape;
use serde::Deserialize;

use super::encode::{decode, encode};
use super::meta::ObjectType;

/// The `<Error>` document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "Code", default)]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
    #[serde(rename = "RequestId", default)]
    pub request_id: String,
    #[serde(rename = "HostId", default)]
    pub host_id: String,
    #[serde(rename = "EC", default)]
    pub ec: Option<String>,
    /// Operation-specific elements (`Key`, `BucketName`, `SignatureProvided`, ...), in order.
    #[serde(skip)]
    pub extras: Vec<(String, String)>,
}

impl ErrorBody {
    pub fn to_xml(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n");
        push_elem(&mut s, "Code", &self.code);
        push_elem(&mut s, "Message", &self.message);
        push_elem(&mut s, "RequestId", &self.request_id);
        push_elem(&mut s, "HostId", &self.host_id);
        for (k, v) in &self.extras {
            push_elem(&mut s, k, v);
        }
        if let Some(ec) = &self.ec {
            push_elem(&mut s, "EC", ec);
            push_elem(
                &mut s,
                "RecommendDoc",
                &format!("https://api.aliyun.com/troubleshoot?q={ec}"),
            );
        }
        s.push_str("</Error>\n");
        s
    }

    /// Parses an error body; `None` when it is not an OSS `<Error>` document.
    pub fn from_xml(xml: &str) -> Option<Self> {
        let body: ErrorBody = quick_xml::de::from_str(xml).ok()?;
        (!body.code.is_empty()).then_some(body)
    }

    /// The `x-oss-err` header value of a HEAD error.
    pub fn to_header(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_xml())
    }

    pub fn from_header(value: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        Self::from_xml(std::str::from_utf8(&raw).ok()?)
    }
}

fn push_elem(s: &mut String, name: &str, value: &str) {
    s.push_str("  <");
    s.push_str(name);
    s.push('>');
    s.push_str(&escape(value));
    s.push_str("</");
    s.push_str(name);
    s.push_str(">\n");
}

/// `2020-05-18T05:45:47.000Z`, as listings and CopyObject results show times: whole seconds
/// with a `.000` fraction (oss2 parses exactly that pattern).
pub fn iso8601(t: DateTime<Utc>) -> String {
    let whole = DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    whole.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub key: String,
    pub last_modified: DateTime<Utc>,
    /// Quoted, as in headers.
    pub etag: String,
    pub object_type: ObjectType,
    pub size: u64,
    pub storage_class: String,
}

/// One ListObjectsV2 page. Keys, prefixes and tokens are held decoded; `encoding_url` says
/// whether the wire form percent-encodes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    pub bucket: String,
    pub prefix: String,
    pub start_after: Option<String>,
    pub continuation_token: Option<String>,
    pub max_keys: u32,
    pub delimiter: String,
    pub encoding_url: bool,
    pub is_truncated: bool,
    pub next_continuation_token: Option<String>,
    pub contents: Vec<ListEntry>,
    pub common_prefixes: Vec<String>,
}

impl ListPage {
    pub fn to_xml(&self) -> String {
        let enc = |v: &str| {
            if self.encoding_url {
                encode(v)
            } else {
                v.to_string()
            }
        };
        let mut s =
            String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>\n");
        push_elem(&mut s, "Name", &self.bucket);
        push_elem(&mut s, "Prefix", &enc(&self.prefix));
        if let Some(v) = &self.start_after {
            push_elem(&mut s, "StartAfter", &enc(v));
        }
        if let Some(v) = &self.continuation_token {
            push_elem(&mut s, "ContinuationToken", &enc(v));
        }
        push_elem(&mut s, "MaxKeys", &self.max_keys.to_string());
        push_elem(&mut s, "Delimiter", &enc(&self.delimiter));
        if self.encoding_url {
            push_elem(&mut s, "EncodingType", "url");
        }
        push_elem(
            &mut s,
            "IsTruncated",
            if self.is_truncated { "true" } else { "false" },
        );
        if let Some(v) = &self.next_continuation_token {
            push_elem(&mut s, "NextContinuationToken", &enc(v));
        }
        for e in &self.contents {
            s.push_str("  <Contents>\n  ");
            push_elem(&mut s, "Key", &enc(&e.key));
            s.push_str("  ");
            push_elem(&mut s, "LastModified", &iso8601(e.last_modified));
            s.push_str("  ");
            push_elem(&mut s, "ETag", &e.etag);
            s.push_str("  ");
            push_elem(&mut s, "Type", e.object_type.as_str());
            s.push_str("  ");
            push_elem(&mut s, "Size", &e.size.to_string());
            s.push_str("  ");
            push_elem(&mut s, "StorageClass", &e.storage_class);
            s.push_str("  </Contents>\n");
        }
        for p in &self.common_prefixes {
            s.push_str("  <CommonPrefixes>\n  ");
            push_elem(&mut s, "Prefix", &enc(p));
            s.push_str("  </CommonPrefixes>\n");
        }
        push_elem(
            &mut s,
            "KeyCount",
            &(self.contents.len() + self.common_prefixes.len()).to_string(),
        );
        s.push_str("</ListBucketResult>\n");
        s
    }

    pub fn from_xml(xml: &str) -> Result<Self, XmlError> {
        let raw: RawList = quick_xml::de::from_str(xml).map_err(|e| XmlError(e.to_string()))?;
        let url = raw.encoding_type.as_deref() == Some("url");
        let dec = |v: String| -> Result<String, XmlError> {
            if url {
                decode(&v).ok_or_else(|| XmlError(format!("bad percent-encoding in {v:?}")))
            } else {
                Ok(v)
            }
        };
        let mut contents = Vec::with_capacity(raw.contents.len());
        for c in raw.contents {
            contents.push(ListEntry {
                key: dec(c.key)?,
                last_modified: DateTime::parse_from_rfc3339(&c.last_modified)
                    .map_err(|e| XmlError(format!("LastModified {:?}: {e}", c.last_modified)))?
                    .with_timezone(&Utc),
                etag: c.etag,
                object_type: c
                    .object_type
                    .as_deref()
                    .map(ObjectType::parse)
                    .unwrap_or(ObjectType::Normal),
                size: c.size,
                storage_class: c.storage_class.unwrap_or_else(|| "Standard".into()),
            });
        }
        Ok(ListPage {
            bucket: raw.name,
            prefix: dec(raw.prefix.unwrap_or_default())?,
            start_after: raw.start_after.map(&dec).transpose()?,
            continuation_token: raw.continuation_token.map(&dec).transpose()?,
            max_keys: raw.max_keys.unwrap_or(0),
            delimiter: dec(raw.delimiter.unwrap_or_default())?,
            encoding_url: url,
            is_truncated: raw.is_truncated,
            next_continuation_token: raw
                .next_continuation_token
                .filter(|t| !t.is_empty())
                .map(&dec)
                .transpose()?,
            contents,
            common_prefixes: raw
                .common_prefixes
                .into_iter()
                .map(|p| dec(p.prefix))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected XML: {0}")]
pub struct XmlError(pub String);

#[derive(Deserialize)]
struct RawList {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Prefix")]
    prefix: Option<String>,
    #[serde(rename = "StartAfter")]
    start_after: Option<String>,
    #[serde(rename = "ContinuationToken")]
    continuation_token: Option<String>,
    #[serde(rename = "MaxKeys")]
    max_keys: Option<u32>,
    #[serde(rename = "Delimiter")]
    delimiter: Option<String>,
    #[serde(rename = "EncodingType")]
    encoding_type: Option<String>,
    #[serde(rename = "IsTruncated")]
    is_truncated: bool,
    #[serde(rename = "NextContinuationToken")]
    next_continuation_token: Option<String>,
    #[serde(rename = "Contents", default)]
    contents: Vec<RawEntry>,
    #[serde(rename = "CommonPrefixes", default)]
    common_prefixes: Vec<RawPrefix>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "LastModified")]
    last_modified: String,
    #[serde(rename = "ETag", default)]
    etag: String,
    #[serde(rename = "Type")]
    object_type: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "StorageClass")]
    storage_class: Option<String>,
}

#[derive(Deserialize)]
struct RawPrefix {
    #[serde(rename = "Prefix")]
    prefix: String,
}

/// `<CopyObjectResult>` body.
pub fn copy_result_xml(etag: &str, last_modified: DateTime<Utc>) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult>\n");
    push_elem(&mut s, "ETag", etag);
    push_elem(&mut s, "LastModified", &iso8601(last_modified));
    s.push_str("</CopyObjectResult>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn error_round_trip_body_and_header() {
        let e = ErrorBody {
            code: "NoSuchKey".into(),
            message: "The specified key does not exist.".into(),
            request_id: "6556E3AED11E553933CCDEDF".into(),
            host_id: "b.127.0.0.1".into(),
            ec: Some("0026-00000001".into()),
            extras: vec![("Key".into(), "a<&>\"b".into())],
        };
        let xml = e.to_xml();
        assert!(xml.contains("<Key>a&lt;&amp;&gt;&quot;b</Key>"));
        assert!(!xml.contains("xmlns"));
        let back = ErrorBody::from_xml(&xml).unwrap();
        assert_eq!(back.code, e.code);
        assert_eq!(back.message, e.message);
        assert_eq!(back.request_id, e.request_id);
        assert_eq!(back.ec, e.ec);
        assert_eq!(
            ErrorBody::from_header(&e.to_header()).unwrap().code,
            "NoSuchKey"
        );
        assert_eq!(ErrorBody::from_xml("<html>nope</html>"), None);
        assert_eq!(ErrorBody::from_header("!!!"), None);
    }

    #[test]
    fn list_round_trip_with_odd_keys() {
        let t = Utc.timestamp_millis_opt(1_589_780_747_000).unwrap();
        assert_eq!(
            iso8601(Utc.timestamp_millis_opt(1_589_780_747_999).unwrap()),
            "2020-05-18T05:45:47.000Z"
        );
        for url in [false, true] {
            let page = ListPage {
                bucket: "b".into(),
                prefix: "日志/".into(),
                start_after: Some("a b".into()),
                continuation_token: Some("tok+/=".into()),
                max_keys: 2,
                delimiter: "/".into(),
                encoding_url: url,
                is_truncated: true,
                next_continuation_token: Some("next&<".into()),
                contents: vec![ListEntry {
                    key: "日志/a+b %~*&<.log".into(),
                    last_modified: t,
                    etag: "\"35A27C2B9EAEEB6F48FD7FB5861D0000\"".into(),
                    object_type: ObjectType::Appendable,
                    size: 25,
                    storage_class: "Standard".into(),
                }],
                common_prefixes: vec!["日志/sub dir/".into()],
            };
            let xml = page.to_xml();
            assert!(xml.contains("<KeyCount>2</KeyCount>"));
            assert!(xml.contains("<LastModified>2020-05-18T05:45:47.000Z</LastModified>"));
            if url {
                assert!(xml.contains("%E6%97%A5%E5%BF%97%2Fa%2Bb%20%25~%2A%26%3C.log"));
            }
            assert_eq!(ListPage::from_xml(&xml).unwrap(), page);
        }
    }

    /// Found by fuzzing (the listing round trip): a fraction of a second read from a listing is
    /// not written back. Deliberate: listings show whole seconds, as OSS does and as HEAD's
    /// Last-Modified can, so a file's mtime does not change between `ls` and `stat`.
    #[test]
    fn listing_times_are_whole_seconds() {
        let xml = "<ListBucketResult><Name>b</Name><IsTruncated>false</IsTruncated>\
                   <Contents><Key>k</Key><LastModified>2026-01-02T03:04:00.500Z</LastModified>\
                   <ETag>\"e\"</ETag><Size>1</Size></Contents></ListBucketResult>";
        let page = ListPage::from_xml(xml).expect("parses");
        let shown = page.to_xml();
        assert!(
            shown.contains("<LastModified>2026-01-02T03:04:00.000Z</LastModified>"),
            "{shown}"
        );
        let again = ListPage::from_xml(&shown).expect("parses again");
        assert_eq!(
            again.contents[0].last_modified,
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 0).unwrap()
        );
    }

    #[test]
    fn list_without_optional_parts() {
        let xml = "<ListBucketResult><Name>b</Name><Prefix></Prefix><MaxKeys>100</MaxKeys><Delimiter></Delimiter><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>";
        let page = ListPage::from_xml(xml).unwrap();
        assert!(
            page.contents.is_empty()
                && !page.is_truncated
                && page.next_continuation_token.is_none()
        );
        assert!(ListPage::from_xml("<ListBucketResult><Name>b</Name></ListBucketResult>").is_err());
    }
}
