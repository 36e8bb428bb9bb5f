//! Percent-encoding rules of OSS: signing canonicalisation, request URLs and `encoding-type=url`
//! listings all encode every byte except `A-Z a-z 0-9 - _ . ~` (paths also keep `/`).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters.
pub const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// As [`UNRESERVED`], keeping `/` so a key stays a readable path.
pub const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

pub fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// Decodes `%XX` escapes (`+` stays `+`: OSS clients encode a space as `%20`). `None` when the
/// result is not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Splits a raw query string into decoded `(name, value)` pairs; `k` and `k=` both give `("k", "")`.
/// A `+` is a space here, as form encoding has it: oss2 (through `requests`) sends spaces in
/// `prefix=` that way and a literal plus as `%2B`.
pub fn parse_query(raw: &str) -> Option<Vec<(String, String)>> {
    let part = |s: &str| decode(&s.replace('+', " "));
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((part(k)?, part(v)?))
        })
        .collect()
}

/// Builds a query string from decoded pairs; empty values are sent as `k=` like the Python SDKs.
pub fn build_query(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_sdks() {
        assert_eq!(encode("a b+c/~*ü"), "a%20b%2Bc%2F~%2A%C3%BC");
        assert_eq!(encode_path("dir/a b%.log"), "dir/a%20b%25.log");
        assert_eq!(decode("dir%2Fa%20b+").as_deref(), Some("dir/a b+"));
        assert_eq!(decode("%FF"), None);
    }

    #[test]
    fn query_round_trip() {
        let q = parse_query("append&position=0&prefix=&x=a%2Fb").unwrap();
        assert_eq!(
            q,
            vec![
                ("append".into(), "".into()),
                ("position".into(), "0".into()),
                ("prefix".into(), "".into()),
                ("x".into(), "a/b".into())
            ]
        );
        assert_eq!(parse_query(&build_query(&q)).unwrap(), q);
        assert_eq!(
            parse_query("prefix=a+b%2Bc").unwrap(),
            vec![("prefix".into(), "a b+c".into())]
        );
    }
}
