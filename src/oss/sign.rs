//! Request signing and verification, V4 (`OSS4-HMAC-SHA256`, header and presigned forms) and V1
//! (HMAC-SHA1). The canonicalisation lives here once: the client signs with it and the server
//! recomputes with it, and both are held to the official SDKs' test vectors.

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::credentials::Credentials;
use super::encode::{encode, encode_path};

pub const V4_ALGORITHM: &str = "OSS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const PRODUCT: &str = "oss";
/// Maximum clock difference the service tolerates.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// The parts of a request that signatures cover. Keys and query values are decoded.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub bucket: Option<&'a str>,
    pub key: Option<&'a str>,
    pub query: &'a [(String, String)],
    pub headers: &'a HeaderMap,
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1>>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison, so a verifier does not leak how much of a signature matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

// ------------------------------------------------------------------------------------------------
// V4

pub fn v4_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

pub fn parse_v4_datetime(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

/// `/bucket/key` (bucket-level `/bucket/`, service-level `/`), encoded keeping `/`.
pub fn v4_canonical_uri(bucket: Option<&str>, key: Option<&str>) -> String {
    match (bucket, key) {
        (None, _) => "/".to_string(),
        (Some(b), None) => format!("/{}/", encode_path(b)),
        (Some(b), Some(k)) => format!("/{}/{}", encode_path(b), encode_path(k)),
    }
}

/// Every query parameter (the presigned signature itself excluded), encoded, sorted by encoded
/// name, valueless ones bare.
pub fn v4_canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "x-oss-signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_default_signed_header(name: &str) -> bool {
    name.starts_with("x-oss-") || name == "content-type" || name == "content-md5"
}

/// The additional-headers list as it is signed: lower-cased, sorted, de-duplicated, default
/// names dropped and only names present in the request kept.
pub fn v4_additional_headers(headers: &HeaderMap, requested: &[String]) -> Vec<String> {
    let mut names: Vec<String> = requested
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| {
            !n.is_empty() && !is_default_signed_header(n) && headers.contains_key(n.as_str())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Canonical headers block, each `name:value\n`, values trimmed and repeats joined with `,`.
pub fn v4_canonical_headers(headers: &HeaderMap, additional: &[String]) -> String {
    let mut names: Vec<String> = headers
        .keys()
        .map(|n| n.as_str().to_string())
        .filter(|n| is_default_signed_header(n) || additional.contains(n))
        .collect();
    names.sort();
    names.dedup();
    let mut out = String::new();
    for name in names {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .collect();
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

pub fn v4_canonical_request(
    parts: &RequestParts<'_>,
    additional: &[String],
    payload_hash: &str,
) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method.to_ascii_uppercase(),
        v4_canonical_uri(parts.bucket, parts.key),
        v4_canonical_query(parts.query),
        v4_canonical_headers(parts.headers, additional),
        additional.join(";"),
        payload_hash
    )
}

pub fn v4_scope(date: &str, region: &str, product: &str) -> String {
    format!("{date}/{region}/{product}/aliyun_v4_request")
}

pub fn v4_string_to_sign(datetime: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{V4_ALGORITHM}\n{datetime}\n{scope}\n{hash}")
}

pub fn v4_signing_key(secret: &str, date: &str, region: &str, product: &str) -> [u8; 32] {
    let k1 = hmac_sha256(format!("aliyun_v4{secret}").as_bytes(), date.as_bytes());
    let k2 = hmac_sha256(&k1, region.as_bytes());
    let k3 = hmac_sha256(&k2, product.as_bytes());
    hmac_sha256(&k3, b"aliyun_v4_request")
}

pub fn v4_signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(signing_key, string_to_sign.as_bytes()))
}

/// Where and how a V4 request is signed.
#[derive(Debug, Clone)]
pub struct V4Signer<'a> {
    pub credentials: &'a Credentials,
    pub region: &'a str,
    pub product: &'a str,
    pub now: DateTime<Utc>,
}

impl V4Signer<'_> {
    /// Adds `x-oss-date`, `x-oss-content-sha256`, the STS token and `Authorization` to `headers`.
    /// `additional` names non-default headers to sign too (e.g. `host`).
    pub fn sign_headers(
        &self,
        method: &str,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(String, String)],
        headers: &mut HeaderMap,
        additional: &[String],
    ) {
        let datetime = v4_datetime(self.now);
        insert(headers, "x-oss-date", &datetime);
        insert(headers, "x-oss-content-sha256", UNSIGNED_PAYLOAD);
        if let Some(token) = &self.credentials.security_token {
            insert(headers, "x-oss-security-token", token.expose());
        }
        let additional = v4_additional_headers(headers, additional);
        let scope = v4_scope(&datetime[..8], self.region, self.product);
        let parts = RequestParts {
            method,
            bucket,
            key,
            query,
            headers,
        };
        let canonical = v4_canonical_request(&parts, &additional, UNSIGNED_PAYLOAD);
        let sts = v4_string_to_sign(&datetime, &scope, &canonical);
        let key = v4_signing_key(
            self.credentials.access_key_secret.expose(),
            &datetime[..8],
            self.region,
            self.product,
        );
        let mut auth = format!(
            "{V4_ALGORITHM} Credential={}/{scope}",
            self.credentials.access_key_id
        );
        if !additional.is_empty() {
            auth.push_str(",AdditionalHeaders=");
            auth.push_str(&additional.join(";"));
        }
        auth.push_str(",Signature=");
        auth.push_str(&v4_signature(&key, &sts));
        insert(headers, "authorization", &auth);
    }

    /// Query parameters to add to a URL so it is valid for `expires_secs` without headers.
    /// `query` holds the request's own parameters; the returned list is them plus the signature.
    pub fn presign(
        &self,
        request: &RequestParts<'_>,
        expires_secs: u64,
        additional: &[String],
    ) -> Vec<(String, String)> {
        let RequestParts {
            method,
            bucket,
            key,
            query,
            headers,
        } = *request;
        let datetime = v4_datetime(self.now);
        let scope = v4_scope(&datetime[..8], self.region, self.product);
        let additional = v4_additional_headers(headers, additional);
        let mut q: Vec<(String, String)> = query.to_vec();
        q.push(("x-oss-signature-version".into(), V4_ALGORITHM.into()));
        q.push(("x-oss-date".into(), datetime.clone()));
        q.push(("x-oss-expires".into(), expires_secs.to_string()));
        q.push((
            "x-oss-credential".into(),
            format!("{}/{scope}", self.credentials.access_key_id),
        ));
        if let Some(token) = &self.credentials.security_token {
            q.push(("x-oss-security-token".into(), token.expose().to_string()));
        }
        if !additional.is_empty() {
            q.push(("x-oss-additional-headers".into(), additional.join(";")));
        }
        let parts = RequestParts {
            method,
            bucket,
            key,
            query: &q,
            headers,
        };
        let canonical = v4_canonical_request(&parts, &additional, UNSIGNED_PAYLOAD);
        let sts = v4_string_to_sign(&datetime, &scope, &canonical);
        let signing_key = v4_signing_key(
            self.credentials.access_key_secret.expose(),
            &datetime[..8],
            self.region,
            self.product,
        );
        q.push(("x-oss-signature".into(), v4_signature(&signing_key, &sts)));
        q
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

// ------------------------------------------------------------------------------------------------
// V1

/// Sub-resources that V1 signs (the union of the SDKs' lists); other query parameters are not
/// signed in V1.
const V1_SUBRESOURCES: &[&str] = &[
    "acl",
    "append",
    "bucketInfo",
    "callback",
    "callback-var",
    "cname",
    "comp",
    "continuation-token",
    "cors",
    "delete",
    "encryption",
    "endTime",
    "img",
    "inventory",
    "inventoryId",
    "lifecycle",
    "live",
    "location",
    "logging",
    "objectInfo",
    "objectMeta",
    "partNumber",
    "policy",
    "position",
    "qos",
    "referer",
    "regionList",
    "replication",
    "replicationLocation",
    "replicationProgress",
    "requestPayment",
    "resourceGroup",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "seal",
    "security-token",
    "sequential",
    "startTime",
    "stat",
    "status",
    "style",
    "styleName",
    "symlink",
    "tagging",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "vod",
    "website",
    "worm",
    "wormExtend",
    "wormId",
    "x-oss-process",
    "x-oss-request-payer",
    "x-oss-traffic-limit",
];

pub fn v1_canonical_resource(
    bucket: Option<&str>,
    key: Option<&str>,
    query: &[(String, String)],
) -> String {
    let mut out = match (bucket, key) {
        (None, _) => "/".to_string(),
        (Some(b), None) => format!("/{b}/"),
        (Some(b), Some(k)) => format!("/{b}/{k}"),
    };
    let mut subs: Vec<&(String, String)> = query
        .iter()
        .filter(|(k, _)| V1_SUBRESOURCES.contains(&k.as_str()))
        .collect();
    subs.sort();
    for (i, (k, v)) in subs.into_iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        if !v.is_empty() {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// `VERB\nContent-MD5\nContent-Type\nDate\n` + canonical `x-oss-*` headers + resource.
/// `date` is the Date (or x-oss-date) header, or `Expires` for a presigned URL.
pub fn v1_string_to_sign(parts: &RequestParts<'_>, date: &str) -> String {
    let mut oss_headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-oss-"))
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).trim().to_string(),
            )
        })
        .collect();
    oss_headers.sort();
    let mut out = format!(
        "{}\n{}\n{}\n{}\n",
        parts.method.to_ascii_uppercase(),
        header_str(parts.headers, "content-md5").unwrap_or(""),
        header_str(parts.headers, "content-type").unwrap_or(""),
        date
    );
    for (n, v) in oss_headers {
        out.push_str(&n);
        out.push(':');
        out.push_str(&v);
        out.push('\n');
    }
    out.push_str(&v1_canonical_resource(parts.bucket, parts.key, parts.query));
    out
}

pub fn v1_signature(secret: &str, string_to_sign: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(hmac_sha1(secret.as_bytes(), string_to_sign.as_bytes()))
}

/// Adds `Date`, the STS token and `Authorization: OSS ak:sig` to `headers`.
pub fn v1_sign_headers(
    credentials: &Credentials,
    now: DateTime<Utc>,
    method: &str,
    bucket: Option<&str>,
    key: Option<&str>,
    query: &[(String, String)],
    headers: &mut HeaderMap,
) {
    let date = httpdate::fmt_http_date(now.into());
    insert(headers, "date", &date);
    if let Some(token) = &credentials.security_token {
        insert(headers, "x-oss-security-token", token.expose());
    }
    let parts = RequestParts {
        method,
        bucket,
        key,
        query,
        headers,
    };
    let sts = v1_string_to_sign(&parts, &date);
    let sig = v1_signature(credentials.access_key_secret.expose(), &sts);
    insert(
        headers,
        "authorization",
        &format!("OSS {}:{sig}", credentials.access_key_id),
    );
}

// ------------------------------------------------------------------------------------------------
// Verification (server side)

/// What an `Authorization` header or a presigned query claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    V4 {
        access_key_id: String,
        date: String,
        region: String,
        product: String,
        additional: Vec<String>,
        signature: String,
        presigned: bool,
    },
    V1 {
        access_key_id: String,
        signature: String,
        presigned: bool,
    },
    Anonymous,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed authorization: {0}")]
pub struct MalformedAuth(pub String);

/// Reads the claim of a request: header auth first, then the V4 and V1 presigned forms.
pub fn parse_claim(
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Claim, MalformedAuth> {
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(auth) = headers.get("authorization") {
        let auth = auth
            .to_str()
            .map_err(|_| MalformedAuth("Authorization is not ASCII".into()))?;
        return parse_authorization(auth);
    }
    if let Some(sig) = q("x-oss-signature") {
        let cred = q("x-oss-credential")
            .ok_or_else(|| MalformedAuth("x-oss-credential missing".into()))?;
        let (ak, date, region, product) = split_credential(cred)?;
        let additional = q("x-oss-additional-headers")
            .map(|s| {
                s.split(';')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Claim::V4 {
            access_key_id: ak,
            date,
            region,
            product,
            additional,
            signature: sig.to_string(),
            presigned: true,
        });
    }
    if let (Some(ak), Some(sig)) = (q("OSSAccessKeyId"), q("Signature")) {
        return Ok(Claim::V1 {
            access_key_id: ak.to_string(),
            signature: sig.to_string(),
            presigned: true,
        });
    }
    Ok(Claim::Anonymous)
}

fn split_credential(cred: &str) -> Result<(String, String, String, String), MalformedAuth> {
    let parts: Vec<&str> = cred.split('/').collect();
    match parts.as_slice() {
        [ak, date, region, product, "aliyun_v4_request"] if !ak.is_empty() && date.len() == 8 => {
            Ok((
                ak.to_string(),
                date.to_string(),
                region.to_string(),
                product.to_string(),
            ))
        }
        _ => Err(MalformedAuth(format!("bad credential scope {cred:?}"))),
    }
}

/// Parses `OSS4-HMAC-SHA256 Credential=…,AdditionalHeaders=…,Signature=…` in any order and with or
/// without spaces after commas (oss2 and the v2 SDKs differ), or `OSS ak:sig`.
pub fn parse_authorization(auth: &str) -> Result<Claim, MalformedAuth> {
    if let Some(rest) = auth.strip_prefix(V4_ALGORITHM) {
        let mut cred = None;
        let mut additional = None;
        let mut sig = None;
        for item in rest.split(',') {
            let item = item.trim();
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| MalformedAuth(format!("bad item {item:?}")))?;
            match name.trim() {
                "Credential" => cred = Some(value.trim()),
                "AdditionalHeaders" => additional = Some(value.trim()),
                "Signature" => sig = Some(value.trim()),
                other => return Err(MalformedAuth(format!("unknown item {other:?}"))),
            }
        }
        let cred = cred.ok_or_else(|| MalformedAuth("Credential missing".into()))?;
        let (ak, date, region, product) = split_credential(cred)?;
        if additional == Some("") {
            return Err(MalformedAuth("empty AdditionalHeaders".into()));
        }
        return Ok(Claim::V4 {
            access_key_id: ak,
            date,
            region,
            product,
            additional: additional
                .map(|s| s.split(';').map(|s| s.to_ascii_lowercase()).collect())
                .unwrap_or_default(),
            signature: sig
                .ok_or_else(|| MalformedAuth("Signature missing".into()))?
                .to_string(),
            presigned: false,
        });
    }
    if let Some(rest) = auth.strip_prefix("OSS ") {
        let (ak, sig) = rest
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| MalformedAuth("expected OSS AccessKeyId:Signature".into()))?;
        return Ok(Claim::V1 {
            access_key_id: ak.to_string(),
            signature: sig.to_string(),
            presigned: false,
        });
    }
    Err(MalformedAuth("unknown authorization scheme".into()))
}

/// Why a claim was not accepted; the server turns each into its OSS error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// `InvalidAccessKeyId`.
    UnknownAccessKey,
    /// `SignatureDoesNotMatch`, with the string the server signed (tokens redacted).
    Mismatch {
        string_to_sign: String,
        provided: String,
    },
    /// `RequestTimeTooSkewed`.
    Skewed,
    /// Presigned URL past its expiry (`AccessDenied`, "Request has expired").
    Expired,
    /// Missing or inconsistent date, scope or payload hash (`InvalidArgument` / `AccessDenied`).
    Invalid(String),
    /// STS token missing or wrong (`InvalidSecurityToken`).
    BadToken,
}

/// Checks `claim` against the one key pair this verifier knows.
pub fn verify(
    creds: &Credentials,
    claim: &Claim,
    parts: &RequestParts<'_>,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    let q = |name: &str| {
        parts
            .query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match claim {
        Claim::Anonymous => Err(Rejection::Invalid("anonymous request".into())),
        Claim::V4 {
            access_key_id,
            date,
            region,
            product,
            additional,
            signature,
            presigned,
        } => {
            if access_key_id != &creds.access_key_id {
                return Err(Rejection::UnknownAccessKey);
            }
            let datetime = if *presigned {
                q("x-oss-date")
            } else {
                header_str(parts.headers, "x-oss-date")
            }
            .ok_or_else(|| Rejection::Invalid("x-oss-date missing".into()))?;
            let t = parse_v4_datetime(datetime)
                .ok_or_else(|| Rejection::Invalid(format!("bad x-oss-date {datetime:?}")))?;
            if &datetime[..8] != date {
                return Err(Rejection::Invalid(
                    "credential scope date differs from x-oss-date".into(),
                ));
            }
            if *presigned {
                let expires: i64 = q("x-oss-expires")
                    .and_then(|v| v.parse().ok())
                    .filter(|v| (1..=604_800).contains(v))
                    .ok_or_else(|| Rejection::Invalid("x-oss-expires out of range".into()))?;
                if now.timestamp() > t.timestamp() + expires {
                    return Err(Rejection::Expired);
                }
            } else {
                if (now - t).num_seconds().abs() > MAX_SKEW_SECS {
                    return Err(Rejection::Skewed);
                }
                let payload = header_str(parts.headers, "x-oss-content-sha256");
                if payload != Some(UNSIGNED_PAYLOAD) {
                    return Err(Rejection::Invalid(
                        "x-oss-content-sha256 must be UNSIGNED-PAYLOAD".into(),
                    ));
                }
            }
            check_token(
                creds,
                if *presigned {
                    q("x-oss-security-token")
                } else {
                    header_str(parts.headers, "x-oss-security-token")
                },
            )?;
            let additional = v4_additional_headers(parts.headers, additional);
            let canonical = v4_canonical_request(parts, &additional, UNSIGNED_PAYLOAD);
            let sts = v4_string_to_sign(datetime, &v4_scope(date, region, product), &canonical);
            let key = v4_signing_key(creds.access_key_secret.expose(), date, region, product);
            let expected = v4_signature(&key, &sts);
            if constant_time_eq(
                expected.as_bytes(),
                signature.to_ascii_lowercase().as_bytes(),
            ) {
                Ok(())
            } else {
                Err(Rejection::Mismatch {
                    string_to_sign: sts,
                    provided: signature.clone(),
                })
            }
        }
        Claim::V1 {
            access_key_id,
            signature,
            presigned,
        } => {
            if access_key_id != &creds.access_key_id {
                return Err(Rejection::UnknownAccessKey);
            }
            let date = if *presigned {
                let expires =
                    q("Expires").ok_or_else(|| Rejection::Invalid("Expires missing".into()))?;
                let at: i64 = expires
                    .parse()
                    .map_err(|_| Rejection::Invalid("Expires is not a number".into()))?;
                if now.timestamp() > at {
                    return Err(Rejection::Expired);
                }
                check_token(creds, q("security-token"))?;
                expires.to_string()
            } else {
                let date = header_str(parts.headers, "x-oss-date")
                    .or_else(|| header_str(parts.headers, "date"))
                    .ok_or_else(|| Rejection::Invalid("Date missing".into()))?;
                let t = httpdate::parse_http_date(date)
                    .map_err(|_| Rejection::Invalid(format!("bad Date {date:?}")))?;
                let t: DateTime<Utc> = t.into();
                if (now - t).num_seconds().abs() > MAX_SKEW_SECS {
                    return Err(Rejection::Skewed);
                }
                check_token(creds, header_str(parts.headers, "x-oss-security-token"))?;
                date.to_string()
            };
            let sts = v1_string_to_sign(parts, &date);
            let expected = v1_signature(creds.access_key_secret.expose(), &sts);
            if constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
                Ok(())
            } else {
                Err(Rejection::Mismatch {
                    string_to_sign: redact_token(&sts, creds),
                    provided: signature.clone(),
                })
            }
        }
    }
}

fn check_token(creds: &Credentials, sent: Option<&str>) -> Result<(), Rejection> {
    match &creds.security_token {
        None => Ok(()),
        Some(t) if sent.is_some_and(|s| constant_time_eq(s.as_bytes(), t.expose().as_bytes())) => {
            Ok(())
        }
        Some(_) => Err(Rejection::BadToken),
    }
}

fn redact_token(s: &str, creds: &Credentials) -> String {
    match &creds.security_token {
        Some(t) => s.replace(t.expose(), "<redacted>"),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn vector_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-oss-head1", "value"),
            ("abc", "value"),
            ("ZAbc", "value"),
            ("XYZ", "value"),
            ("content-type", "text/plain"),
            ("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
        ] {
            h.insert(
                http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    fn vector_query() -> Vec<(String, String)> {
        [
            ("param1", "value1"),
            ("+param1", "value3"),
            ("|param1", "value4"),
            ("+param2", ""),
            ("|param2", ""),
            ("param2", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    const KEY: &str = "1234+-/123/1.txt";

    #[test]
    fn v4_vector_a_header() {
        let creds = Credentials::new("ak", "sk");
        let signer = V4Signer {
            credentials: &creds,
            region: "cn-hangzhou",
            product: "oss",
            now: at(1702743657),
        };
        let mut h = vector_headers();
        let q = vector_query();
        signer.sign_headers("PUT", Some("bucket"), Some(KEY), &q, &mut h, &[]);
        let parts = RequestParts {
            method: "PUT",
            bucket: Some("bucket"),
            key: Some(KEY),
            query: &q,
            headers: &h,
        };
        let canonical = v4_canonical_request(&parts, &[], UNSIGNED_PAYLOAD);
        assert_eq!(
            canonical,
            "PUT\n/bucket/1234%2B-/123/1.txt\n%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2\ncontent-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\nx-oss-head1:value\n\n\nUNSIGNED-PAYLOAD"
        );
        let sts = v4_string_to_sign(
            "20231216T162057Z",
            "20231216/cn-hangzhou/oss/aliyun_v4_request",
            &canonical,
        );
        assert!(sts.ends_with("f4613657f1b108998e8dbd10a1aa5da621dc2c6e02c9ddec0f163664848704c4"));
        assert_eq!(
            hex::encode(v4_signing_key("sk", "20231216", "cn-hangzhou", "oss")),
            "b412a03b134ebddd720f5167b5de6db66620ebb3b01cff4d49e3ccb09f8de97f"
        );
        assert_eq!(
            h["authorization"],
            "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe"
        );
        // And the verifier accepts exactly this request.
        let claim = parse_claim(&h, &q).unwrap();
        assert_eq!(verify(&creds, &claim, &parts, at(1702743657 + 60)), Ok(()));
        let wrong = Credentials::new("ak", "sk2");
        assert!(matches!(
            verify(&wrong, &claim, &parts, at(1702743657)),
            Err(Rejection::Mismatch { .. })
        ));
        assert_eq!(
            verify(&creds, &claim, &parts, at(1702743657 + 16 * 60)),
            Err(Rejection::Skewed)
        );
    }

    #[test]
    fn v4_vector_b_token() {
        let creds = Credentials::new("ak", "sk").with_token(Some("token".into()));
        let signer = V4Signer {
            credentials: &creds,
            region: "cn-hangzhou",
            product: "oss",
            now: at(1702784856),
        };
        let mut h = vector_headers();
        let q = vector_query();
        signer.sign_headers("PUT", Some("bucket"), Some(KEY), &q, &mut h, &[]);
        let parts = RequestParts {
            method: "PUT",
            bucket: Some("bucket"),
            key: Some(KEY),
            query: &q,
            headers: &h,
        };
        let canonical = v4_canonical_request(&parts, &[], UNSIGNED_PAYLOAD);
        assert!(canonical.contains("x-oss-security-token:token\n"));
        let sts = v4_string_to_sign(
            "20231217T034736Z",
            "20231217/cn-hangzhou/oss/aliyun_v4_request",
            &canonical,
        );
        assert!(sts.ends_with("69494678fb11579d4ee12996e2796d9e2ba43c34aa4c723c4aec018f3d6b86b8"));
        assert!(h["authorization"].to_str().unwrap().ends_with(
            "Signature=b94a3f999cf85bcdc00d332fbd3734ba03e48382c36fa4d5af5df817395bd9ea"
        ));
        let claim = parse_claim(&h, &q).unwrap();
        assert_eq!(verify(&creds, &claim, &parts, at(1702784856)), Ok(()));
        let other_token = Credentials::new("ak", "sk").with_token(Some("other".into()));
        assert_eq!(
            verify(&other_token, &claim, &parts, at(1702784856)),
            Err(Rejection::BadToken)
        );
    }

    #[test]
    fn v4_vector_c_additional_headers() {
        let creds = Credentials::new("ak", "sk");
        let signer = V4Signer {
            credentials: &creds,
            region: "cn-hangzhou",
            product: "oss",
            now: at(1702747512),
        };
        let q = vector_query();
        for extra in [
            vec!["ZAbc".to_string(), "abc".to_string()],
            vec![
                "x-oss-head1".into(),
                "abc".into(),
                "ZAbc".into(),
                "not-there".into(),
            ],
        ] {
            let mut h = vector_headers();
            signer.sign_headers("PUT", Some("bucket"), Some(KEY), &q, &mut h, &extra);
            assert_eq!(
                h["authorization"],
                "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,AdditionalHeaders=abc;zabc,Signature=4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f"
            );
            let claim = parse_claim(&h, &q).unwrap();
            let parts = RequestParts {
                method: "PUT",
                bucket: Some("bucket"),
                key: Some(KEY),
                query: &q,
                headers: &h,
            };
            assert_eq!(verify(&creds, &claim, &parts, at(1702747512)), Ok(()));
        }
    }

    #[test]
    fn v4_vector_d_presigned() {
        let creds = Credentials::new("ak", "sk");
        let signer = V4Signer {
            credentials: &creds,
            region: "cn-hangzhou",
            product: "oss",
            now: at(1702781677),
        };
        let mut h = HeaderMap::new();
        h.insert("x-oss-head1", HeaderValue::from_static("value"));
        h.insert("abc", HeaderValue::from_static("value"));
        h.insert("zabc", HeaderValue::from_static("value"));
        h.insert("xyz", HeaderValue::from_static("value"));
        h.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        let vq = vector_query();
        let base = RequestParts {
            method: "PUT",
            bucket: Some("bucket"),
            key: Some(KEY),
            query: &vq,
            headers: &h,
        };
        let q = signer.presign(&base, 1702782276 - 1702781677, &[]);
        let parts = RequestParts {
            method: "PUT",
            bucket: Some("bucket"),
            key: Some(KEY),
            query: &q,
            headers: &h,
        };
        assert_eq!(
            v4_canonical_query(&q),
            "%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2&x-oss-credential=ak%2F20231217%2Fcn-hangzhou%2Foss%2Faliyun_v4_request&x-oss-date=20231217T025437Z&x-oss-expires=599&x-oss-signature-version=OSS4-HMAC-SHA256"
        );
        let canonical = v4_canonical_request(&parts, &[], UNSIGNED_PAYLOAD);
        assert!(
            canonical.contains("\ncontent-type:application/octet-stream\nx-oss-head1:value\n\n")
        );
        let sts = v4_string_to_sign(
            "20231217T025437Z",
            "20231217/cn-hangzhou/oss/aliyun_v4_request",
            &canonical,
        );
        assert!(sts.ends_with("48814c11f278d51662015bf2f896b66ca10b6de0187ed8d952e341bbce0aa336"));
        let sig = &q.iter().find(|(k, _)| k == "x-oss-signature").unwrap().1;
        assert_eq!(
            sig,
            "a39966c61718be0d5b14e668088b3fa07601033f6518ac7b523100014269c0fe"
        );
        let claim = parse_claim(&HeaderMap::new(), &q).unwrap();
        assert_eq!(verify(&creds, &claim, &parts, at(1702781677 + 500)), Ok(()));
        assert_eq!(
            verify(&creds, &claim, &parts, at(1702781677 + 600)),
            Err(Rejection::Expired)
        );
    }

    fn v1_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "content-md5",
            HeaderValue::from_static("eB5eJF1ptWaXm4bijSPyxw=="),
        );
        h.insert("content-type", HeaderValue::from_static("text/html"));
        h.insert(
            "x-oss-date",
            HeaderValue::from_static("Wed, 28 Dec 2022 10:27:41 GMT"),
        );
        h.insert(
            "date",
            HeaderValue::from_static("Wed, 28 Dec 2022 10:27:41 GMT"),
        );
        h.insert("x-oss-meta-author", HeaderValue::from_static("alice"));
        h.insert("x-oss-meta-magic", HeaderValue::from_static("abracadabra"));
        h
    }

    #[test]
    fn v1_vector() {
        let h = v1_headers();
        let q: Vec<(String, String)> = vec![];
        let parts = RequestParts {
            method: "PUT",
            bucket: Some("examplebucket"),
            key: Some("nelson"),
            query: &q,
            headers: &h,
        };
        let sts = v1_string_to_sign(&parts, "Wed, 28 Dec 2022 10:27:41 GMT");
        assert_eq!(sts, "PUT\neB5eJF1ptWaXm4bijSPyxw==\ntext/html\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-date:Wed, 28 Dec 2022 10:27:41 GMT\nx-oss-meta-author:alice\nx-oss-meta-magic:abracadabra\n/examplebucket/nelson");
        assert_eq!(v1_signature("sk", &sts), "kSHKmLxlyEAKtZPkJhG9bZb5k7M=");

        let qa = vec![("acl".to_string(), String::new())];
        let parts = RequestParts {
            query: &qa,
            ..parts
        };
        assert_eq!(
            v1_signature(
                "sk",
                &v1_string_to_sign(&parts, "Wed, 28 Dec 2022 10:27:41 GMT")
            ),
            "/afkugFbmWDQ967j1vr6zygBLQk="
        );

        let creds = Credentials::new("ak", "sk");
        let mut h = v1_headers();
        h.insert(
            "authorization",
            HeaderValue::from_static("OSS ak:/afkugFbmWDQ967j1vr6zygBLQk="),
        );
        let parts = RequestParts {
            method: "PUT",
            bucket: Some("examplebucket"),
            key: Some("nelson"),
            query: &qa,
            headers: &h,
        };
        let claim = parse_claim(&h, &qa).unwrap();
        let when: DateTime<Utc> = httpdate::parse_http_date("Wed, 28 Dec 2022 10:30:00 GMT")
            .unwrap()
            .into();
        assert_eq!(verify(&creds, &claim, &parts, when), Ok(()));
    }

    #[test]
    fn v1_resource_signs_only_subresources() {
        let q: Vec<(String, String)> = [
            ("position", "5"),
            ("append", ""),
            ("prefix", "x"),
            ("list-type", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            v1_canonical_resource(Some("b"), Some("dir/a b.log"), &q),
            "/b/dir/a b.log?append&position=5"
        );
        assert_eq!(
            v1_canonical_resource(Some("b"), None, &q),
            "/b/?append&position=5"
        );
        assert_eq!(v1_canonical_resource(None, None, &[]), "/");
    }

    #[test]
    fn authorization_parsing_is_tolerant() {
        let oss2 = "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request, Signature=ab12, AdditionalHeaders=host";
        match parse_authorization(oss2).unwrap() {
            Claim::V4 {
                access_key_id,
                additional,
                signature,
                region,
                ..
            } => {
                assert_eq!(access_key_id, "ak");
                assert_eq!(additional, vec!["host"]);
                assert_eq!(signature, "ab12");
                assert_eq!(region, "cn-hangzhou");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_authorization(
            "OSS4-HMAC-SHA256 Credential=ak/2023/x/oss/aliyun_v4_request,Signature=a"
        )
        .is_err());
        assert!(parse_authorization("OSS4-HMAC-SHA256 Credential=ak/20231216/r/oss/aliyun_v4_request,AdditionalHeaders=,Signature=a").is_err());
        assert!(parse_authorization("Bearer x").is_err());
        assert_eq!(
            parse_authorization("OSS ak:sig=").unwrap(),
            Claim::V1 {
                access_key_id: "ak".into(),
                signature: "sig=".into(),
                presigned: false
            }
        );
    }
}
