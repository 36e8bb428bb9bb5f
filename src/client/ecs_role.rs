//! Keys of an ECS RAM role from the instance metadata service (`http://100.100.100.200`), in
//! its hardened form: `PUT /latest/api/token` for a session token, then every GET carries it.
//! The role is `--ram-role NAME` or the one the service lists. Role keys expire (hours); the
//! [`CachingProvider`](super::CachingProvider) in front fetches new ones before they do.
//!
//! Reached only when asked for (`--ram-role[=NAME]`), so any failure, including "no role
//! attached", is an error rather than a reason to try another source.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;

use super::credentials::{CredentialsError, CredentialsProvider, ProvidedCredentials};
use crate::oss::Credentials;

const NAME: &str = "ECS RAM role";

/// The real service's address.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// Environment variable that points the provider elsewhere (tests use a loopback stand-in).
pub const METADATA_ENDPOINT_ENV: &str = "APPENDFS_ECS_METADATA_ENDPOINT";

const TOKEN_PATH: &str = "/latest/api/token";
const ROLE_PATH: &str = "/latest/meta-data/ram/security-credentials/";
const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";
/// The token is used right away for two GETs; a short life limits what a leak could do.
const TOKEN_TTL_SECONDS: u32 = 300;

#[derive(Debug, Clone)]
pub struct EcsRoleProvider {
    endpoint: String,
    role: Option<String>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    code: Option<String>,
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
    security_token: Option<String>,
    expiration: Option<String>,
}

impl EcsRoleProvider {
    /// `endpoint` `None`: [`METADATA_ENDPOINT_ENV`], else the real address. `role` `None`:
    /// the one the service lists.
    pub fn new(endpoint: Option<String>, role: Option<String>) -> Self {
        let endpoint = endpoint
            .or_else(|| std::env::var(METADATA_ENDPOINT_ENV).ok())
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_METADATA_ENDPOINT.to_string());
        let http = reqwest::Client::builder()
            // The service is on the instance's own link: it answers at once or not at all.
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            // The metadata service is link-local to the instance: never through a proxy.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        EcsRoleProvider {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            role: role.filter(|r| !r.is_empty()),
            http,
        }
    }

    fn failed(&self, reason: String) -> CredentialsError {
        CredentialsError::Failed {
            source_name: NAME,
            reason,
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> CredentialsError {
        self.failed(format!(
            "no instance metadata service at {} ({}): --ram-role works only on an ECS instance",
            self.endpoint,
            transport_words(&e)
        ))
    }

    /// The hardened-mode token, or `None` when the service does not offer one (older
    /// services answer the PUT with an error status; plain GETs then still work).
    async fn token(&self) -> Result<Option<String>, CredentialsError> {
        let resp = self
            .http
            .put(format!("{}{TOKEN_PATH}", self.endpoint))
            .header(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS.to_string())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            tracing::debug!(status = %resp.status(), "metadata service gave no token; using plain requests");
            return Ok(None);
        }
        let token = resp.text().await.map_err(|e| {
            self.failed(format!(
                "reading the metadata token: {}",
                transport_words(&e)
            ))
        })?;
        Ok(Some(token.trim().to_string()).filter(|t| !t.is_empty()))
    }

    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<(u16, String), CredentialsError> {
        let mut req = self.http.get(format!("{}{path}", self.endpoint));
        if let Some(t) = token {
            req = req.header(TOKEN_HEADER, t);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| {
            self.failed(format!(
                "reading {path} from the metadata service: {}",
                transport_words(&e)
            ))
        })?;
        Ok((status, body))
    }

    async fn fetch(&self) -> Result<ProvidedCredentials, CredentialsError> {
        let token = self.token().await?;
        let token = token.as_deref();
        let role = match &self.role {
            Some(r) => r.clone(),
            None => {
                let (status, body) = self.get(ROLE_PATH, token).await?;
                let role = body.lines().map(str::trim).find(|l| !l.is_empty());
                match (status, role) {
                    (200, Some(r)) => r.to_string(),
                    (200 | 404, _) => {
                        return Err(self.failed("this instance has no RAM role attached".into()))
                    }
                    (s, _) => {
                        return Err(self
                            .failed(format!("listing the instance's RAM role answered HTTP {s}")))
                    }
                }
            }
        };
        if role.contains('/') || role.contains("..") {
            return Err(self.failed(format!("{role:?} is not a RAM role name")));
        }
        let (status, body) = self.get(&format!("{ROLE_PATH}{role}"), token).await?;
        match status {
            200 => {}
            404 => {
                return Err(self.failed(format!(
                    "RAM role {role:?} is not attached to this instance"
                )))
            }
            s => {
                return Err(self.failed(format!(
                    "fetching the keys of RAM role {role:?} answered HTTP {s}"
                )))
            }
        }
        parse_role_credentials(&body).map_err(|e| self.failed(format!("RAM role {role:?}: {e}")))
    }
}

/// The role document; errors never quote it (it holds the secret).
pub fn parse_role_credentials(body: &str) -> Result<ProvidedCredentials, String> {
    let doc: RoleCredentials = serde_json::from_str(body).map_err(|e| {
        format!(
            "the metadata service answered no JSON ({:?} error)",
            e.classify()
        )
    })?;
    if let Some(code) = doc.code.as_deref().filter(|c| *c != "Success") {
        return Err(format!("the metadata service answered Code {code:?}"));
    }
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (Some(id), Some(secret)) = (
        non_empty(doc.access_key_id),
        non_empty(doc.access_key_secret),
    ) else {
        return Err("the answer lacks AccessKeyId or AccessKeySecret".into());
    };
    let expires_at = match non_empty(doc.expiration) {
        Some(t) => Some(
            DateTime::parse_from_rfc3339(&t)
                .map_err(|_| format!("Expiration {t:?} is not an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    Ok(ProvidedCredentials {
        credentials: Credentials::new(id, secret).with_token(doc.security_token),
        expires_at,
    })
}

/// What kind of transport failure, without reqwest's URL-bearing chain.
fn transport_words(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}

impl CredentialsProvider for EcsRoleProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn provide(&self) -> BoxFuture<'_, Result<ProvidedCredentials, CredentialsError>> {
        Box::pin(self.fetch())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::CachingProvider;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, Response};

    /// What the stand-in has seen and how it answers.
    #[derive(Default)]
    pub(crate) struct Standin {
        pub tokens_issued: AtomicU32,
        pub credential_fetches: AtomicU32,
        pub rejected_without_token: AtomicU32,
        /// Lifetime of handed-out keys, seconds.
        pub lifetime: Mutex<i64>,
        /// `None`: no role attached.
        pub role: Mutex<Option<String>>,
    }

    fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r
    }

    fn answer(s: &Standin, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        if path == TOKEN_PATH {
            if req.method() != hyper::Method::PUT || !req.headers().contains_key(TOKEN_TTL_HEADER) {
                return reply(400, "token needs PUT and a ttl".into());
            }
            let n = s.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
            return reply(200, format!("token-{n}"));
        }
        // Hardened mode: every GET needs a token this stand-in issued.
        let ok = req
            .headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("token-"));
        if !ok {
            s.rejected_without_token.fetch_add(1, Ordering::SeqCst);
            return reply(401, "token required".into());
        }
        let role = s.role.lock().unwrap().clone();
        if path == ROLE_PATH {
            return match role {
                Some(r) => reply(200, r),
                None => reply(404, String::new()),
            };
        }
        match path.strip_prefix(ROLE_PATH) {
            Some(asked) if Some(asked) == role.as_deref() => {
                let n = s.credential_fetches.fetch_add(1, Ordering::SeqCst) + 1;
                let exp = Utc::now() + chrono::Duration::seconds(*s.lifetime.lock().unwrap());
                reply(
                    200,
                    format!(
                        r#"{{"Code":"Success","AccessKeyId":"STS.K{n}","AccessKeySecret":"role-sekrit-{n}","SecurityToken":"role-token-{n}","Expiration":"{}","LastUpdated":"{}"}}"#,
                        exp.format("%Y-%m-%dT%H:%M:%SZ"),
                        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
                    ),
                )
            }
            _ => reply(404, String::new()),
        }
    }

    /// A metadata service on 127.0.0.1:0; returns its endpoint. Runs until the test's runtime ends.
    pub(crate) async fn start_standin(state: Arc<Standin>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let r = answer(&state, &req);
                        async move { Ok::<_, std::convert::Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn standin(role: Option<&str>, lifetime: i64) -> Arc<Standin> {
        let s = Standin::default();
        *s.role.lock().unwrap() = role.map(String::from);
        *s.lifetime.lock().unwrap() = lifetime;
        Arc::new(s)
    }

    #[tokio::test]
    async fn discovers_role_with_token_step() {
        let s = standin(Some("log-writer"), 3600);
        let ep = start_standin(s.clone()).await;
        let p = EcsRoleProvider::new(Some(ep), None);
        let got = p.provide().await.unwrap();
        assert_eq!(got.credentials.access_key_id, "STS.K1");
        assert_eq!(
            got.credentials.security_token.as_ref().unwrap().expose(),
            "role-token-1"
        );
        assert!(got.expires_at.unwrap() > Utc::now() + chrono::Duration::minutes(59));
        assert_eq!(s.tokens_issued.load(Ordering::SeqCst), 1);
        assert_eq!(s.rejected_without_token.load(Ordering::SeqCst), 0);
        let shown = format!("{p:?} {got:?}");
        assert!(
            !shown.contains("role-sekrit") && !shown.contains("role-token"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn named_role_and_refresh_before_expiry() {
        // Keys valid two minutes: inside the cache's five-minute margin, so each use refreshes.
        let s = standin(Some("log-writer"), 120);
        let ep = start_standin(s.clone()).await;
        let cache = CachingProvider::new(Arc::new(EcsRoleProvider::new(
            Some(ep.clone()),
            Some("log-writer".into()),
        )));
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "STS.K1");
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "STS.K2");
        assert_eq!(s.tokens_issued.load(Ordering::SeqCst), 2);

        // Valid for an hour: fetched once.
        *s.lifetime.lock().unwrap() = 3600;
        let cache = CachingProvider::new(Arc::new(EcsRoleProvider::new(
            Some(ep.clone()),
            Some("log-writer".into()),
        )));
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "STS.K3");
        assert_eq!(cache.credentials().await.unwrap().access_key_id, "STS.K3");
        assert_eq!(s.credential_fetches.load(Ordering::SeqCst), 3);

        // A role this instance does not have is named.
        let err = EcsRoleProvider::new(Some(ep), Some("other".into()))
            .provide()
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialsError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("\"other\""), "{err}");
    }

    #[tokio::test]
    async fn no_role_or_no_service() {
        let s = standin(None, 3600);
        let ep = start_standin(s).await;
        let err = EcsRoleProvider::new(Some(ep), None)
            .provide()
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialsError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("no RAM role attached"), "{err}");

        // Nothing listening: named, quickly.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let started = std::time::Instant::now();
        let err = EcsRoleProvider::new(Some(closed), Some("r".into()))
            .provide()
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, CredentialsError::Failed { .. }), "{err}");
        assert!(
            err.to_string().contains("no instance metadata service"),
            "{err}"
        );
    }

    #[test]
    fn role_document_errors_never_quote_it() {
        for body in [
            r#"{"Code":"Success","AccessKeySecret":"sekrit"}"#,
            r#"{"Code":"Failed","AccessKeyId":"A","AccessKeySecret":"sekrit"}"#,
            r#"<html>sekrit</html>"#,
            r#"{"AccessKeyId":"A","AccessKeySecret":"sekrit","Expiration":"soon"}"#,
        ] {
            let e = parse_role_credentials(body).unwrap_err();
            assert!(!e.contains("sekrit"), "{e}");
        }
    }
}
