//! `Range` and `Content-Range` parsing and range resolution: no panic (no overflow), every
//! partial answer inside the object, and a parsed range written back parses to itself.
#![no_main]

use appendfs::oss::range::{content_range, parse_content_range, resolve, RangeSpec, Resolved};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (size, text) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().expect("8 bytes"));
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let spec = RangeSpec::parse(text);
    if let Some(spec) = spec {
        assert_eq!(RangeSpec::parse(&spec.header_value()), Some(spec));
    }
    for standard in [false, true] {
        if let Resolved::Partial { first, last } = resolve(spec, size, standard) {
            assert!(
                first <= last && last < size,
                "{spec:?} on {size}: {first}-{last}"
            );
            let shown = content_range(first, last, size);
            assert_eq!(parse_content_range(&shown), Some((first, last, Some(size))));
        }
    }
    let _ = parse_content_range(text);
});
