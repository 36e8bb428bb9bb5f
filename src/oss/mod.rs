//! Protocol pieces the client and the server share, so that there is one definition of each:
//! credentials, percent-encoding, V4/V1 signing and verification, CRC-64/XZ (one-shot, resume,
//! combine), the error and listing XML, object metadata headers and HTTP ranges. Nothing here does
//! I/O; both sides are held to outside references (SDK test vectors, the SDKs themselves).

pub mod crc64;
pub mod credentials;
pub mod encode;
pub mod meta;
pub mod range;
pub mod sign;
pub mod xml;

pub use credentials::{Credentials, Secret};
pub use meta::{ObjectMeta, ObjectType};

/// Largest object OSS accepts (also the appendable limit): 5 GiB.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Longest object key in bytes.
pub const MAX_KEY_LEN: usize = 1023;

/// A bucket name OSS would accept: 3–63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_names() {
        assert!(super::valid_bucket_name("my-logs-1"));
        for bad in ["ab", "-ab", "ab-", "Abc", "a_b", &"a".repeat(64)] {
            assert!(!super::valid_bucket_name(bad), "{bad}");
        }
    }
}
