//! Printing for people (aligned tables) and for programs (JSON).

use std::io::{self, Write};

use serde::Serialize;

/// Writes a value as pretty JSON on standard output.
pub fn json<T: Serialize + ?Sized>(value: &T) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::from)?;
    writeln!(out)
}

/// A table with a header row; columns are padded to the widest cell. Columns
/// listed in `right` are right-aligned (numbers).
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    right: Vec<usize>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Table {
        Table { header, rows: Vec::new(), right: Vec::new() }
    }

    pub fn right_align(mut self, cols: &[usize]) -> Table {
        self.right = cols.to_vec();
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for r in std::iter::once(&header).chain(self.rows.iter()) {
            for (i, c) in r.iter().enumerate() {
                let last = i + 1 == r.len();
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(c.chars().count());
                if self.right.contains(&i) {
                    write!(out, "{:pad$}{c}", "")?;
                } else if last {
                    out.write_all(c.as_bytes())?;
                } else {
                    write!(out, "{c}{:pad$}", "")?;
                }
                if !last {
                    out.write_all(b"  ")?;
                }
            }
            out.write_all(b"\n")?;
        }
        out.flush()
    }
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
pub fn line(s: impl std::fmt::Display) -> io::Result<()> {
    writeln!(io::stdout().lock(), "{s}")
}
