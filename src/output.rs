//! Printing for people (aligned tables) and for programs (JSON).
//!
//! Everything printed goes through one buffer on standard output for the whole
//! run: into a pipe or a file it is written in blocks of [`OUT_BUFFER`] bytes
//! (Rust's standard output alone issues a `write` per line, and pretty JSON
//! has a line per field: 100,000 system calls for a `find --json` of 3,000
//! images); on a terminal each call below is written out as it returns, so
//! that people see lines as they come. [`flush`] writes out what is left and
//! must be called before the process exits, and before anything is written
//! to standard output by another path.

use std::io::{self, IsTerminal, Write};
use std::sync::{LazyLock, Mutex, PoisonError};

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

/// Bytes gathered before a `write` to standard output.
pub const OUT_BUFFER: usize = 64 * 1024;

/// Standard output behind the run's buffer.
struct Out {
    writer: io::BufWriter<io::Stdout>,
    /// Written out after each call rather than when the buffer is full.
    terminal: bool,
}

static OUT: LazyLock<Mutex<Out>> = LazyLock::new(|| {
    let stdout = io::stdout();
    let terminal = stdout.is_terminal();
    Mutex::new(Out { writer: io::BufWriter::with_capacity(OUT_BUFFER, stdout), terminal })
});

/// Runs `f` on the buffered standard output, then writes out on a terminal.
/// `f` must not print through this module: the buffer is locked meanwhile.
fn with_out<R, E: From<io::Error>>(
    f: impl FnOnce(&mut io::BufWriter<io::Stdout>) -> Result<R, E>,
) -> Result<R, E> {
    // A panic while printing leaves at worst a partial line in the buffer: still usable.
    let mut out = OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let r = f(&mut out.writer)?;
    if out.terminal {
        out.writer.flush()?;
    }
    Ok(r)
}

/// Writes out what is buffered for standard output.
///
/// # Errors
/// The write failed, for example because the reader closed the pipe
/// ([`io::ErrorKind::BrokenPipe`]).
pub fn flush() -> io::Result<()> {
    OUT.lock().unwrap_or_else(PoisonError::into_inner).writer.flush()
}

/// Writes a value as pretty JSON on standard output.
///
/// # Errors
/// Writing to standard output failed.
pub fn json<T: Serialize + ?Sized>(value: &T) -> io::Result<()> {
    with_out(|out| {
        serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
        out.write_all(b"\n")
    })
}

/// Writes a JSON array on standard output, pretty like [`json`], one element
/// at a time as `each` hands them to the function it is given: the elements
/// need not all be in memory at once. An error from `each` ends the array
/// where it is.
///
/// # Errors
/// `each`'s error, or writing to standard output failed (then as an
/// [`io::Error`], so that a closed pipe is still recognised).
pub fn json_array<T: Serialize + ?Sized, E: From<io::Error>>(
    each: impl FnOnce(&mut dyn FnMut(&T) -> Result<(), E>) -> Result<(), E>,
) -> Result<(), E> {
    with_out(|out| {
        let mut ser = serde_json::Serializer::pretty(&mut *out);
        let mut seq = ser.serialize_seq(None).map_err(io::Error::from)?;
        each(&mut |item| seq.serialize_element(item).map_err(|e| E::from(io::Error::from(e))))?;
        seq.end().map_err(io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(())
    })
}

/// A table with a header row; columns are padded to the widest cell. Columns
/// listed in `right` are right-aligned (numbers).
pub struct Table {
    header: Vec<&'static str>,
    /// The rows' cells, one after another (one allocation for thousands of rows).
    text: String,
    /// Where each cell ends in `text`.
    cell_ends: Vec<usize>,
    /// Where each row ends in `cell_ends`.
    row_ends: Vec<usize>,
    /// The widest cell of each column so far, header included.
    widths: Vec<usize>,
    right: Vec<usize>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Table {
        let widths = header.iter().map(|h| width(h)).collect();
        Table {
            header,
            text: String::new(),
            cell_ends: Vec::new(),
            row_ends: Vec::new(),
            widths,
            right: Vec::new(),
        }
    }

    pub fn right_align(mut self, cols: &[usize]) -> Table {
        self.right = cols.to_vec();
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.row_of(cells.iter().map(String::as_str));
    }

    /// Adds a row of borrowed cells: nothing is allocated for it.
    pub fn row_of<'c>(&mut self, cells: impl IntoIterator<Item = &'c str>) {
        for (i, c) in cells.into_iter().enumerate() {
            self.text.push_str(c);
            self.cell_ends.push(self.text.len());
            if let Some(w) = self.widths.get_mut(i) {
                *w = (*w).max(width(c));
            }
        }
        self.row_ends.push(self.cell_ends.len());
    }

    /// Whether the table has no rows (only its header).
    pub fn is_empty(&self) -> bool {
        self.row_ends.is_empty()
    }

    /// The rows, each as its cells.
    fn rows(&self) -> impl Iterator<Item = impl ExactSizeIterator<Item = &str>> {
        let mut first_cell = 0;
        self.row_ends.iter().map(move |&row_end| {
            let ends = &self.cell_ends[first_cell..row_end];
            let mut from = if first_cell == 0 { 0 } else { self.cell_ends[first_cell - 1] };
            first_cell = row_end;
            ends.iter().map(move |&end| {
                let cell = &self.text[from..end];
                from = end;
                cell
            })
        })
    }

    /// Prints the table on standard output.
    ///
    /// # Errors
    /// Writing to standard output failed.
    pub fn print(&self) -> io::Result<()> {
        with_out(|out| {
            self.print_row(out, self.header.iter().copied())?;
            for r in self.rows() {
                self.print_row(out, r)?;
            }
            Ok(())
        })
    }

    fn print_row<'c>(
        &self,
        out: &mut impl Write,
        cells: impl ExactSizeIterator<Item = &'c str>,
    ) -> io::Result<()> {
        let n = cells.len();
        for (i, c) in cells.enumerate() {
            let last = i + 1 == n;
            let pad = self.widths.get(i).copied().unwrap_or(0).saturating_sub(width(c));
            if self.right.contains(&i) {
                spaces(out, pad)?;
                out.write_all(c.as_bytes())?;
            } else {
                out.write_all(c.as_bytes())?;
                if !last {
                    spaces(out, pad)?;
                }
            }
            if !last {
                out.write_all(b"  ")?;
            }
        }
        out.write_all(b"\n")
    }
}

/// A cell's width in characters (names are ASCII: counting bytes is enough there).
fn width(s: &str) -> usize {
    if s.is_ascii() { s.len() } else { s.chars().count() }
}

/// Writes `n` spaces.
fn spaces(out: &mut impl Write, mut n: usize) -> io::Result<()> {
    const SPACES: [u8; 64] = [b' '; 64];
    while n > 0 {
        let step = n.min(SPACES.len());
        out.write_all(&SPACES[..step])?;
        n -= step;
    }
    Ok(())
}

/// `1.5 GiB`, or `-` for an unknown size.
pub fn size(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_string(), vmrepo_repo::description::human_bytes)
}

/// A value or `-`.
pub fn or_dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

/// Prints a line on standard output.
///
/// # Errors
/// Writing to standard output failed.
pub fn line(s: impl std::fmt::Display) -> io::Result<()> {
    with_out(|out| writeln!(out, "{s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_by_characters_and_aligns_right() {
        let mut t = Table::new(vec!["NAME", "SIZE", "NOTE"]).right_align(&[1]);
        t.row(vec!["é".into(), "1 GiB".into(), "x".into()]);
        t.row_of(["abcdef", "12 B", ""]);
        t.row_of(["short row"]);
        let mut out = Vec::new();
        t.print_row(&mut out, t.header.iter().copied()).unwrap();
        for r in t.rows() {
            t.print_row(&mut out, r).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME        SIZE  NOTE\né          1 GiB  x\nabcdef      12 B  \nshort row\n"
        );
    }
}
