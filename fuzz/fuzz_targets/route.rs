//! The server's request parsing and routing, without a socket: what `answer` does before
//! dispatch (request-target, Host, bucket and key addressing, query decoding, the operation's
//! name, the claim and its verification, list continuation tokens). Lines: method,
//! request-target, then headers.
#![no_main]

mod common;

use appendfs::oss::encode::parse_query;
use appendfs::oss::sign::{self, RequestParts};
use appendfs::oss::Credentials;
use appendfs::server::http::{address, OssRequest};
use appendfs::server::list::decode_token;
use appendfs::server::ops::operation_name;
use chrono::Utc;
use http::{Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(lines) = common::lines(data) else {
        return;
    };
    let Ok(method) = Method::from_bytes(lines[0].as_bytes()) else {
        return;
    };
    let Ok(uri) = lines.get(1).copied().unwrap_or("/").parse::<Uri>() else {
        return;
    };
    let headers = common::headers(lines.iter().skip(2).copied());
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let Ok((bucket, key)) = address(&host, uri.path(), |b| b == "bkt") else {
        return;
    };
    if let Some(k) = &key {
        assert!(
            !k.is_empty() && k.len() <= appendfs::oss::MAX_KEY_LEN,
            "{k:?}"
        );
    }
    let Some(query) = parse_query(uri.query().unwrap_or("")) else {
        return;
    };
    let req = OssRequest {
        id: "FUZZ".into(),
        method,
        host,
        bucket,
        key,
        query,
        headers,
        body: None,
        body_read: 0,
    };
    let _ = operation_name(&req);
    if let Some(t) = req.q("continuation-token") {
        let _ = decode_token(t);
    }
    if let Ok(claim) = sign::parse_claim(&req.headers, &req.query) {
        let parts = RequestParts {
            method: req.method.as_str(),
            bucket: req.bucket.as_deref(),
            key: req.key.as_deref(),
            query: &req.query,
            headers: &req.headers,
        };
        let _ = sign::verify(
            &Credentials::new("FUZZKEYID", "s"),
            &claim,
            &parts,
            Utc::now(),
        );
    }
});
