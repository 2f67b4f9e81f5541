//! The qcow2 snapshot table.

use crate::bytes::{be16, be32, be64};
use crate::error::{Result, ensure};
use crate::info::Snapshot;
use crate::source::{Source, read_into, read_vec};

use super::header::Header;

/// The most extra data a snapshot entry may carry (QEMU's limit).
const MAX_EXTRA_DATA: u32 = 1024;
/// The largest snapshot table read (QEMU's QCOW_MAX_SNAPSHOTS_SIZE).
const MAX_TABLE_BYTES: u64 = 64 << 20;
/// Size of the fixed part of an entry.
const ENTRY_HEADER: u64 = 40;

/// A snapshot entry: what `info` reports, and where its L1 table lies.
pub struct Entry {
    pub snapshot: Snapshot,
    pub l1_table_offset: u64,
    pub l1_size: u32,
}

/// Reads every snapshot entry.
pub fn read(src: &dyn Source, hdr: &Header) -> Result<Vec<Snapshot>> {
    Ok(read_entries(src, hdr)?.0.into_iter().map(|e| e.snapshot).collect())
}

/// Reads every snapshot entry, and the bytes the table takes.
pub fn read_entries(src: &dyn Source, hdr: &Header) -> Result<(Vec<Entry>, u64)> {
    let mut out = Vec::new();
    let mut off = hdr.snapshots_offset;
    let start = off;
    for i in 0..hdr.nb_snapshots {
        let used = off - start;
        ensure!(used <= MAX_TABLE_BYTES, "the snapshot table is larger than {MAX_TABLE_BYTES} bytes");
        let mut e = [0u8; ENTRY_HEADER as usize];
        read_into(src, &mut e, off, "a snapshot entry")?;
        let id_size = u64::from(be16(&e, 12));
        let name_size = u64::from(be16(&e, 14));
        let extra_size = be32(&e, 36);
        ensure!(
            extra_size <= MAX_EXTRA_DATA,
            "snapshot {i} has {extra_size} bytes of extra data (at most {MAX_EXTRA_DATA})"
        );
        let extra = read_vec(src, off + ENTRY_HEADER, u64::from(extra_size), "snapshot extra data")?;
        let strings_off = off + ENTRY_HEADER + u64::from(extra_size);
        let id = read_vec(src, strings_off, id_size, "a snapshot id")?;
        let name = read_vec(src, strings_off + id_size, name_size, "a snapshot name")?;
        let vm_clock = be64(&e, 24);
        let mut vm_state = u64::from(be32(&e, 32));
        if extra.len() >= 8 {
            vm_state = be64(&extra, 0);
        }
        let disk_size = (extra.len() >= 16).then(|| be64(&extra, 8));
        let icount = (extra.len() >= 24).then(|| be64(&extra, 16)).filter(|&v| v != u64::MAX);
        let snapshot = Snapshot {
            id: String::from_utf8_lossy(&id).into_owned(),
            name: String::from_utf8_lossy(&name).into_owned(),
            vm_state_size: vm_state,
            date_sec: be32(&e, 16),
            date_nsec: be32(&e, 20),
            vm_clock_sec: vm_clock / 1_000_000_000,
            vm_clock_nsec: u32::try_from(vm_clock % 1_000_000_000).unwrap_or(0),
            icount,
            disk_size,
        };
        out.push(Entry { snapshot, l1_table_offset: be64(&e, 0), l1_size: be32(&e, 8) });
        let entry_len = ENTRY_HEADER + u64::from(extra_size) + id_size + name_size;
        off = off.saturating_add(entry_len.div_ceil(8) * 8);
    }
    Ok((out, off - start))
}
