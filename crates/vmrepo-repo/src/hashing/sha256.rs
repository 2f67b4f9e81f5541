//! SHA-256 (FIPS 180-4) of up to four files at once on one core.
//!
//! On the CPU's SHA extensions each of a block's 32 `sha256rnds2` waits for
//! the one before: one file at a time keeps the unit busy a fraction of the
//! time. Independent files, their instructions interleaved, fill those waits:
//! on an AMD EPYC core one file hashes at 1.5 GB/s, two at 1.8, four at 2.5
//! (see docs/benchmarks.md). `verify` hashes four images at once on each core
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

    /// Whether [`update_many`] can take this lane's next bytes: no partial
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

/// Hashes each lane's bytes into it, interleaved when all lanes are
/// [`Sha256Lane::aligned`] and their slices of one length, a whole number
/// of blocks (else each goes on its own).
pub(crate) fn update_many(lanes: &mut [(&mut Sha256Lane, &[u8])]) {
    let n = lanes.first().map_or(0, |(_, d)| d.len());
    let together =
        n.is_multiple_of(BLOCK) && lanes.iter().all(|(lane, data)| lane.aligned() && data.len() == n);
    if !together || lanes.len() < 2 {
        for (lane, data) in lanes.iter_mut() {
            lane.update(data);
        }
        return;
    }
    for (lane, _) in lanes.iter_mut() {
        lane.len = lane.len.wrapping_add(n as u64);
    }
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        for group in lanes.chunks_mut(x86::MAX_LANES) {
            match group.len() {
                2 => x86::compress_group::<2>(group),
                3 => x86::compress_group::<3>(group),
                4 => x86::compress_group::<4>(group),
                _ => {
                    for (lane, data) in group.iter_mut() {
                        compress(&mut lane.state, data);
                    }
                }
            }
        }
        return;
    }
    for (lane, data) in lanes.iter_mut() {
        compress(&mut lane.state, data);
    }
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

    /// Whether the CPU has what [`compress_n`] is compiled for.
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

    /// Files hashed together at most: past four the unit is busy and the
    /// registers run out.
    pub(super) const MAX_LANES: usize = 4;

    /// Hashes `N` lanes' bytes (all of one length, a multiple of 64) interleaved.
    pub(super) fn compress_group<const N: usize>(group: &mut [(&mut super::Sha256Lane, &[u8])]) {
        let mut states = [[0u32; 8]; N];
        let mut data: [&[u8]; N] = [&[]; N];
        for (i, (lane, bytes)) in group.iter().enumerate().take(N) {
            states[i] = lane.state;
            data[i] = bytes;
        }
        // SAFETY: update_many calls this only when available() says the CPU
        // has the features compress_n is compiled for.
        unsafe { compress_n(&mut states, data) };
        for (i, (lane, _)) in group.iter_mut().enumerate().take(N) {
            lane.state = states[i];
        }
    }

    /// Hashes the blocks of each `data[i]` into `states[i]`, one block of
    /// each at a time, their rounds interleaved. All slices have the length
    /// of the first, a multiple of 64.
    ///
    /// # Safety
    /// The CPU must have the SHA extensions, SSSE3 and SSE4.1 ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress_n<const N: usize>(states: &mut [[u32; 8]; N], data: [&[u8]; N]) {
        // Message bytes are big-endian words: reverse each word's bytes.
        let swap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let mut abef = [swap; N];
        let mut cdgh = [swap; N];
        for j in 0..N {
            (abef[j], cdgh[j]) = load_state(&states[j]);
        }
        let blocks = data[0].len() / 64;
        if data.iter().any(|d| d.len() < blocks * 64) {
            return;
        }
        for block in 0..blocks {
            let saved = (abef, cdgh);
            let mut w = [[swap; 4]; N];
            for j in 0..N {
                for (i, word) in w[j].iter_mut().enumerate() {
                    // SAFETY: 16 bytes at 64 block + 16 i, within data[j]
                    // (checked above to hold `blocks` blocks), unaligned loads.
                    let bytes = unsafe {
                        _mm_loadu_si128(data[j].as_ptr().add(64 * block + 16 * i).cast::<__m128i>())
                    };
                    *word = _mm_shuffle_epi8(bytes, swap);
                }
            }
            for r in 0..16 {
                if r >= 4 {
                    for wj in w.iter_mut() {
                        wj[r % 4] = schedule(wj[r % 4], wj[(r + 1) % 4], wj[(r + 2) % 4], wj[(r + 3) % 4]);
                    }
                }
                // SAFETY: 16 bytes at 16 r within the 256 bytes of K.
                let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * r).cast::<__m128i>()) };
                let mut kw = [k; N];
                for j in 0..N {
                    kw[j] = _mm_add_epi32(w[j][r % 4], k);
                }
                for j in 0..N {
                    cdgh[j] = _mm_sha256rnds2_epu32(cdgh[j], abef[j], kw[j]);
                }
                for j in 0..N {
                    abef[j] = _mm_sha256rnds2_epu32(abef[j], cdgh[j], _mm_shuffle_epi32(kw[j], 0x0E));
                }
            }
            for j in 0..N {
                abef[j] = _mm_add_epi32(abef[j], saved.0[j]);
                cdgh[j] = _mm_add_epi32(cdgh[j], saved.1[j]);
            }
        }
        for j in 0..N {
            store_state(&mut states[j], abef[j], cdgh[j]);
        }
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

    /// Groups of one to five files of every length mix against sha256sum,
    /// through every path: interleaved blocks, lanes not aligned, slices of
    /// different lengths.
    #[test]
    fn groups_agree_with_sha256sum() {
        if !vmrepo_testkit::have("sha256sum", "coreutils") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<Vec<u8>> = (0..5u32)
            .map(|f| (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761 + f) >> 11) as u8).collect())
            .collect();
        let lengths = [0usize, 1, 55, 56, 63, 64, 65, 127, 128, 4096, 65_536, 100_000, 300_000];
        let mut expected = std::collections::HashMap::new();
        for (f, bytes) in files.iter().enumerate() {
            for n in lengths {
                let p = dir.path().join(format!("f{f}-{n}"));
                std::fs::write(&p, &bytes[..n]).unwrap();
                let out = std::process::Command::new("sha256sum").arg(&p).output().unwrap();
                expected.insert((f, n), String::from_utf8(out.stdout).unwrap()[..64].to_string());
            }
        }
        for group in 1..=5 {
            for (k, &first) in lengths.iter().enumerate() {
                // Each file of the group a different length, the first in turn each of them.
                let lens: Vec<usize> = (0..group).map(|f| lengths[(k + 3 * f) % lengths.len()]).collect();
                assert_eq!(lens[0], first);
                // Fed in pieces of 4096 and 1000 bytes: interleaved where all
                // have whole blocks, one by one elsewhere.
                for piece in [4096usize, 1000] {
                    let mut lanes: Vec<Sha256Lane> = (0..group).map(|_| Sha256Lane::new()).collect();
                    let mut at = vec![0usize; group];
                    while at.iter().zip(&lens).any(|(a, n)| a < n) {
                        let mut batch: Vec<(&mut Sha256Lane, &[u8])> = lanes
                            .iter_mut()
                            .enumerate()
                            .map(|(f, lane)| (lane, &files[f][at[f]..(at[f] + piece).min(lens[f])]))
                            .collect();
                        update_many(&mut batch);
                        for (f, (_, d)) in batch.iter().enumerate() {
                            at[f] += d.len();
                        }
                    }
                    for (f, lane) in lanes.into_iter().enumerate() {
                        assert_eq!(
                            hex(lane.finalize()),
                            expected[&(f, lens[f])],
                            "{lens:?} by {piece}, file {f}"
                        );
                    }
                }
            }
        }
    }
}
