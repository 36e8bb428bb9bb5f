//! Input shape shared by the targets: the fuzzer's bytes as UTF-8 text, one field per line,
//! so that mutations stay within one field and the fields can be read in a crash file.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The input's lines, or `None` when it is not UTF-8 (every parser under test takes `&str`).
pub fn lines(data: &[u8]) -> Option<Vec<&str>> {
    Some(std::str::from_utf8(data).ok()?.split('\n').collect())
}

/// `name: value` lines as headers; lines that are no valid header are skipped, as hyper would
/// have refused them before any of our code ran.
pub fn headers<'a>(lines: impl Iterator<Item = &'a str>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}
