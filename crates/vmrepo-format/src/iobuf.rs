//! [`IoBuf`]: a byte buffer for large reads and writes whose first byte is on
//! a 4 KiB boundary.
//!
//! The kernel copies a `read` or `write` into or out of the caller's memory.
//! On one of the project's machines (AMD EPYC; docs/benchmarks.md, "Aligned
//! I/O buffers", and `bench/align.sh`) that copy ran four times slower into
//! a buffer that starts 16 bytes past a page, where the allocator puts a
//! large `Vec<u8>`, than into one that starts on a cache line: 0.43 s
//! against 0.11 s of system time to read 1 GiB from the page cache; on
//! another (Intel Xeon) the offset made no difference. Every buffer that a
//! whole image passes through is an `IoBuf`. Small buffers (headers,
//! tables) need not be.

use std::ops::{Deref, DerefMut};

/// The alignment of an [`IoBuf`]'s first byte: a page.
pub const IO_ALIGN: usize = 4096;

/// A growable byte buffer whose contents start on an [`IO_ALIGN`] boundary.
///
/// It dereferences to its `len` bytes, as a `Vec<u8>` does. Growing past its
/// capacity moves the contents to a new aligned allocation.
pub struct IoBuf {
    /// At least `capacity + IO_ALIGN - 1` bytes; the contents start at
    /// `start`, the first page boundary.
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl IoBuf {
    /// An empty buffer with room for `capacity` bytes.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> IoBuf {
        let raw = vec![0u8; capacity.saturating_add(IO_ALIGN)];
        // `align_offset` may answer "cannot" (usize::MAX); then the buffer is
        // used as it comes, still correct, only slower.
        let start = match raw.as_ptr().align_offset(IO_ALIGN) {
            s if s < IO_ALIGN => s,
            _ => 0,
        };
        IoBuf { raw, start, len: 0 }
    }

    /// `len` zero bytes.
    #[must_use]
    pub fn zeroed(len: usize) -> IoBuf {
        let mut b = IoBuf::with_capacity(len);
        b.len = len;
        b
    }

    /// How many bytes it holds without moving.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.raw.len() - self.start
    }

    /// Empties it, keeping the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens it to `len` bytes (nothing if it is shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes it `len` bytes long, new bytes being `value`.
    pub fn resize(&mut self, len: usize, value: u8) {
        if len > self.len {
            self.reserve(len - self.len);
            let (from, to) = (self.start + self.len, self.start + len);
            self.raw[from..to].fill(value);
        }
        self.len = len;
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        let from = self.start + self.len;
        self.raw[from..from + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Makes room for `more` bytes beyond the contents.
    fn reserve(&mut self, more: usize) {
        let need = self.len.checked_add(more).expect("an IoBuf larger than memory");
        if need <= self.capacity() {
            return;
        }
        let mut grown = IoBuf::with_capacity(need.max(self.capacity().saturating_mul(2)));
        grown.raw[grown.start..grown.start + self.len].copy_from_slice(self);
        grown.len = self.len;
        *self = grown;
    }
}

impl Extend<u8> for IoBuf {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        for b in iter {
            self.extend_from_slice(&[b]);
        }
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf").field("len", &self.len).field("capacity", &self.capacity()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_page_and_behaves_as_a_vec() {
        for cap in [0, 1, 4095, 1 << 20] {
            let mut b = IoBuf::with_capacity(cap);
            let mut v: Vec<u8> = Vec::new();
            assert_eq!(b.as_ptr() as usize % IO_ALIGN, 0);
            assert!(b.capacity() >= cap);
            for step in 0..40u8 {
                let piece: Vec<u8> = (0..usize::from(step) * 997).map(|i| i as u8 ^ step).collect();
                b.extend_from_slice(&piece);
                v.extend_from_slice(&piece);
                b.extend([step, step]);
                v.extend([step, step]);
                if step % 7 == 0 {
                    b.resize(b.len() + 300, step);
                    v.resize(v.len() + 300, step);
                }
                if step % 11 == 0 {
                    b.truncate(v.len() / 2);
                    v.truncate(v.len() / 2);
                }
                assert_eq!(&b[..], &v[..]);
                assert_eq!(b.as_ptr() as usize % IO_ALIGN, 0, "after growing");
            }
            b.clear();
            assert!(b.is_empty());
        }
        let z = IoBuf::zeroed(10_000);
        assert_eq!(z.len(), 10_000);
        assert!(z.iter().all(|&x| x == 0));
    }
}
