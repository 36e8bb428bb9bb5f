//! HTTP Range for GetObject: parsing `bytes=a-b | a- | -n` and resolving it against an object's
//! size under OSS's legacy rules (a bad range means the whole object, 200) or the standard ones
//! selected by `x-oss-range-behavior: standard` (clamp the end, 416 past the end).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=first-last`, both inclusive.
    FromTo(u64, u64),
    /// `bytes=first-`.
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// Parses one range. `None` for anything else (multiple ranges included): servers ignore a
    /// Range header they cannot parse.
    pub fn parse(value: &str) -> Option<RangeSpec> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                None
            } else {
                s.parse().ok()
            }
        };
        match (a.trim().is_empty(), b.trim().is_empty()) {
            (true, true) => None,
            (true, false) => Some(RangeSpec::Suffix(num(b)?)),
            (false, true) => Some(RangeSpec::From(num(a)?)),
            (false, false) => {
                let (a, b) = (num(a)?, num(b)?);
                (a <= b).then_some(RangeSpec::FromTo(a, b))
            }
        }
    }

    pub fn header_value(&self) -> String {
        match self {
            RangeSpec::FromTo(a, b) => format!("bytes={a}-{b}"),
            RangeSpec::From(a) => format!("bytes={a}-"),
            RangeSpec::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// 200 with the whole object.
    Full,
    /// 206 with bytes `first..=last`.
    Partial { first: u64, last: u64 },
    /// 416 InvalidRange.
    Unsatisfiable,
}

/// Applies a parsed range to an object of `size` bytes.
pub fn resolve(spec: Option<RangeSpec>, size: u64, standard: bool) -> Resolved {
    let Some(spec) = spec else {
        return Resolved::Full;
    };
    if standard {
        match spec {
            _ if size == 0 => Resolved::Unsatisfiable,
            RangeSpec::Suffix(0) => Resolved::Unsatisfiable,
            RangeSpec::Suffix(n) => Resolved::Partial {
                first: size.saturating_sub(n),
                last: size - 1,
            },
            RangeSpec::From(a) | RangeSpec::FromTo(a, _) if a >= size => Resolved::Unsatisfiable,
            RangeSpec::From(a) => Resolved::Partial {
                first: a,
                last: size - 1,
            },
            RangeSpec::FromTo(a, b) => Resolved::Partial {
                first: a,
                last: b.min(size - 1),
            },
        }
    } else {
        // Legacy: anything not fully inside the object is ignored.
        match spec {
            RangeSpec::Suffix(n) if n >= 1 && n <= size => Resolved::Partial {
                first: size - n,
                last: size - 1,
            },
            RangeSpec::From(a) if a < size => Resolved::Partial {
                first: a,
                last: size - 1,
            },
            RangeSpec::FromTo(a, b) if b < size => Resolved::Partial { first: a, last: b },
            _ => Resolved::Full,
        }
    }
}

/// `bytes first-last/total`.
pub fn content_range(first: u64, last: u64, total: u64) -> String {
    format!("bytes {first}-{last}/{total}")
}

/// Parses `bytes first-last/total` (total may be `*`).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = if total.trim() == "*" {
        None
    } else {
        Some(total.trim().parse().ok()?)
    };
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeSpec::*;
    use Resolved::*;

    #[test]
    fn parse_forms() {
        assert_eq!(RangeSpec::parse("bytes=0-9"), Some(FromTo(0, 9)));
        assert_eq!(RangeSpec::parse("bytes=5-"), Some(From(5)));
        assert_eq!(RangeSpec::parse("bytes=-5"), Some(Suffix(5)));
        assert_eq!(RangeSpec::parse(" bytes= 1 - 2 "), Some(FromTo(1, 2)));
        for bad in [
            "byte=0-499",
            "bytes=9-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=0-1,3-4",
            "bytes=+1-2",
            "",
            "bytes=1",
        ] {
            assert_eq!(RangeSpec::parse(bad), None, "{bad}");
        }
        assert_eq!(RangeSpec::parse("bytes=18446744073709551616-"), None);
        for s in [FromTo(3, 7), From(2), Suffix(9)] {
            assert_eq!(RangeSpec::parse(&s.header_value()), Some(s));
        }
    }

    #[test]
    fn legacy_ignores_out_of_range() {
        // The documented 1000-byte examples: all whole-object 200s.
        for s in [
            "bytes=0-1000",
            "bytes=1000-2000",
            "bytes=1000-",
            "bytes=-2000",
            "byte=0-499",
        ] {
            assert_eq!(resolve(RangeSpec::parse(s), 1000, false), Full, "{s}");
        }
        assert_eq!(
            resolve(Some(FromTo(0, 499)), 1000, false),
            Partial {
                first: 0,
                last: 499
            }
        );
        assert_eq!(
            resolve(Some(Suffix(10)), 1000, false),
            Partial {
                first: 990,
                last: 999
            }
        );
        assert_eq!(resolve(Some(From(0)), 0, false), Full);
    }

    #[test]
    fn standard_clamps_and_refuses() {
        assert_eq!(
            resolve(Some(FromTo(500, 2000)), 1000, true),
            Partial {
                first: 500,
                last: 999
            }
        );
        assert_eq!(resolve(Some(From(1000)), 1000, true), Unsatisfiable);
        assert_eq!(resolve(Some(FromTo(1000, 2000)), 1000, true), Unsatisfiable);
        assert_eq!(
            resolve(Some(Suffix(2000)), 1000, true),
            Partial {
                first: 0,
                last: 999
            }
        );
        assert_eq!(resolve(Some(Suffix(0)), 1000, true), Unsatisfiable);
        assert_eq!(resolve(Some(From(0)), 0, true), Unsatisfiable);
        assert_eq!(resolve(None, 0, true), Full);
    }

    #[test]
    fn content_range_round_trip() {
        assert_eq!(content_range(100, 900, 344606), "bytes 100-900/344606");
        assert_eq!(
            parse_content_range("bytes 100-900/344606"),
            Some((100, 900, Some(344606)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, 9, None)));
        assert_eq!(parse_content_range("bytes 0~9/44"), None);
    }
}
