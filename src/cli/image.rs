//! Commands on one image file: info, map, cat, check.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use vmrepo_format::{Format, Image, OpenOptions};
use vmrepo_repo::{ErrorKind, ImageKind};

use super::{Ctx, open_catalog};
use crate::Outcome;
use crate::args::ImageArgs;
use crate::output::{self, line, size};

/// The file to open: the path given, or the cataloged image of that name;
/// and whether the image is a folder whose files may be opened (asking for
/// a cataloged image folder asks for its parts, which live inside it).
pub(crate) fn image_path(ctx: &Ctx<'_>, spec: &str) -> Result<(PathBuf, bool)> {
    let p = Path::new(spec);
    if p.exists() {
        if p.is_dir() {
            return Ok((vmrepo_repo::content::folder_entry(p)?, true));
        }
        return Ok((p.to_path_buf(), false));
    }
    let catalog = open_catalog(ctx)
        .with_context(|| format!("{spec} is neither a file nor an image in a repository"))?;
    let rec = catalog.resolve(spec)?;
    let path = catalog.repo().vm_root().join(&rec.folder).join(&rec.file);
    match rec.image_kind() {
        ImageKind::File => Ok((path, false)),
        ImageKind::Folder => Ok((vmrepo_repo::content::folder_entry(&path)?, true)),
        ImageKind::Missing => {
            Err(vmrepo_repo::Error::new(ErrorKind::NotFound, format!("{} is missing", rec.path)).into())
        }
    }
}

fn open(ctx: &Ctx<'_>, a: &ImageArgs) -> Result<Image> {
    let (path, folder) = image_path(ctx, &a.image)?;
    open_path(a, &path, folder)
}

pub(crate) fn open_path(a: &ImageArgs, path: &Path, folder: bool) -> Result<Image> {
    let format = match &a.format {
        None => None,
        Some(f) => Some(
            Format::ALL
                .into_iter()
                .find(|x| {
                    x.name().eq_ignore_ascii_case(f)
                        || x.qemu_name().eq_ignore_ascii_case(f) && *x != Format::Iso
                })
                .ok_or_else(|| {
                    vmrepo_repo::Error::new(ErrorKind::InvalidInput, format!("unknown format {f:?}"))
                })?,
        ),
    };
    Ok(vmrepo_format::open(path, &OpenOptions { follow: a.follow || folder, format })?)
}

pub fn info(ctx: &Ctx<'_>, a: &ImageArgs) -> Result<Outcome> {
    let image = open(ctx, a)?;
    let i = &image.info;
    if ctx.cli.json {
        output::json(i)?;
        return Ok(Outcome::Clean);
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("image", i.filename.clone()),
        (
            "file format",
            match &i.subformat {
                Some(s) => format!("{} ({s})", i.format),
                None => i.format.to_string(),
            },
        ),
        ("virtual size", format!("{} ({} bytes)", size(Some(i.virtual_size)), i.virtual_size)),
        ("disk size", size(Some(i.actual_size))),
        (
            "storage",
            match i.storage {
                vmrepo_format::Storage::Fixed => "fixed".into(),
                vmrepo_format::Storage::Dynamic => "dynamically expanding".into(),
            },
        ),
    ];
    if let Some(a) = i.allocated_size {
        rows.push(("allocated", format!("{} ({a} bytes)", size(Some(a)))));
    }
    if let Some(c) = i.cluster_size {
        rows.push(("cluster_size", c.to_string()));
    }
    if let Some(c) = &i.compression {
        rows.push(("compression", c.clone()));
    }
    if let Some(b) = &i.backing_filename {
        rows.push(("backing file", b.clone()));
    }
    if let Some(b) = &i.backing_filename_format {
        rows.push(("backing file format", b.clone()));
    }
    if let Some(d) = &i.data_file {
        rows.push(("data file", d.clone()));
    }
    if let Some(p) = &i.parent {
        rows.push(("parent", format!("{} {}", p.uuid.as_deref().unwrap_or("-"), p.locators.join(", "))));
    }
    rows.push(("dirty flag", i.dirty_flag.to_string()));
    if i.corrupt {
        rows.push(("corrupt", "true".into()));
    }
    for e in &i.extents {
        rows.push((
            "extent",
            format!(
                "{} {} {} ({} bytes)",
                e.access,
                if e.format.is_empty() { "SPARSE" } else { &e.format },
                e.filename,
                e.virtual_size
            ),
        ));
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        line(format_args!("{k:<w$}  {v}"))?;
    }
    if !i.snapshots.is_empty() {
        line("Snapshot list:")?;
        line(format_args!("{:<4} {:<20} {:>12} {:>20}", "ID", "TAG", "VM SIZE", "DATE (epoch s)"))?;
        for s in &i.snapshots {
            line(format_args!("{:<4} {:<20} {:>12} {:>20}", s.id, s.name, s.vm_state_size, s.date_sec))?;
        }
    }
    if let Some(fs) = &i.format_specific {
        line("Format specific information:")?;
        if let Some(data) = fs.get("data").and_then(|d| d.as_object()) {
            for (k, v) in data {
                line(format_args!("    {k}: {}", v))?;
            }
        }
    }
    for wmsg in &i.warnings {
        line(format_args!("warning: {wmsg}"))?;
    }
    Ok(Outcome::Clean)
}

pub fn map(ctx: &Ctx<'_>, a: &ImageArgs) -> Result<Outcome> {
    let image = open(ctx, a)?;
    let disk = image.disk()?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let io_err = |e: io::Error| vmrepo_format::Error::from_io("cannot write the map", e);
    if ctx.cli.json {
        // A JSON array written as it goes: a map can hold millions of extents.
        let mut first = true;
        write!(out, "[")?;
        vmrepo_format::map_each(disk, 0, disk.size(), &mut |e| {
            let sep = if first { "\n" } else { ",\n" };
            first = false;
            let text = serde_json::to_string(&e).map_err(|e| io_err(io::Error::other(e)))?;
            write!(out, "{sep}    {text}").map_err(io_err)
        })?;
        writeln!(out, "\n]")?;
        out.flush()?;
        return Ok(Outcome::Clean);
    }
    writeln!(out, "{:<20}{:<20}{:<20}Kind", "Offset", "Length", "Mapped to")?;
    vmrepo_format::map_each(disk, 0, disk.size(), &mut |e| {
        let kind = match (e.data, e.zero, e.compressed, e.present) {
            (true, _, true, _) => "compressed",
            (true, false, _, _) => "data",
            (true, true, _, _) => "allocated, reads as zeros",
            (false, true, _, true) => "zeros",
            (false, true, _, false) => "unallocated (zeros)",
            _ => "unallocated (backing file)",
        };
        let mapped = e.offset.map_or_else(|| "-".to_string(), |o| format!("{o:#x}"));
        writeln!(
            out,
            "{:<20}{:<20}{:<20}{kind}",
            format!("{:#x}", e.start),
            format!("{:#x}", e.length),
            mapped
        )
        .map_err(io_err)
    })?;
    out.flush()?;
    Ok(Outcome::Clean)
}

pub fn cat(ctx: &Ctx<'_>, a: &ImageArgs, output: Option<&Path>, force: bool) -> Result<Outcome> {
    let (path, folder) = image_path(ctx, &a.image)?;
    let image = open_path(a, &path, folder)?;
    let disk = image.disk()?;
    let Some(out) = output else {
        let mut stdout = io::stdout().lock();
        vmrepo_format::cat::to_stream(disk, &mut stdout, ctx.cancel)?;
        stdout.flush()?;
        return interrupted_or(ctx, Outcome::Clean);
    };
    let inputs = input_files(&path, &image.info);
    match crate::outfile::Target::choose(out, force, &inputs)? {
        crate::outfile::Target::Device(f) => {
            // A device or a pipe the user named with --force: every byte, in order.
            let mut w = io::BufWriter::with_capacity(1 << 20, f);
            vmrepo_format::cat::to_stream(disk, &mut w, ctx.cancel)?;
            w.flush()?;
        }
        crate::outfile::Target::New(tmp) => {
            let written = vmrepo_format::cat::to_file(disk, tmp.file(), &|_| {}, ctx.cancel)
                .with_context(|| format!("writing {}", out.display()));
            match written {
                Ok(_) if !ctx.cancel.load(Ordering::Relaxed) => tmp.persist()?,
                // Dropping the temporary file removes it: nothing is left.
                Ok(_) => return Err(vmrepo_repo::Error::interrupted().into()),
                Err(e) => return Err(e),
            }
        }
    }
    interrupted_or(ctx, Outcome::Clean)
}

fn interrupted_or(ctx: &Ctx<'_>, outcome: Outcome) -> Result<Outcome> {
    if ctx.cancel.load(Ordering::Relaxed) {
        return Err(vmrepo_repo::Error::interrupted().into());
    }
    Ok(outcome)
}

/// The files `cat` reads: the image and those it names (extents, data file,
/// backing file), resolved in its folder, so that none is written over.
pub(crate) fn input_files(path: &Path, info: &vmrepo_format::Info) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = vec![path.to_path_buf()];
    let named = info
        .extents
        .iter()
        .map(|e| e.filename.as_str())
        .chain(info.data_file.as_deref())
        .chain(info.backing_filename.as_deref());
    for n in named {
        if !n.is_empty() {
            out.push(dir.join(n));
        }
    }
    out
}

pub fn check(ctx: &Ctx<'_>, a: &ImageArgs) -> Result<Outcome> {
    let image = open(ctx, a)?;
    let report = vmrepo_format::check::check(&image)?;
    if ctx.cli.json {
        output::json(&report)?;
    } else {
        for p in &report.problems {
            line(format_args!("{}: {p}", image.info.filename))?;
        }
        if !ctx.cli.quiet {
            line(format_args!(
                "{}: {} ({} problem(s); {} of {} allocated)",
                image.info.filename,
                if report.problems.is_empty() { "no problems found" } else { "PROBLEMS FOUND" },
                report.problems.len(),
                size(Some(report.allocated)),
                size(Some(image.info.virtual_size)),
            ))?;
        }
    }
    Ok(if report.problems.is_empty() { Outcome::Clean } else { Outcome::Problems })
}

pub fn inspect(ctx: &Ctx<'_>, a: &ImageArgs, max_size: Option<&str>) -> Result<Outcome> {
    let (path, _) = image_path(ctx, &a.image)?;
    // The name's maximum size, when the image is one of the repository's.
    let from_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| vmrepo_name::ImageName::parse_file(n).ok())
        .map(|n| n.max_size().bytes());
    let max = match max_size {
        Some(m) => Some(vmrepo_name::MaxSize::from_user(m)?.bytes()),
        None => from_name,
    };
    let image = open(ctx, a)?;
    let started = std::time::Instant::now();
    let report = vmrepo_inspect::inspect(image.into_disk()?, &vmrepo_inspect::Options { max_size: max });
    let elapsed = started.elapsed();
    if ctx.cli.json {
        output::json(&report)?;
        return Ok(Outcome::Clean);
    }
    print_report(&report)?;
    line(format_args!(
        "read {} of the disk in {:.0} ms",
        size(Some(report.bytes_read)),
        elapsed.as_secs_f64() * 1000.0
    ))?;
    Ok(Outcome::Clean)
}

fn print_report(r: &vmrepo_inspect::Report) -> Result<()> {
    use vmrepo_inspect::kernel::Verdict;
    let dash = || "-".to_string();
    line(format_args!("Partitions       {} ({})", r.partitions.scheme, r.partitions.partitions.len()))?;
    for p in &r.partitions.partitions {
        line(format_args!(
            "  p{:<3} {:>10} at {:>12}  {} {}{}",
            p.number,
            size(Some(p.size)),
            p.start,
            p.type_id,
            p.kind,
            if p.bootable { " (boot)" } else { "" }
        ))?;
    }
    for lv in &r.logical_volumes {
        line(format_args!(
            "  LV {}/{} {}{}",
            lv.vg,
            lv.name,
            size(Some(lv.size)),
            lv.unmapped.as_ref().map(|u| format!(" (not read: {u})")).unwrap_or_default()
        ))?;
    }
    line("Filesystems")?;
    for v in &r.filesystems {
        line(format_args!(
            "  {:<22} {:<8} {:<6} {:>10} size, {:>10} used, {:>10} free  label={} uuid={}",
            v.device,
            v.fs.kind,
            v.role.clone().unwrap_or_default(),
            size(Some(v.fs.size)),
            size(v.fs.used),
            size(v.fs.free),
            v.fs.label.clone().unwrap_or_else(dash),
            v.fs.uuid.clone().unwrap_or_else(dash)
        ))?;
    }
    for s in &r.swap {
        line(format_args!("  {:<22} swap            {:>10}", s.device, size(Some(s.swap.size))))?;
    }
    match &r.os {
        Some(o) => line(format_args!(
            "Operating system {} ({}{}), from {}",
            o.product_name,
            o.token.clone().unwrap_or_else(|| format!("{} {}", o.distro, o.version)),
            o.osinfo.as_ref().map(|i| format!(", {i}")).unwrap_or_default(),
            o.source
        ))?,
        None => line("Operating system unknown")?,
    }
    line(format_args!("Hostname         {}", r.hostname.clone().unwrap_or_else(dash)))?;
    line(format_args!("Packages         {}", r.package_format.clone().unwrap_or_else(dash)))?;
    match &r.arch {
        Some(a) => {
            line(format_args!("Architecture     {} {}-bit ({}, from {})", a.isa, a.bits, a.machine, a.from))?
        }
        None => line("Architecture     unknown")?,
    }
    let kernels = match (&r.boot.kernels[..], &r.boot.module_trees[..], r.boot.verdict) {
        (_, _, Verdict::Unknown) => "unknown".to_string(),
        ([], [], _) => "none".to_string(),
        ([], trees, _) => format!("none in /boot (modules for {})", trees.join(", ")),
        (ks, _, _) => ks.iter().map(|k| k.version.as_str()).collect::<Vec<_>>().join(", "),
    };
    line(format_args!(
        "Kernels          {kernels}{}",
        match r.boot.verdict {
            Verdict::OwnKernel => "",
            Verdict::XenParavirtual =>
                " -- a Xen paravirtual guest: it will not boot on VirtualBox, VMware or KVM",
            Verdict::NoKernel => " -- no kernel: not bootable on its own",
            Verdict::Unknown => " (/boot could not be read)",
        }
    ))?;
    if !r.boot.xen_evidence.is_empty() {
        line(format_args!("Xen evidence     {}", r.boot.xen_evidence.join("; ")))?;
    }
    for k in &r.boot.kernels {
        line(format_args!(
            "  {} {}{}{}",
            k.path,
            k.header_version.as_ref().map(|v| format!("(header: {v}) ")).unwrap_or_default(),
            k.initrd.as_ref().map(|i| format!("initrd {i} ")).unwrap_or_default(),
            if k.modules { "modules" } else { "no modules" }
        ))?;
    }
    if !r.boot.bootloader.is_empty() {
        line(format_args!("Bootloader       {}", r.boot.bootloader.join(", ")))?;
    }
    line(format_args!(
        "STAR libraries   {}",
        if r.star.libraries.is_empty() {
            "none".to_string()
        } else {
            r.star
                .libraries
                .iter()
                .map(|l| format!("{} ({}, {})", l.name, l.path, size(Some(l.size))))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))?;
    line(format_args!(
        "star account     {}{}",
        if r.star.account { "yes" } else { "no" },
        if r.star.startup_scripts.is_empty() {
            String::new()
        } else {
            format!("; start-up: {}", r.star.startup_scripts.join(", "))
        }
    ))?;
    if let Some(a) = &r.accounts {
        line(format_args!(
            "root password    {}",
            serde_json::to_value(a.root_password)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ))?;
        line(format_args!("authorized_keys  {}", a.keys_summary()))?;
    }
    if let Some(m) = &r.monthly_password {
        line(format_args!("monthly password {}", m.summary()))?;
    }
    let b = &r.budget;
    line(format_args!(
        "Budget           OS {} + swap {} + STAR {} = {} of {} maximum: {} left for data (free in the \
         writable filesystems), {} unpartitioned{}",
        size(Some(b.os)),
        size(Some(b.swap)),
        size(Some(b.star_software)),
        size(Some(b.committed)),
        size(Some(b.max_size)),
        size(Some(b.left_for_data)),
        size(Some(b.unpartitioned)),
        if b.fits { "" } else { " -- OVER BUDGET" }
    ))?;
    for w in &r.warnings {
        line(format_args!("warning: {w}"))?;
    }
    Ok(())
}
