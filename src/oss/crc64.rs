//! CRC-64/XZ as OSS reports it in `x-oss-hash-crc64ecma`: one-shot, resumable across appends, and
//! combinable without the bytes (the append stream checks each response against
//! `combine(previous, crc(chunk), len)`).

use crc::{Crc, Table, CRC_64_XZ};

/// Slice-by-16 tables: several times faster than bytewise, and every appended byte passes here
/// on both client and server.
const ALGO: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_XZ);
/// Reflected ECMA-182 polynomial, as the bit-serial register sees it.
const POLY_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

/// CRC of `data` alone.
pub fn checksum(data: &[u8]) -> u64 {
    ALGO.checksum(data)
}

/// Running CRC that can start from the CRC of bytes already stored (an appendable object's current
/// CRC), so the client and server never re-read the object to extend it.
#[derive(Clone)]
pub struct Crc64 {
    digest: crc::Digest<'static, u64, Table<16>>,
}

impl Crc64 {
    pub fn new() -> Self {
        Self::resume(0)
    }

    /// Continue from `prev`, the CRC of everything before: XZ's init equals its xorout, so the
    /// register is simply `!prev` (bit-reversed because the crate keeps reflected registers unreflected).
    pub fn resume(prev: u64) -> Self {
        Crc64 {
            digest: ALGO.digest_with_initial((prev ^ u64::MAX).reverse_bits()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
    }

    pub fn finish(&self) -> u64 {
        self.digest.clone().finalize()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc64({})", self.finish())
    }
}

/// CRC of `A ++ B` given `crc(A)`, `crc(B)` and `len(B)`: zlib's crc32_combine widened to 64 bits.
/// `B`'s CRC is shifted through `len_b` zero bytes by squaring a GF(2) operator matrix.
pub fn combine(crc_a: u64, crc_b: u64, len_b: u64) -> u64 {
    if len_b == 0 {
        return crc_a;
    }
    // Operator for one zero bit.
    let mut odd = [0u64; 64];
    odd[0] = POLY_REFLECTED;
    let mut row = 1u64;
    for slot in odd.iter_mut().skip(1) {
        *slot = row;
        row <<= 1;
    }
    let mut even = [0u64; 64];
    gf2_square(&mut even, &odd); // two zero bits
    gf2_square(&mut odd, &even); // four zero bits

    let mut crc = crc_a;
    let mut len = len_b;
    loop {
        // First pass turns the 4-bit operator into the 1-byte operator.
        gf2_square(&mut even, &odd);
        if len & 1 != 0 {
            crc = gf2_times(&even, crc);
        }
        len >>= 1;
        if len == 0 {
            break;
        }
        gf2_square(&mut odd, &even);
        if len & 1 != 0 {
            crc = gf2_times(&odd, crc);
        }
        len >>= 1;
        if len == 0 {
            break;
        }
    }
    crc ^ crc_b
}

fn gf2_times(mat: &[u64; 64], mut vec: u64) -> u64 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn gf2_square(square: &mut [u64; 64], mat: &[u64; 64]) {
    for n in 0..64 {
        square[n] = gf2_times(mat, mat[n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn check_values() {
        assert_eq!(checksum(b"123456789"), 0x995D_C9BB_DF19_39FA);
        assert_eq!(checksum(b"123456789"), 11051210869376104954);
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(b"hello world"), 5981764153023615706);
        assert_eq!(checksum(b"hello world!"), 0x8483_C0FA_3260_7D61);
    }

    #[test]
    fn combine_vector() {
        assert_eq!(checksum(b"hello "), 1796661072844795914);
        assert_eq!(checksum(b"world"), 4472352582074980600);
        assert_eq!(
            combine(1796661072844795914, 4472352582074980600, 5),
            5981764153023615706
        );
        assert_eq!(combine(42, 0, 0), 42);
    }

    #[test]
    fn resume_vector() {
        let mut c = Crc64::resume(checksum(b"hello "));
        c.update(b"world");
        assert_eq!(c.finish(), 5981764153023615706);
        assert_eq!(Crc64::resume(0).finish(), 0);
    }

    proptest! {
        #[test]
        fn split_anywhere(data in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..2048) {
            let cut = cut.min(data.len());
            let (a, b) = data.split_at(cut);
            let whole = checksum(&data);
            prop_assert_eq!(combine(checksum(a), checksum(b), b.len() as u64), whole);
            let mut r = Crc64::resume(checksum(a));
            r.update(b);
            prop_assert_eq!(r.finish(), whole);
        }
    }
}
