//! The client's errors: what OSS said (code, message, request id, status), what the network did
//! (apart from OSS errors, and split by whether the request can have reached the server), and the
//! one mapping from both to an errno for the filesystem.

use std::fmt;

use http::{HeaderMap, StatusCode};

use super::credentials::CredentialsError;
use crate::oss::xml::ErrorBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The OSS operations the client performs; names as the service (and the local server's
/// statistics) spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    HeadObject,
    GetObject,
    AppendObject,
    PutObject,
    DeleteObject,
    CopyObject,
    ListObjectsV2,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::HeadObject,
        Op::GetObject,
        Op::AppendObject,
        Op::PutObject,
        Op::DeleteObject,
        Op::CopyObject,
        Op::ListObjectsV2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::HeadObject => "HeadObject",
            Op::GetObject => "GetObject",
            Op::AppendObject => "AppendObject",
            Op::PutObject => "PutObject",
            Op::DeleteObject => "DeleteObject",
            Op::CopyObject => "CopyObject",
            Op::ListObjectsV2 => "ListObjectsV2",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error response from OSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssError {
    pub op: Op,
    /// The object key, empty for bucket-level calls.
    pub key: String,
    pub status: u16,
    /// `NoSuchKey`, `PositionNotEqualToLength`, ...; empty when the response carried no error
    /// document at all (then only `status` says anything).
    pub code: String,
    pub message: String,
    pub request_id: String,
    /// Detailed error code (`0026-00000001`), newer servers only.
    pub ec: Option<String>,
    /// `x-oss-next-append-position` of a 409 PositionNotEqualToLength: the object's length.
    pub next_append_position: Option<u64>,
}

impl fmt::Display for OssError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        if !self.key.is_empty() {
            write!(f, " {:?}", self.key)?;
        }
        let code = if self.code.is_empty() {
            "(no error code)"
        } else {
            &self.code
        };
        write!(f, ": OSS {code}, HTTP {}", self.status)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(p) = self.next_append_position {
            write!(f, " (object length {p})")?;
        }
        if !self.request_id.is_empty() {
            write!(f, " [request id {}", self.request_id)?;
            if let Some(ec) = &self.ec {
                write!(f, ", EC {ec}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection (refused, DNS, TLS handshake): the request was never sent.
    Connect,
    /// The connection failed before the whole request body was handed to it, so the server
    /// cannot have applied the request (it needs every byte of the announced length).
    NotSent,
    /// No complete answer within the time limit.
    Timeout,
    /// The connection closed or was reset before a complete response.
    Reset,
    /// The response body broke off or came out short.
    Body,
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::NotSent => "connection failed before the request was fully sent",
            TransportKind::Timeout => "timed out",
            TransportKind::Reset => "connection closed without a complete response",
            TransportKind::Body => "response body broken",
            TransportKind::Other => "HTTP failure",
        })
    }
}

/// Why a key cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    Empty,
    /// Longer than 1023 bytes.
    TooLong,
    /// `.` or `..`: URLs cannot carry them as a path.
    DotName,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyProblem::Empty => "empty",
            KeyProblem::TooLong => "longer than 1023 bytes",
            KeyProblem::DotName => "'.' and '..' cannot be object keys",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// OSS answered with an error status. Definite: the request did not take effect (except a
    /// 5xx to a non-idempotent call, which comes wrapped in [`ClientError::Ambiguous`]).
    #[error("{0}")]
    Oss(Box<OssError>),
    /// The exchange failed below HTTP; `kind` says whether the request can have been sent.
    #[error("{op}{}: {kind}: {source}", key_suffix(key))]
    Transport {
        op: Op,
        key: String,
        kind: TransportKind,
        #[source]
        source: BoxError,
    },
    /// A non-idempotent call (AppendObject, forbid-overwrite PutObject/CopyObject) may or may not
    /// have been applied: timeout, reset, lost response, 5xx, or a success response that could
    /// not be read. The caller must look (HEAD) before sending again.
    #[error(
        "{op}{}: outcome unknown, the request may have been applied: {cause}",
        key_suffix(key)
    )]
    Ambiguous {
        op: Op,
        key: String,
        #[source]
        cause: Box<ClientError>,
    },
    /// A success status with something unusable in it (bad header, malformed XML, a range that
    /// does not match the request).
    #[error(
        "{op}{}: invalid response{}: {reason}",
        key_suffix(key),
        request_id_suffix(request_id)
    )]
    InvalidResponse {
        op: Op,
        key: String,
        request_id: String,
        reason: String,
    },
    #[error("credentials: {0}")]
    Credentials(#[from] CredentialsError),
    #[error("invalid object key {key:?}: {problem}")]
    InvalidKey { key: String, problem: KeyProblem },
    /// A request argument that cannot go on the wire (e.g. a header value with a newline).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" {key:?}")
    }
}

fn request_id_suffix(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!(" [request id {id}]")
    }
}

impl ClientError {
    /// The OSS error, also when wrapped as the cause of an ambiguous outcome.
    pub fn oss(&self) -> Option<&OssError> {
        match self {
            ClientError::Oss(e) => Some(e),
            ClientError::Ambiguous { cause, .. } => cause.oss(),
            _ => None,
        }
    }

    /// The OSS error code (`NoSuchKey`, ...), if OSS sent one.
    pub fn code(&self) -> Option<&str> {
        self.oss()
            .map(|e| e.code.as_str())
            .filter(|c| !c.is_empty())
    }

    pub fn status(&self) -> Option<u16> {
        self.oss().map(|e| e.status)
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientError::InvalidResponse { request_id, .. } => Some(request_id.as_str()),
            _ => self.oss().map(|e| e.request_id.as_str()),
        }
        .filter(|s| !s.is_empty())
    }

    /// The object's length reported by a 409 PositionNotEqualToLength.
    pub fn next_append_position(&self) -> Option<u64> {
        self.oss().and_then(|e| e.next_append_position)
    }

    pub fn is_ambiguous(&self) -> bool {
        matches!(self, ClientError::Ambiguous { .. })
    }

    /// A failure that says nothing about the object and may pass: the network, a 5xx or 429,
    /// a throttle, an unusable answer. Definite refusals (403, 404, 409, 400) are not.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::InvalidResponse { .. } => true,
            ClientError::Ambiguous { cause, .. } => cause.is_transient(),
            ClientError::Oss(e) => e.status >= 500 || e.status == 429 || e.code == "RequestTimeout",
            ClientError::Credentials(_) => true,
            _ => false,
        }
    }

    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self {
            ClientError::Transport { kind, .. } => Some(*kind),
            ClientError::Ambiguous { cause, .. } => cause.transport_kind(),
            _ => None,
        }
    }

    /// NoSuchKey (or a bare 404 without an error document, as some HEAD answers are).
    pub fn is_no_such_key(&self) -> bool {
        match self {
            ClientError::Oss(e) => e.code == "NoSuchKey" || (e.code.is_empty() && e.status == 404),
            _ => false,
        }
    }

    /// The errno the filesystem returns for this error. The one place where OSS outcomes become
    /// POSIX ones:
    ///
    /// | error | errno |
    /// |---|---|
    /// | NoSuchKey, NoSuchBucket, SymlinkTargetNotExist, other 404 | `ENOENT` |
    /// | AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId, security-token and clock-skew errors, other 403, credentials unavailable | `EACCES` |
    /// | ObjectNotAppendable, FileImmutable | `EPERM` (writes to non-appendable objects, design.md) |
    /// | FileAlreadyExists | `EEXIST` |
    /// | InvalidRange | `EINVAL`: readers turn a 416 into end-of-file themselves; this only shows if one forgets |
    /// | EntityTooLarge | `EFBIG` |
    /// | key longer than 1023 bytes | `ENAMETOOLONG` |
    /// | InvalidArgument, InvalidObjectName, bad key or argument | `EINVAL` |
    /// | PositionNotEqualToLength | `EIO`: the append stream resolves it; reaching a syscall means the file changed under a positional writer |
    /// | 5xx, transport failures, ambiguous outcomes, invalid responses, anything else | `EIO` |
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Oss(e) => oss_errno(e),
            ClientError::Credentials(_) => libc::EACCES,
            ClientError::InvalidKey {
                problem: KeyProblem::TooLong,
                ..
            } => libc::ENAMETOOLONG,
            ClientError::InvalidKey { .. } | ClientError::InvalidArgument(_) => libc::EINVAL,
            ClientError::Transport { .. }
            | ClientError::Ambiguous { .. }
            | ClientError::InvalidResponse { .. } => libc::EIO,
        }
    }
}

fn oss_errno(e: &OssError) -> i32 {
    match e.code.as_str() {
        "NoSuchKey" | "NoSuchBucket" | "SymlinkTargetNotExist" => libc::ENOENT,
        "AccessDenied"
        | "SignatureDoesNotMatch"
        | "InvalidAccessKeyId"
        | "InvalidSecurityToken"
        | "SecurityTokenExpired"
        | "RequestTimeTooSkewed" => libc::EACCES,
        "ObjectNotAppendable" | "FileImmutable" => libc::EPERM,
        "FileAlreadyExists" => libc::EEXIST,
        "InvalidRange" => libc::EINVAL,
        "EntityTooLarge" => libc::EFBIG,
        "InvalidArgument" | "InvalidObjectName" => libc::EINVAL,
        "PositionNotEqualToLength" => libc::EIO,
        _ => match e.status {
            404 => libc::ENOENT,
            403 => libc::EACCES,
            _ => libc::EIO,
        },
    }
}

/// What an HTML error page in place of an OSS error document means.
pub(crate) const HTML_ANSWER: &str = "server answered with HTML, not OSS XML (a proxy or gateway?)";

/// Whether a body is an HTML page: `<!doctype html`, `<html` or `<body` in its first KiB
/// (OSS error documents are XML and never carry these).
pub(crate) fn looks_like_html(body: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_ascii_lowercase();
    ["<!doctype html", "<html", "<body"]
        .iter()
        .any(|tag| head.contains(tag))
}

/// Builds the error for a non-success response from its status, headers and body. The error
/// document comes from the body, or for bodiless answers (HEAD) from the base64 `x-oss-err`
/// header; request id and EC fall back to their headers.
pub(crate) fn oss_error(
    op: Op,
    key: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ClientError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let doc = std::str::from_utf8(body)
        .ok()
        .and_then(ErrorBody::from_xml)
        .or_else(|| header("x-oss-err").and_then(ErrorBody::from_header));
    let doc = doc.unwrap_or_default();
    let message = if doc.message.is_empty() && doc.code.is_empty() {
        let reason = status.canonical_reason().unwrap_or("");
        // A proxy, captive portal or load balancer answers for OSS with a web page: say so,
        // since the status alone sends the user looking at OSS.
        if looks_like_html(body) {
            let sep = if reason.is_empty() { "" } else { ": " };
            format!("{reason}{sep}{HTML_ANSWER}")
        } else {
            reason.to_string()
        }
    } else {
        doc.message
    };
    let request_id = if doc.request_id.is_empty() {
        header("x-oss-request-id").unwrap_or("").to_string()
    } else {
        doc.request_id
    };
    ClientError::Oss(Box::new(OssError {
        op,
        key: key.to_string(),
        status: status.as_u16(),
        code: doc.code,
        message,
        request_id,
        ec: doc.ec.or_else(|| header("x-oss-ec").map(str::to_string)),
        next_append_position: header("x-oss-next-append-position")
            .and_then(|v| v.trim().parse().ok()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn body(code: &str) -> ErrorBody {
        ErrorBody {
            code: code.into(),
            message: "m".into(),
            request_id: "RID1".into(),
            host_id: "h".into(),
            ec: Some("0026-00000001".into()),
            extras: vec![],
        }
    }

    #[test]
    fn parses_xml_body() {
        let mut h = HeaderMap::new();
        h.insert("x-oss-request-id", HeaderValue::from_static("HDR"));
        h.insert(
            "x-oss-next-append-position",
            HeaderValue::from_static("1717"),
        );
        let e = oss_error(
            Op::AppendObject,
            "a.log",
            StatusCode::CONFLICT,
            &h,
            body("PositionNotEqualToLength").to_xml().as_bytes(),
        );
        assert_eq!(e.code(), Some("PositionNotEqualToLength"));
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.request_id(), Some("RID1"));
        assert_eq!(e.next_append_position(), Some(1717));
        assert_eq!(e.oss().unwrap().ec.as_deref(), Some("0026-00000001"));
        assert_eq!(e.errno(), libc::EIO);
        let shown = e.to_string();
        assert!(shown.contains("AppendObject \"a.log\""), "{shown}");
        assert!(shown.contains("PositionNotEqualToLength"), "{shown}");
        assert!(shown.contains("RID1"), "{shown}");
    }

    #[test]
    fn parses_head_error_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-oss-err",
            HeaderValue::from_str(&body("NoSuchKey").to_header()).unwrap(),
        );
        let e = oss_error(Op::HeadObject, "k", StatusCode::NOT_FOUND, &h, b"");
        assert_eq!(e.code(), Some("NoSuchKey"));
        assert!(e.is_no_such_key());
        assert_eq!(e.errno(), libc::ENOENT);
    }

    #[test]
    fn bare_status_still_maps() {
        let mut h = HeaderMap::new();
        h.insert("x-oss-request-id", HeaderValue::from_static("HDR"));
        h.insert("x-oss-ec", HeaderValue::from_static("0002-00000040"));
        let e = oss_error(Op::HeadObject, "k", StatusCode::NOT_FOUND, &h, b"");
        assert_eq!(e.code(), None);
        assert_eq!(e.request_id(), Some("HDR"));
        assert_eq!(e.oss().unwrap().ec.as_deref(), Some("0002-00000040"));
        assert!(e.is_no_such_key());
        assert_eq!(e.errno(), libc::ENOENT);
        let e = oss_error(
            Op::GetObject,
            "k",
            StatusCode::BAD_GATEWAY,
            &h,
            b"<html>proxy</html>",
        );
        assert_eq!(e.errno(), libc::EIO);
        assert_eq!(
            e.oss().unwrap().message,
            format!("Bad Gateway: {HTML_ANSWER}")
        );
        // Neither XML nor HTML: the status's reason alone.
        let e = oss_error(Op::GetObject, "k", StatusCode::BAD_GATEWAY, &h, b"oops");
        assert_eq!(e.oss().unwrap().message, "Bad Gateway");
    }

    #[test]
    fn an_html_answer_is_named_as_such() {
        let page =
            b"\n<!DOCTYPE html>\n<html><head><title>502</title></head><body>nginx</body></html>";
        let e = oss_error(
            Op::AppendObject,
            "a.log",
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            page,
        );
        let shown = e.to_string();
        assert!(
            shown.contains("server answered with HTML, not OSS XML (a proxy or gateway?)"),
            "{shown}"
        );
        assert!(shown.contains("AppendObject \"a.log\""), "{shown}");
        assert!(looks_like_html(b"<HTML><BODY>x</BODY></HTML>"));
        assert!(!looks_like_html(b"<?xml version=\"1.0\"?><Error></Error>"));
        assert!(!looks_like_html(b""));
        assert!(!looks_like_html(&[0xff, 0xfe, 0x00]));
    }

    #[test]
    fn errno_table() {
        let cases = [
            ("NoSuchKey", 404, libc::ENOENT),
            ("NoSuchBucket", 404, libc::ENOENT),
            ("AccessDenied", 403, libc::EACCES),
            ("SignatureDoesNotMatch", 403, libc::EACCES),
            ("InvalidAccessKeyId", 403, libc::EACCES),
            ("ObjectNotAppendable", 409, libc::EPERM),
            ("PositionNotEqualToLength", 409, libc::EIO),
            ("FileAlreadyExists", 409, libc::EEXIST),
            ("InvalidRange", 416, libc::EINVAL),
            ("InternalError", 500, libc::EIO),
            ("", 503, libc::EIO),
            ("Whatever", 403, libc::EACCES),
        ];
        for (code, status, errno) in cases {
            let e = ClientError::Oss(Box::new(OssError {
                op: Op::GetObject,
                key: String::new(),
                status,
                code: code.into(),
                message: String::new(),
                request_id: String::new(),
                ec: None,
                next_append_position: None,
            }));
            assert_eq!(e.errno(), errno, "{code}");
        }
        let t = ClientError::Transport {
            op: Op::HeadObject,
            key: "k".into(),
            kind: TransportKind::Connect,
            source: "refused".into(),
        };
        assert_eq!(t.errno(), libc::EIO);
        let a = ClientError::Ambiguous {
            op: Op::AppendObject,
            key: "k".into(),
            cause: Box::new(t),
        };
        assert!(a.is_ambiguous());
        assert_eq!(a.transport_kind(), Some(TransportKind::Connect));
        assert_eq!(a.errno(), libc::EIO);
        let k = ClientError::InvalidKey {
            key: "x".repeat(2000),
            problem: KeyProblem::TooLong,
        };
        assert_eq!(k.errno(), libc::ENAMETOOLONG);
    }

    #[test]
    fn result_stays_small() {
        // Results of every call carry this type; keep it a few words wide.
        assert!(
            std::mem::size_of::<ClientError>() <= 96,
            "{}",
            std::mem::size_of::<ClientError>()
        );
    }
}
