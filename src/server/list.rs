//! The listing engine behind ListObjectsV2 and ListObjects: walks the ordered index from a cursor,
//! rolls keys up into common prefixes at the delimiter (seeking past each rolled-up group instead
//! of reading it), and reports exactly whether more remains.

use std::ops::Bound;

use base64::Engine;

use super::store::{ObjectRecord, Store, StoreError};

/// How many index entries to read per scan call.
const BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct ListParams<'a> {
    pub prefix: &'a str,
    pub delimiter: &'a str,
    /// The first key that may be listed (inclusive), already clamped to the prefix.
    pub from: Vec<u8>,
    pub max_keys: usize,
}

#[derive(Debug, Default)]
pub struct ListOutcome {
    pub contents: Vec<(String, ObjectRecord)>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Where the next page starts (inclusive), when truncated.
    pub next_from: Option<Vec<u8>>,
    /// The last key or common prefix returned (ListObjects' NextMarker).
    pub last: Option<String>,
}

/// The smallest byte string greater than every string that starts with `s`.
pub fn successor(s: &[u8]) -> Option<Vec<u8>> {
    let mut v = s.to_vec();
    while let Some(&last) = v.last() {
        if last == 0xFF {
            v.pop();
        } else {
            let n = v.len();
            v[n - 1] += 1;
            return Some(v);
        }
    }
    None
}

/// The smallest byte string greater than `s` itself.
pub fn after(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

/// Continuation tokens are the next page's start, opaque to clients.
pub fn encode_token(from: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(from)
}

pub fn decode_token(token: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
}

pub fn list(
    store: &dyn Store,
    bucket: &str,
    p: &ListParams<'_>,
) -> Result<ListOutcome, StoreError> {
    let prefix = p.prefix.as_bytes();
    let mut out = ListOutcome::default();
    let mut from = p.from.clone();
    'scan: loop {
        let batch = store.scan(bucket, Bound::Included(&from), BATCH)?;
        let exhausted = batch.len() < BATCH;
        if batch.is_empty() {
            break;
        }
        for (key, rec) in batch {
            if !key.as_bytes().starts_with(prefix) {
                break 'scan; // sorted: past the prefix range
            }
            if out.contents.len() + out.common_prefixes.len() >= p.max_keys {
                out.truncated = true;
                break 'scan;
            }
            let rest = &key[p.prefix.len()..];
            let group = (!p.delimiter.is_empty())
                .then(|| rest.find(p.delimiter))
                .flatten();
            if let Some(i) = group {
                let cp = key[..p.prefix.len() + i + p.delimiter.len()].to_string();
                match successor(cp.as_bytes()) {
                    Some(next) => {
                        out.next_from = Some(next.clone());
                        from = next;
                    }
                    None => {
                        out.next_from = None;
                        out.last = Some(cp.clone());
                        out.common_prefixes.push(cp);
                        break 'scan;
                    }
                }
                out.last = Some(cp.clone());
                out.common_prefixes.push(cp);
                continue 'scan; // seek past the whole group
            }
            from = after(key.as_bytes());
            out.next_from = Some(from.clone());
            out.last = Some(key.clone());
            out.contents.push((key, rec));
        }
        if exhausted {
            break;
        }
    }
    if !out.truncated {
        out.next_from = None;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::{CreateAttrs, MemStore};
    use bytes::Bytes;

    fn store(keys: &[&str]) -> MemStore {
        let s = MemStore::new();
        s.create_bucket("b").unwrap();
        for k in keys {
            s.put(
                "b",
                k,
                Bytes::from_static(b"x"),
                &CreateAttrs::default(),
                false,
            )
            .unwrap();
        }
        s
    }

    fn page(s: &MemStore, prefix: &str, delim: &str, from: Vec<u8>, max: usize) -> ListOutcome {
        let from = from.max(prefix.as_bytes().to_vec());
        list(
            s,
            "b",
            &ListParams {
                prefix,
                delimiter: delim,
                from,
                max_keys: max,
            },
        )
        .unwrap()
    }

    fn names(o: &ListOutcome) -> Vec<String> {
        let mut v: Vec<String> = o.contents.iter().map(|(k, _)| k.clone()).collect();
        v.extend(o.common_prefixes.iter().cloned());
        v.sort();
        v
    }

    #[test]
    fn delimiter_groups_and_pages() {
        let s = store(&["a", "a/b", "a/c/d", "b/1", "b/2", "c", "日志/ü.log"]);
        let o = page(&s, "", "/", vec![], 1000);
        assert_eq!(names(&o), ["a", "a/", "b/", "c", "日志/"]);
        assert!(!o.truncated);
        // Page through one item at a time: same set, no repeats.
        let mut seen = vec![];
        let mut from = vec![];
        loop {
            let o = page(&s, "", "/", from.clone(), 1);
            seen.extend(names(&o));
            match o.next_from {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!(seen, ["a", "a/", "b/", "c", "日志/"]);
        let o = page(&s, "a/", "/", vec![], 10);
        assert_eq!(names(&o), ["a/b", "a/c/"]);
        let o = page(&s, "", "", vec![], 3);
        assert_eq!(names(&o), ["a", "a/b", "a/c/d"]);
        assert!(o.truncated);
    }

    #[test]
    fn exact_truncation_flag() {
        let s = store(&["k1", "k2"]);
        let o = page(&s, "", "", vec![], 2);
        assert!(!o.truncated && o.next_from.is_none());
        let o = page(&s, "k", "", after(b"k1"), 5);
        assert_eq!(names(&o), ["k2"]);
    }

    #[test]
    fn many_keys_across_batches() {
        let keys: Vec<String> = (0..700).map(|i| format!("p/{i:04}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let s = store(&refs);
        let mut from = vec![];
        let mut total = 0;
        let mut pages = 0;
        loop {
            let o = page(&s, "p/", "/", from.clone(), 100);
            total += o.contents.len();
            pages += 1;
            match o.next_from {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!((total, pages), (700, 7));
    }

    #[test]
    fn successor_edges() {
        assert_eq!(successor(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(successor(&[b'a', 0xFF]), Some(b"b".to_vec()));
        assert_eq!(successor(&[0xFF]), None);
        assert_eq!(decode_token(&encode_token(b"x\0")), Some(b"x\0".to_vec()));
    }
}
