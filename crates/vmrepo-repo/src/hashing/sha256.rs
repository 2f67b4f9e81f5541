//! SHA-256 (FIPS 180-4) of two files at once on one core.
//!
//! On the CPU's SHA extensions, each of a block's 32 `sha256rnds2` waits for
//! the one before: one file keeps the unit a fraction of the time busy. Two
//! independent files, their instructions interleaved, fill those waits:
//! 1.85 GB/s a core for the pair against 1.52 GB/s for one file (AMD EPYC,
//! see docs/benchmarks.md). `verify` hashes two images at once on each core
//! this way ([`super::Hasher`]). Without the extensions (or off x86) the
//! blocks go one file after the other to the sha2 crate's `compress256`.

use sha2::digest::generic_array::GenericArray;

/// Bytes in a block.
const BLOCK: usize = 64;

/// The initial hash value (FIPS 180-4, 5.3.3).
const INIT: [u32; 8] =
    [0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19];

/// One file's SHA-256 in progress.
pub(crate) struct Sha256Lane {
    state: [u32; 8],
    /// Bytes of an incomplete block, waiting for more.
    pending: [u8; BLOCK],
    pending_len: usize,
    /// Bytes hashed so far.
    len: u64,
}

impl Sha256Lane {
    pub(crate) fn new() -> Sha256Lane {
        Sha256Lane { state: INIT, pending: [0; BLOCK], pending_len: 0, len: 0 }
    }

    /// Whether [`update_pair`] can take this lane's next bytes: no partial
    /// block is waiting.
    pub(crate) fn aligned(&self) -> bool {
        self.pending_len == 0
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BLOCK {
                return;
            }
            let block = self.pending;
            compress(&mut self.state, &block);
            self.pending_len = 0;
        }
        let whole = data.len() - data.len() % BLOCK;
        compress(&mut self.state, &data[..whole]);
        let rest = &data[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    pub(crate) fn finalize(mut self) -> [u8; 32] {
        // FIPS 180-4, 5.1.1: a 1 bit, zeros to 56 bytes modulo 64, the length
        // in bits, big-endian.
        let bits = self.len.wrapping_mul(8);
        let zeros = (BLOCK + 56 - (self.pending_len + 1) % BLOCK) % BLOCK;
        let mut tail = [0u8; 2 * BLOCK];
        tail[0] = 0x80;
        let n = 1 + zeros;
        tail[n..n + 8].copy_from_slice(&bits.to_be_bytes());
        self.update(&tail[..n + 8]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// Hashes `a_data` into `a` and `b_data` into `b`, interleaved: both lanes
/// [`Sha256Lane::aligned`], both slices of the same length, a whole number
/// of blocks (else each goes on its own).
pub(crate) fn update_pair(a: &mut Sha256Lane, a_data: &[u8], b: &mut Sha256Lane, b_data: &[u8]) {
    if !(a.aligned() && b.aligned() && a_data.len() == b_data.len() && a_data.len().is_multiple_of(BLOCK)) {
        a.update(a_data);
        b.update(b_data);
        return;
    }
    a.len = a.len.wrapping_add(a_data.len() as u64);
    b.len = b.len.wrapping_add(b_data.len() as u64);
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { x86::compress2(&mut a.state, a_data, &mut b.state, b_data) };
        return;
    }
    compress(&mut a.state, a_data);
    compress(&mut b.state, b_data);
}

/// Hashes whole blocks (a multiple of [`BLOCK`] bytes) into `state`.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    for block in blocks.chunks_exact(BLOCK) {
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
        _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi8,
        _mm_shuffle_epi32, _mm_storeu_si128,
    };

    /// The round constants (FIPS 180-4, 4.2.2), four to a vector.
    static K: [u32; 64] = [
        0x428a_2f98,
        0x7137_4491,
        0xb5c0_fbcf,
        0xe9b5_dba5,
        0x3956_c25b,
        0x59f1_11f1,
        0x923f_82a4,
        0xab1c_5ed5,
        0xd807_aa98,
        0x1283_5b01,
        0x2431_85be,
        0x550c_7dc3,
        0x72be_5d74,
        0x80de_b1fe,
        0x9bdc_06a7,
        0xc19b_f174,
        0xe49b_69c1,
        0xefbe_4786,
        0x0fc1_9dc6,
        0x240c_a1cc,
        0x2de9_2c6f,
        0x4a74_84aa,
        0x5cb0_a9dc,
        0x76f9_88da,
        0x983e_5152,
        0xa831_c66d,
        0xb003_27c8,
        0xbf59_7fc7,
        0xc6e0_0bf3,
        0xd5a7_9147,
        0x06ca_6351,
        0x1429_2967,
        0x27b7_0a85,
        0x2e1b_2138,
        0x4d2c_6dfc,
        0x5338_0d13,
        0x650a_7354,
        0x766a_0abb,
        0x81c2_c92e,
        0x9272_2c85,
        0xa2bf_e8a1,
        0xa81a_664b,
        0xc24b_8b70,
        0xc76c_51a3,
        0xd192_e819,
        0xd699_0624,
        0xf40e_3585,
        0x106a_a070,
        0x19a4_c116,
        0x1e37_6c08,
        0x2748_774c,
        0x34b0_bcb5,
        0x391c_0cb3,
        0x4ed8_aa4a,
        0x5b9c_ca4f,
        0x682e_6ff3,
        0x748f_82ee,
        0x78a5_636f,
        0x84c8_7814,
        0x8cc7_0208,
        0x90be_fffa,
        0xa450_6ceb,
        0xbef9_a3f7,
        0xc671_78f2,
    ];

    /// Whether the CPU has what [`compress2`] is compiled for.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }

    /// The state as the SHA instructions want it: (ABEF, CDGH).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load_state(state: &[u32; 8]) -> (__m128i, __m128i) {
        // SAFETY: 32 bytes are read from a [u32; 8], unaligned loads.
        let (dcba, efgh) = unsafe {
            let p = state.as_ptr().cast::<__m128i>();
            (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)))
        };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let hgfe = _mm_shuffle_epi32(efgh, 0x1B);
        (_mm_alignr_epi8(cdab, hgfe, 8), _mm_blend_epi16(hgfe, cdab, 0xF0))
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store_state(state: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        // SAFETY: 32 bytes are written to a [u32; 8], unaligned stores.
        unsafe {
            let p = state.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xF0));
            _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
        }
    }

    /// The next four message words from the sixteen before them (FIPS 180-4, 6.2.2 step 1).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn schedule(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
        _mm_sha256msg2_epu32(t, w3)
    }

    /// Hashes the blocks of `a` into `sa` and those of `b` into `sb`, one
    /// block of each at a time, their rounds interleaved. `a` and `b` have
    /// the same length, a multiple of 64.
    ///
    /// # Safety
    /// The CPU must have the SHA extensions, SSSE3 and SSE4.1 ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress2(sa: &mut [u32; 8], a: &[u8], sb: &mut [u32; 8], b: &[u8]) {
        // Message bytes are big-endian words: reverse each word's bytes.
        let swap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let (mut abef_a, mut cdgh_a) = load_state(sa);
        let (mut abef_b, mut cdgh_b) = load_state(sb);
        for (block_a, block_b) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
            let saved = (abef_a, cdgh_a, abef_b, cdgh_b);
            let mut wa = [swap; 4];
            let mut wb = [swap; 4];
            for i in 0..4 {
                // SAFETY: 16 bytes at 16 i within 64-byte blocks, unaligned loads.
                let (la, lb) = unsafe {
                    (
                        _mm_loadu_si128(block_a.as_ptr().add(16 * i).cast::<__m128i>()),
                        _mm_loadu_si128(block_b.as_ptr().add(16 * i).cast::<__m128i>()),
                    )
                };
                wa[i] = _mm_shuffle_epi8(la, swap);
                wb[i] = _mm_shuffle_epi8(lb, swap);
            }
            for r in 0..16 {
                if r >= 4 {
                    wa[r % 4] = schedule(wa[r % 4], wa[(r + 1) % 4], wa[(r + 2) % 4], wa[(r + 3) % 4]);
                    wb[r % 4] = schedule(wb[r % 4], wb[(r + 1) % 4], wb[(r + 2) % 4], wb[(r + 3) % 4]);
                }
                // SAFETY: 16 bytes at 16 r within the 256 bytes of K.
                let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * r).cast::<__m128i>()) };
                let ka = _mm_add_epi32(wa[r % 4], k);
                let kb = _mm_add_epi32(wb[r % 4], k);
                cdgh_a = _mm_sha256rnds2_epu32(cdgh_a, abef_a, ka);
                cdgh_b = _mm_sha256rnds2_epu32(cdgh_b, abef_b, kb);
                abef_a = _mm_sha256rnds2_epu32(abef_a, cdgh_a, _mm_shuffle_epi32(ka, 0x0E));
                abef_b = _mm_sha256rnds2_epu32(abef_b, cdgh_b, _mm_shuffle_epi32(kb, 0x0E));
            }
            abef_a = _mm_add_epi32(abef_a, saved.0);
            cdgh_a = _mm_add_epi32(cdgh_a, saved.1);
            abef_b = _mm_add_epi32(abef_b, saved.2);
            cdgh_b = _mm_add_epi32(cdgh_b, saved.3);
        }
        store_state(sa, abef_a, cdgh_a);
        store_state(sb, abef_b, cdgh_b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn fips_180_examples() {
        // FIPS 180-4's examples (NIST's SHA256.pdf): one block, two blocks.
        let mut h = Sha256Lane::new();
        h.update(b"abc");
        assert_eq!(hex(h.finalize()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut h = Sha256Lane::new();
        h.update(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
        assert_eq!(hex(h.finalize()), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    }

    /// Pairs of every length mix against sha256sum, through every path:
    /// paired blocks, lanes not aligned, slices of different lengths.
    #[test]
    fn pairs_agree_with_sha256sum() {
        if !vmrepo_testkit::have("sha256sum", "coreutils") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let other: Vec<u8> = data.iter().rev().map(|b| b ^ 0x5a).collect();
        let lengths = [0usize, 1, 55, 56, 63, 64, 65, 127, 128, 4096, 65_536, 100_000, 300_000];
        let mut expected = std::collections::HashMap::new();
        for (name, bytes) in [("d", &data), ("o", &other)] {
            for n in lengths {
                let p = dir.path().join(format!("{name}{n}"));
                std::fs::write(&p, &bytes[..n]).unwrap();
                let out = std::process::Command::new("sha256sum").arg(&p).output().unwrap();
                let text = String::from_utf8(out.stdout).unwrap();
                expected.insert((name, n), text[..64].to_string());
            }
        }
        for na in lengths {
            for nb in lengths {
                // Fed in pieces of 4096 and 1000 bytes: pairs where both
                // have whole blocks, singles elsewhere.
                for piece in [4096usize, 1000] {
                    let (mut a, mut b) = (Sha256Lane::new(), Sha256Lane::new());
                    let (mut ia, mut ib) = (0, 0);
                    while ia < na || ib < nb {
                        let sa = &data[ia..(ia + piece).min(na)];
                        let sb = &other[ib..(ib + piece).min(nb)];
                        update_pair(&mut a, sa, &mut b, sb);
                        ia += sa.len();
                        ib += sb.len();
                    }
                    assert_eq!(hex(a.finalize()), expected[&("d", na)], "{na} and {nb} by {piece}");
                    assert_eq!(hex(b.finalize()), expected[&("o", nb)], "{nb} and {na} by {piece}");
                }
            }
        }
    }
}
