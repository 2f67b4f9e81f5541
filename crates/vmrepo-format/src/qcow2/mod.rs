//! qcow2, versions 2 and 3: zlib and zstd compressed clusters, extended L2
//! entries (subclusters), zero clusters, snapshots, dirty and corrupt bits,
//! backing and external data files.

mod check;
mod header;
mod reader;
mod snapshot;
pub(crate) mod writer;

use std::sync::Arc;

use serde_json::json;

use crate::error::{Error, ErrorKind, Result};
use crate::info::{Info, Storage};
use crate::source::{Resolver, Source};
use crate::{Format, OpenOptions, Opened};

use header::{AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
pub(crate) use reader::Qcow2Disk;

pub(crate) fn open(src: Arc<dyn Source>, resolver: &dyn Resolver) -> Result<Opened> {
    let hdr = header::read(src.as_ref())?;
    let backing = header::backing_name(src.as_ref(), &hdr)?;
    let snapshots = snapshot::read(src.as_ref(), &hdr)?;
    let mut info = Info::new(src.name(), Format::Qcow2, hdr.size, src.len(), src.allocated());
    info.subformat = Some(format!("v{}", hdr.version));
    info.storage = Storage::Dynamic;
    info.cluster_size = Some(hdr.cluster_size());
    info.compression = Some(hdr.compression.name().into());
    info.dirty_flag = hdr.incompatible_features & INCOMPAT_DIRTY != 0;
    info.corrupt = hdr.incompatible_features & INCOMPAT_CORRUPT != 0;
    info.backing_filename = backing.clone();
    info.backing_filename_format = hdr.backing_format.clone().filter(|_| backing.is_some());
    info.snapshots = snapshots;
    info.data_file = hdr.data_file.clone();
    let data_file_raw = hdr.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0;
    let mut data = serde_json::Map::new();
    data.insert("compat".into(), json!(if hdr.version == 2 { "0.10" } else { "1.1" }));
    data.insert("compression-type".into(), json!(hdr.compression.name()));
    if hdr.version == 3 {
        data.insert("lazy-refcounts".into(), json!(hdr.compatible_features & COMPAT_LAZY_REFCOUNTS != 0));
    }
    data.insert("refcount-bits".into(), json!(1u32 << hdr.refcount_order));
    if hdr.crypt_method != 0 {
        data.insert(
            "encrypt".into(),
            json!({ "format": if hdr.crypt_method == 1 { "aes" } else { "luks" } }),
        );
    }
    if let Some(df) = &hdr.data_file {
        data.insert("data-file".into(), json!(df));
        data.insert("data-file-raw".into(), json!(data_file_raw));
    }
    if hdr.version == 3 {
        data.insert("corrupt".into(), json!(info.corrupt));
        data.insert("extended-l2".into(), json!(hdr.extended_l2()));
    }
    info.format_specific = Some(json!({ "type": "qcow2", "data": data }));
    if hdr.has_data_file() && hdr.data_file.is_none() {
        info.warnings.push("an external data file is in use but its name is not recorded".into());
    }
    if let Some(df) = &hdr.data_file
        && let Some(a) = resolver.allocated(df)
    {
        info.actual_size = info.actual_size.saturating_add(a);
    }

    let disk = (|| -> Result<Box<dyn crate::Disk>> {
        if hdr.crypt_method != 0 {
            return Err(Error::unsupported("the image is encrypted; vmrepo does not decrypt"));
        }
        let data_src = if hdr.has_data_file() {
            let name = hdr.data_file.as_deref().ok_or_else(|| Error::malformed("no data file name"))?;
            resolver.open(name, "external data file")?
        } else {
            Arc::clone(&src)
        };
        let backing_disk = match &backing {
            None => None,
            Some(name) => {
                let child = resolver.descend(name)?;
                let bsrc = resolver.open(name, "backing file")?;
                let format = hdr.backing_format.as_deref().and_then(Format::from_qemu_name);
                let img = crate::open_source(bsrc, child.as_ref(), &OpenOptions { follow: true, format })?;
                Some(img.disk.map_err(|e| e.context(format!("backing file {name}")))?)
            }
        };
        let disk = Qcow2Disk::new(src.clone(), data_src, &hdr, backing_disk)?;
        Ok(Box::new(disk))
    })();
    // A disk that cannot be read for a malformed table is said in `info` too.
    if let Err(e) = &disk
        && matches!(e.kind(), ErrorKind::Malformed | ErrorKind::TooLarge)
    {
        info.warnings.push(e.to_string());
    }
    // The allocation count reads every L2 table once; a table it cannot read
    // is reported by `check`, not here.
    if let Ok(d) = Qcow2Disk::new(src.clone(), src.clone(), &hdr, None) {
        match d.allocated_bytes() {
            Ok(n) => info.allocated_size = Some(n),
            Err(e) => info.warnings.push(format!("allocation tables: {e}")),
        }
    }
    Ok(Opened { info, disk })
}
