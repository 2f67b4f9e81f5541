//! MD5 (RFC 1321), written for speed on one core.
//!
//! MD5 is the slowest step of an import and cannot be split across cores:
//! each 64-byte block's 64 steps form one chain of dependent additions. An
//! import can only be as fast as this chain. The md-5 crate (with its
//! assembly) ran at 515 MB/s where `md5sum` runs at 645 MB/s on the same
//! core (AMD EPYC, see docs/benchmarks.md); this one runs at 660 to 680 MB/s
//! by keeping the chain as short as the algorithm allows:
//!
//! * the constant and the message word are added to `a` before the step's
//!   function of `b`, `c`, `d` is known, off the chain (see [`compress`] for
//!   how the compiler is kept from moving the constant back onto it);
//! * round 2's `(b & d) | (c & !d)` is computed as `(c & !d) + (b & d)` (the
//!   two terms share no bit), so that the half without `b`, the previous
//!   step's result, is added early: 4 dependent operations a step instead of 5.
//!
//! It is not a cryptographic use: MD5 is what the STAR specification's
//! `.checksum` files hold (`md5sum -c` must pass), not a defence.

/// Bytes in a block.
const BLOCK: usize = 64;

/// The initial state (RFC 1321, 3.3).
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The additive constants: `floor(abs(sin(i + 1)) * 2^32)` (RFC 1321, 3.4).
static K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// An MD5 computation in progress.
#[derive(Clone)]
pub(crate) struct Md5 {
    state: [u32; 4],
    /// Bytes of an incomplete block, waiting for more.
    pending: [u8; BLOCK],
    pending_len: usize,
    /// Bytes hashed so far (the padding records it modulo 2^64, as RFC 1321 says).
    len: u64,
}

impl Md5 {
    pub(crate) fn new() -> Md5 {
        Md5 { state: INIT, pending: [0; BLOCK], pending_len: 0, len: 0 }
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
        let (blocks, rest) = data.as_chunks::<BLOCK>();
        for block in blocks {
            compress(&mut self.state, block);
        }
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    pub(crate) fn finalize(mut self) -> [u8; 16] {
        // RFC 1321, 3.1 and 3.2: a 1 bit, zeros to 56 bytes modulo 64, the length in bits.
        let bits = self.len.wrapping_mul(8);
        let zeros = (BLOCK + 56 - (self.pending_len + 1) % BLOCK) % BLOCK;
        let mut tail = [0u8; 2 * BLOCK];
        tail[0] = 0x80;
        let n = 1 + zeros;
        tail[n..n + 8].copy_from_slice(&bits.to_le_bytes());
        self.update(&tail[..n + 8]);
        let mut out = [0u8; 16];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// One step: `a = b + ((a + k + m + f) <<< s)`, with `f` added last so that
/// everything before it is ready when `b` is.
macro_rules! step {
    ($f:expr, $a:ident, $b:ident, $k:expr, $m:expr, $s:expr) => {
        $a = $a.wrapping_add($k).wrapping_add($m).wrapping_add($f).rotate_left($s).wrapping_add($b)
    };
}

/// Round 2's step: `(c & !d)` goes in before `(b & d)`, see the module documentation.
macro_rules! step_g {
    ($a:ident, $b:ident, $c:ident, $d:ident, $k:expr, $m:expr, $s:expr) => {
        $a = $a
            .wrapping_add($k)
            .wrapping_add($m)
            .wrapping_add($c & !$d)
            .wrapping_add($b & $d)
            .rotate_left($s)
            .wrapping_add($b)
    };
}

/// Hashes one block into `state` (RFC 1321, 3.4).
#[inline(always)]
fn compress(state: &mut [u32; 4], block: &[u8; BLOCK]) {
    let mut m = [0u32; 16];
    for (w, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    // Seen as constants, the K values would be moved by the optimiser to the
    // last addition before each rotation, onto the chain (one more cycle a
    // step, 20% slower); read through an opaque reference they stay loads,
    // added early. black_box here is about speed only: the result is the same.
    let k: &[u32; 64] = std::hint::black_box(&K);
    let [mut a, mut b, mut c, mut d] = *state;

    step!(((c ^ d) & b) ^ d, a, b, k[0], m[0], 7);
    step!(((b ^ c) & a) ^ c, d, a, k[1], m[1], 12);
    step!(((a ^ b) & d) ^ b, c, d, k[2], m[2], 17);
    step!(((d ^ a) & c) ^ a, b, c, k[3], m[3], 22);
    step!(((c ^ d) & b) ^ d, a, b, k[4], m[4], 7);
    step!(((b ^ c) & a) ^ c, d, a, k[5], m[5], 12);
    step!(((a ^ b) & d) ^ b, c, d, k[6], m[6], 17);
    step!(((d ^ a) & c) ^ a, b, c, k[7], m[7], 22);
    step!(((c ^ d) & b) ^ d, a, b, k[8], m[8], 7);
    step!(((b ^ c) & a) ^ c, d, a, k[9], m[9], 12);
    step!(((a ^ b) & d) ^ b, c, d, k[10], m[10], 17);
    step!(((d ^ a) & c) ^ a, b, c, k[11], m[11], 22);
    step!(((c ^ d) & b) ^ d, a, b, k[12], m[12], 7);
    step!(((b ^ c) & a) ^ c, d, a, k[13], m[13], 12);
    step!(((a ^ b) & d) ^ b, c, d, k[14], m[14], 17);
    step!(((d ^ a) & c) ^ a, b, c, k[15], m[15], 22);

    step_g!(a, b, c, d, k[16], m[1], 5);
    step_g!(d, a, b, c, k[17], m[6], 9);
    step_g!(c, d, a, b, k[18], m[11], 14);
    step_g!(b, c, d, a, k[19], m[0], 20);
    step_g!(a, b, c, d, k[20], m[5], 5);
    step_g!(d, a, b, c, k[21], m[10], 9);
    step_g!(c, d, a, b, k[22], m[15], 14);
    step_g!(b, c, d, a, k[23], m[4], 20);
    step_g!(a, b, c, d, k[24], m[9], 5);
    step_g!(d, a, b, c, k[25], m[14], 9);
    step_g!(c, d, a, b, k[26], m[3], 14);
    step_g!(b, c, d, a, k[27], m[8], 20);
    step_g!(a, b, c, d, k[28], m[13], 5);
    step_g!(d, a, b, c, k[29], m[2], 9);
    step_g!(c, d, a, b, k[30], m[7], 14);
    step_g!(b, c, d, a, k[31], m[12], 20);

    step!(b ^ c ^ d, a, b, k[32], m[5], 4);
    step!(a ^ b ^ c, d, a, k[33], m[8], 11);
    step!(d ^ a ^ b, c, d, k[34], m[11], 16);
    step!(c ^ d ^ a, b, c, k[35], m[14], 23);
    step!(b ^ c ^ d, a, b, k[36], m[1], 4);
    step!(a ^ b ^ c, d, a, k[37], m[4], 11);
    step!(d ^ a ^ b, c, d, k[38], m[7], 16);
    step!(c ^ d ^ a, b, c, k[39], m[10], 23);
    step!(b ^ c ^ d, a, b, k[40], m[13], 4);
    step!(a ^ b ^ c, d, a, k[41], m[0], 11);
    step!(d ^ a ^ b, c, d, k[42], m[3], 16);
    step!(c ^ d ^ a, b, c, k[43], m[6], 23);
    step!(b ^ c ^ d, a, b, k[44], m[9], 4);
    step!(a ^ b ^ c, d, a, k[45], m[12], 11);
    step!(d ^ a ^ b, c, d, k[46], m[15], 16);
    step!(c ^ d ^ a, b, c, k[47], m[2], 23);

    step!((b | !d) ^ c, a, b, k[48], m[0], 6);
    step!((a | !c) ^ b, d, a, k[49], m[7], 10);
    step!((d | !b) ^ a, c, d, k[50], m[14], 15);
    step!((c | !a) ^ d, b, c, k[51], m[5], 21);
    step!((b | !d) ^ c, a, b, k[52], m[12], 6);
    step!((a | !c) ^ b, d, a, k[53], m[3], 10);
    step!((d | !b) ^ a, c, d, k[54], m[10], 15);
    step!((c | !a) ^ d, b, c, k[55], m[1], 21);
    step!((b | !d) ^ c, a, b, k[56], m[8], 6);
    step!((a | !c) ^ b, d, a, k[57], m[15], 10);
    step!((d | !b) ^ a, c, d, k[58], m[6], 15);
    step!((c | !a) ^ d, b, c, k[59], m[13], 21);
    step!((b | !d) ^ c, a, b, k[60], m[4], 6);
    step!((a | !c) ^ b, d, a, k[61], m[11], 10);
    step!((d | !b) ^ a, c, d, k[62], m[2], 15);
    step!((c | !a) ^ d, b, c, k[63], m[9], 21);

    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn md5(data: &[u8]) -> String {
        let mut h = Md5::new();
        h.update(data);
        hex(h.finalize())
    }

    #[test]
    fn rfc1321_test_suite() {
        // RFC 1321, appendix A.5.
        let suite = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, digest) in suite {
            assert_eq!(md5(input.as_bytes()), digest, "MD5({input:?})");
        }
    }

    /// Every length around the padding's boundaries, and pieces of every
    /// size, against md5sum.
    #[test]
    fn agrees_with_md5sum_at_every_boundary() {
        if !vmrepo_testkit::have("md5sum", "coreutils") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let lengths: Vec<usize> = (0..=200).chain([511, 512, 513, 4095, 4096, 65_599, 70_000]).collect();
        for &n in &lengths {
            std::fs::write(dir.path().join(format!("f{n}")), &data[..n]).unwrap();
        }
        let out = std::process::Command::new("md5sum")
            .args(lengths.iter().map(|n| format!("f{n}")))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        let expected: Vec<String> =
            String::from_utf8(out.stdout).unwrap().lines().map(|l| l[..32].to_string()).collect();
        for (&n, want) in lengths.iter().zip(&expected) {
            assert_eq!(&md5(&data[..n]), want, "{n} bytes");
            // The same bytes handed over in pieces of 1, 7, 63, 64, 65 ... bytes.
            for piece in [1, 7, 63, 64, 65, 1000] {
                let mut h = Md5::new();
                for p in data[..n].chunks(piece) {
                    h.update(p);
                }
                assert_eq!(&hex(h.finalize()), want, "{n} bytes in pieces of {piece}");
            }
        }
    }
}
