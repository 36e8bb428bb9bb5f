//! Where requests go and how they are sent: endpoint parsing, region derivation, the choice
//! between virtual-hosted and path-style addressing, signature version and timeouts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

use super::retry::RetryPolicy;
use crate::oss::encode::{encode, encode_path};

/// Region used in the V4 scope for IP and localhost endpoints when none is given. A local
/// OSS-compatible server has no region of its own; `cn-hangzhou` is what `oss.aliyuncs.com`
/// means too.
pub const LOCAL_DEFAULT_REGION: &str = "cn-hangzhou";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureVersion {
    /// `OSS4-HMAC-SHA256`, the default of the current SDKs.
    #[default]
    V4,
    /// HMAC-SHA1 (`Authorization: OSS ak:sig`), for old deployments and compatible servers.
    V1,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error("invalid bucket name {0:?}: 3-63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    Bucket(String),
    #[error("invalid region {0:?}: expected an id like cn-hangzhou")]
    Region(String),
    #[error("V4 signing needs a region and none can be derived from endpoint host {host:?}; pass --region (e.g. cn-hangzhou)")]
    RegionRequired { host: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKind {
    Ip,
    Localhost,
    Domain,
}

/// A parsed endpoint: scheme, host and port, nothing else (a path, query or user info is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    https: bool,
    /// As it goes in a URL: IPv6 in brackets.
    host: String,
    port: Option<u16>,
    kind: HostKind,
}

/// `endpoint` with any `user:password@` replaced by `***@`, for messages: a password typed
/// into an endpoint must not be echoed back.
pub fn without_userinfo(endpoint: &str) -> String {
    let (scheme, rest) = match endpoint.find("://") {
        Some(i) => endpoint.split_at(i + 3),
        None => ("", endpoint),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => endpoint.to_string(),
    }
}

impl Endpoint {
    /// Accepts `https://oss-cn-hangzhou.aliyuncs.com`, `http://127.0.0.1:9000`, `http://[::1]:9000`,
    /// or a bare host (`oss-cn-hangzhou.aliyuncs.com`, then https like the SDKs).
    pub fn parse(endpoint: &str) -> Result<Endpoint, ConfigError> {
        let bad = |reason| ConfigError::Endpoint {
            endpoint: without_userinfo(endpoint),
            reason,
        };
        let trimmed = endpoint.trim();
        if trimmed.is_empty() {
            return Err(bad("empty"));
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("https://{trimmed}")
        };
        let url = Url::parse(&with_scheme).map_err(|_| bad("not a URL"))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad("scheme must be http or https")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("user info is not allowed"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a path, query or fragment"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let kind = if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
            HostKind::Ip
        } else if host.eq_ignore_ascii_case("localhost") {
            HostKind::Localhost
        } else {
            HostKind::Domain
        };
        // `host_str` keeps IPv6 brackets, as a URL authority needs them.
        let host = host.to_ascii_lowercase();
        Ok(Endpoint {
            https,
            host,
            port: url.port(),
            kind,
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// IP literal or `localhost`: path-style addressing, no proxy, default region allowed.
    pub fn is_local(&self) -> bool {
        self.kind != HostKind::Domain
    }

    /// True for loopback addresses and `localhost` (requests there bypass any HTTP proxy).
    pub fn is_loopback(&self) -> bool {
        match self.kind {
            HostKind::Localhost => true,
            HostKind::Ip => self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            HostKind::Domain => false,
        }
    }

    /// The region named by an official endpoint: `oss-<region>[-internal].aliyuncs.com`,
    /// `<region>.oss.aliyuncs.com` (dual-stack) and `oss[-internal].aliyuncs.com` (Hangzhou).
    /// Acceleration and custom domains name no region.
    pub fn derived_region(&self) -> Option<String> {
        let rest = self.host.strip_suffix(".aliyuncs.com")?;
        let labels: Vec<&str> = rest.split('.').collect();
        let last = *labels.last()?;
        let region = if last == "oss" {
            // `<region>.oss.aliyuncs.com`, or plain `oss.aliyuncs.com`.
            match labels.len() {
                1 => "cn-hangzhou",
                n => labels[n - 2],
            }
        } else {
            let name = last.strip_prefix("oss-")?;
            let name = name.strip_suffix("-internal").unwrap_or(name);
            match name {
                "internal" => "cn-hangzhou",
                n if n.starts_with("accelerate") => return None,
                n => n,
            }
        };
        valid_region(region).then(|| region.to_string())
    }

    fn authority(&self, bucket_prefix: Option<&str>) -> String {
        let mut s = String::new();
        if let Some(b) = bucket_prefix {
            s.push_str(b);
            s.push('.');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push(':');
            s.push_str(&p.to_string());
        }
        s
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority(None))
    }
}

fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !r.starts_with('-')
        && !r.ends_with('-')
}

/// Everything [`super::Client::new`] needs besides credentials. Fields are public so callers
/// (the CLI, tests) adjust what they need after [`ClientConfig::new`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoint: Endpoint,
    pub bucket: String,
    /// Explicit region; otherwise derived from the endpoint (see [`Endpoint::derived_region`]).
    pub region: Option<String>,
    /// Force path-style addressing (it is automatic for IP and localhost endpoints).
    pub path_style: bool,
    pub signature: SignatureVersion,
    pub connect_timeout: Duration,
    /// Limit for one attempt up to the end of its response body, except for the streamed body
    /// of GetObject, which is bounded per read by the same value instead.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Fixed DNS answers (`host` → address), like curl's `--resolve`: lets tests and unusual
    /// networks use virtual-hosted addressing with a chosen address.
    pub resolve: Vec<(String, SocketAddr)>,
    pub user_agent: String,
}

impl ClientConfig {
    pub fn new(endpoint: &str, bucket: &str) -> Result<Self, ConfigError> {
        if !crate::oss::valid_bucket_name(bucket) {
            return Err(ConfigError::Bucket(bucket.to_string()));
        }
        Ok(ClientConfig {
            endpoint: Endpoint::parse(endpoint)?,
            bucket: bucket.to_string(),
            region: None,
            path_style: false,
            signature: SignatureVersion::V4,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            resolve: Vec::new(),
            user_agent: concat!("appendfs/", env!("CARGO_PKG_VERSION")).to_string(),
        })
    }

    /// The region that goes into V4 scopes: explicit, else derived, else the local default for
    /// IP/localhost endpoints. V1 does not sign a region, so it never fails there.
    pub fn effective_region(&self) -> Result<String, ConfigError> {
        if let Some(r) = &self.region {
            let r = r.trim();
            return if valid_region(r) {
                Ok(r.to_string())
            } else {
                Err(ConfigError::Region(r.to_string()))
            };
        }
        if let Some(r) = self.endpoint.derived_region() {
            return Ok(r);
        }
        if self.endpoint.is_local() || self.signature == SignatureVersion::V1 {
            return Ok(LOCAL_DEFAULT_REGION.to_string());
        }
        Err(ConfigError::RegionRequired {
            host: self.endpoint.host.clone(),
        })
    }

    pub fn uses_path_style(&self) -> bool {
        self.path_style || self.endpoint.is_local()
    }

    pub(crate) fn addressing(&self) -> Result<Addressing, ConfigError> {
        Ok(Addressing {
            scheme: if self.endpoint.https { "https" } else { "http" },
            authority: if self.uses_path_style() {
                self.endpoint.authority(None)
            } else {
                self.endpoint.authority(Some(&self.bucket))
            },
            bucket: self.bucket.clone(),
            path_style: self.uses_path_style(),
            region: self.effective_region()?,
        })
    }
}

/// The resolved form of a config: how to build each request URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addressing {
    scheme: &'static str,
    authority: String,
    pub bucket: String,
    pub path_style: bool,
    pub region: String,
}

impl Addressing {
    /// `scheme://authority/[bucket/]key?query`, or the bucket root when `key` is `None`.
    pub fn url(&self, key: Option<&str>, query: &str) -> String {
        let mut s = format!("{}://{}/", self.scheme, self.authority);
        if self.path_style {
            s.push_str(&self.bucket);
            s.push('/');
        }
        if let Some(k) = key {
            s.push_str(&key_path(k));
        }
        if !query.is_empty() {
            s.push('?');
            s.push_str(query);
        }
        s
    }

    /// What a request's `Host` header will be (for tests and logs).
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// A key as it goes in the URL path: percent-encoded keeping `/`, except that a key with a `.` or
/// `..` segment has its `/` encoded too (`%2F`, as oss2 always does), because URL parsers
/// remove dot segments and the request would name another object. The signature does not
/// change: it covers the decoded key.
pub fn key_path(key: &str) -> String {
    if key.split('/').any(|s| s == "." || s == "..") {
        encode(key)
    } else {
        encode_path(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_in_an_endpoint_is_refused_without_echoing_it() {
        for ep in [
            "https://ak:hunter2@oss-cn-hangzhou.aliyuncs.com",
            "http://user:hunter2@127.0.0.1:9000/",
            "ak:hunter2@oss-cn-hangzhou.aliyuncs.com",
        ] {
            let e = Endpoint::parse(ep).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && e.contains("***@"), "{e}");
        }
        assert_eq!(without_userinfo("http://h:1/a@b"), "http://h:1/a@b");
    }

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("https://oss-cn-hangzhou.aliyuncs.com").unwrap();
        assert!(e.is_https() && !e.is_local() && e.port().is_none());
        let e = Endpoint::parse("oss-cn-beijing-internal.aliyuncs.com").unwrap();
        assert!(e.is_https());
        assert_eq!(e.derived_region().as_deref(), Some("cn-beijing"));
        let e = Endpoint::parse("http://127.0.0.1:9000/").unwrap();
        assert!(!e.is_https() && e.is_local() && e.is_loopback());
        assert_eq!(e.port(), Some(9000));
        let e = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!(e.host(), "[::1]");
        assert!(e.is_local() && e.is_loopback());
        let e = Endpoint::parse("http://LocalHost:1").unwrap();
        assert!(e.is_local() && e.is_loopback());
        let e = Endpoint::parse("http://10.1.2.3").unwrap();
        assert!(e.is_local() && !e.is_loopback());
        for bad in [
            "",
            "ftp://x.com",
            "http://x.com/path",
            "http://x.com/?a=b",
            "http://u:p@x.com",
            "http://",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regions_derive() {
        let r = |h: &str| Endpoint::parse(h).unwrap().derived_region();
        assert_eq!(
            r("oss-cn-hangzhou.aliyuncs.com").as_deref(),
            Some("cn-hangzhou")
        );
        assert_eq!(
            r("https://oss-ap-southeast-1-internal.aliyuncs.com").as_deref(),
            Some("ap-southeast-1")
        );
        assert_eq!(
            r("cn-shanghai.oss.aliyuncs.com").as_deref(),
            Some("cn-shanghai")
        );
        assert_eq!(r("oss.aliyuncs.com").as_deref(), Some("cn-hangzhou"));
        assert_eq!(
            r("oss-internal.aliyuncs.com").as_deref(),
            Some("cn-hangzhou")
        );
        assert_eq!(r("oss-accelerate.aliyuncs.com"), None);
        assert_eq!(r("oss-accelerate-overseas.aliyuncs.com"), None);
        assert_eq!(r("files.example.com"), None);
        assert_eq!(r("http://127.0.0.1:9000"), None);
    }

    #[test]
    fn region_resolution() {
        let mut c = ClientConfig::new("https://oss-cn-qingdao.aliyuncs.com", "bkt").unwrap();
        assert_eq!(c.effective_region().unwrap(), "cn-qingdao");
        c.region = Some("us-east-1".into());
        assert_eq!(c.effective_region().unwrap(), "us-east-1");
        c.region = Some("Bad Region".into());
        assert!(matches!(c.effective_region(), Err(ConfigError::Region(_))));

        let c = ClientConfig::new("https://files.example.com", "bkt").unwrap();
        assert!(matches!(
            c.effective_region(),
            Err(ConfigError::RegionRequired { .. })
        ));
        let c = ClientConfig {
            signature: SignatureVersion::V1,
            ..c
        };
        assert!(c.effective_region().is_ok());

        let c = ClientConfig::new("http://127.0.0.1:9000", "bkt").unwrap();
        assert_eq!(c.effective_region().unwrap(), LOCAL_DEFAULT_REGION);
        assert!(matches!(
            ClientConfig::new("http://127.0.0.1:9000", "Bad_Bucket"),
            Err(ConfigError::Bucket(_))
        ));
    }

    #[test]
    fn addressing_styles() {
        let c = ClientConfig::new("https://oss-cn-hangzhou.aliyuncs.com", "logs").unwrap();
        let a = c.addressing().unwrap();
        assert!(!a.path_style);
        assert_eq!(a.authority(), "logs.oss-cn-hangzhou.aliyuncs.com");
        assert_eq!(
            a.url(Some("dir/a b+c.log"), "append=&position=0"),
            "https://logs.oss-cn-hangzhou.aliyuncs.com/dir/a%20b%2Bc.log?append=&position=0"
        );
        assert_eq!(
            a.url(None, "list-type=2"),
            "https://logs.oss-cn-hangzhou.aliyuncs.com/?list-type=2"
        );

        let mut c = c;
        c.path_style = true;
        let a = c.addressing().unwrap();
        assert_eq!(
            a.url(Some("k"), ""),
            "https://oss-cn-hangzhou.aliyuncs.com/logs/k"
        );

        let c = ClientConfig::new("http://127.0.0.1:9000", "logs").unwrap();
        let a = c.addressing().unwrap();
        assert!(a.path_style);
        assert_eq!(
            a.url(Some("日志/ü.log"), ""),
            "http://127.0.0.1:9000/logs/%E6%97%A5%E5%BF%97/%C3%BC.log"
        );
        assert_eq!(a.url(None, ""), "http://127.0.0.1:9000/logs/");
    }

    #[test]
    fn dot_segments_keep_their_meaning() {
        assert_eq!(key_path("a/b c"), "a/b%20c");
        assert_eq!(key_path("a/../b"), "a%2F..%2Fb");
        assert_eq!(key_path("./x"), ".%2Fx");
        assert_eq!(key_path("a.b/.c/..d"), "a.b/.c/..d");
        // What reqwest will send: the URL parser must leave the path alone.
        let c = ClientConfig::new("http://127.0.0.1:9000", "bkt").unwrap();
        let a = c.addressing().unwrap();
        for key in ["a/../b", "./x", "a//b", "%2F", "~*+ &?#"] {
            let url = Url::parse(&a.url(Some(key), "")).unwrap();
            let decoded = crate::oss::encode::decode(url.path()).unwrap();
            assert_eq!(decoded, format!("/bkt/{key}"), "{key}");
        }
    }
}
