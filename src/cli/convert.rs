//! `convert`: an image written in the format another VM software runs, after
//! the boot verdict (`vmrepo_repo::convert`), to a file or into the repository.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{Context as _, Result};
use serde::Serialize;
use vmrepo_format::Format;
use vmrepo_format::write::{Compression, Output, VmdkSubformat, Written};
use vmrepo_name::{Detail, Extension, ImageName, NameParts, Vm};
use vmrepo_repo::content::Content;
use vmrepo_repo::convert::{BootVerdict, default_output, description_notes, verdict};
use vmrepo_repo::hashing::{Endpoint, Want, hash_file};
use vmrepo_repo::{ErrorKind, Progress};

use super::Ctx;
use super::image::{image_path, input_files, open_path};
use crate::Outcome;
use crate::args::ConvertArgs;
use crate::output::{self, line};
use crate::ui::Bar;

fn invalid(msg: impl Into<String>) -> vmrepo_repo::Error {
    vmrepo_repo::Error::new(ErrorKind::InvalidInput, msg.into())
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report {
    source: String,
    /// With --add (the description quotes it); not computed for -o.
    #[serde(skip_serializing_if = "Option::is_none")]
    source_sha256: Option<String>,
    vm: String,
    format: Format,
    subformat: String,
    verdict: BootVerdict,
    forced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    written: Written,
    #[serde(skip_serializing_if = "Option::is_none")]
    added: Option<vmrepo_repo::ImageRecord>,
}

pub(crate) fn convert(ctx: &Ctx<'_>, a: &ConvertArgs) -> Result<Outcome> {
    let vm = Vm::from_user(&a.to)?;
    let output = output_of(a, vm)?;
    if vm.runs(output.format().name()) == Some(false) {
        tracing::warn!("{vm} does not run {} images as they are stored", output.format().name());
    }
    let (path, folder) = image_path(ctx, &a.image.image)?;
    // The verdict first: nothing is written for a guest that will not boot.
    let content = vmrepo_repo::content::read(&path)?;
    let v = verdict(&content, vm);
    if let Some(why) = &v.refusal {
        if !a.force {
            return Err(vmrepo_repo::Error::new(
                ErrorKind::BadImage,
                format!("{}: will not boot on {vm}: {why} (--force converts it anyway)", path.display()),
            )
            .into());
        }
        tracing::warn!("{}: {why}; converting anyway (--force)", path.display());
    }
    if !ctx.cli.json {
        for w in &v.warnings {
            tracing::warn!("{w}");
        }
    }
    let image = open_path(&a.image, &path, folder)?;
    let disk = image.disk()?;
    let bar = Bar::new(ctx.cli.quiet || ctx.cli.json);
    let reached = Cell::new(0u64);
    let progress = |pos: u64| {
        let before = reached.replace(pos.max(reached.get()));
        bar.advance(pos.saturating_sub(before));
    };
    let (written, out_path, added, source_sha) = if a.add {
        let (w, rec, sha) = convert_and_add(ctx, a, vm, &output, &path, &content, &v, disk, &bar, &progress)?;
        (w, None, Some(rec), sha)
    } else {
        let out = a.output.as_deref().ok_or_else(|| invalid("-o OUT or --add is required"))?;
        bar.start(disk.size(), "converting");
        let w = write_file(ctx, disk, &output, out, a.force, &input_files(&path, &image.info), &progress)?;
        bar.finish();
        (w, Some(out.display().to_string()), None, None)
    };
    let report = Report {
        source: path.display().to_string(),
        source_sha256: source_sha,
        vm: vm.to_string(),
        format: output.format(),
        subformat: output.subformat(),
        verdict: v,
        forced: a.force,
        output: out_path,
        written,
        added,
    };
    if ctx.cli.json {
        output::json(&report)?;
    } else if !ctx.cli.quiet {
        let to = match (&report.added, &report.output) {
            (Some(rec), _) => format!("added as {}", rec.path),
            (None, Some(o)) => o.clone(),
            (None, None) => String::new(),
        };
        line(format_args!("Converted {} to {} for {vm}: {to}", report.source, output))?;
        line(format_args!("  boots on {vm}: {}", report.verdict.summary))?;
        line(format_args!(
            "  {} of guest data, file {}",
            crate::output::size(Some(report.written.data_bytes)),
            crate::output::size(Some(report.written.file_size))
        ))?;
    }
    Ok(Outcome::Clean)
}

/// The output the flags ask for, or the one `vm` runs.
fn output_of(a: &ConvertArgs, vm: Vm) -> Result<Output> {
    let format = match &a.output_format {
        Some(f) => Format::ALL
            .into_iter()
            .filter(|x| *x != Format::Iso)
            .find(|x| x.name().eq_ignore_ascii_case(f) || x.qemu_name().eq_ignore_ascii_case(f))
            .ok_or_else(|| {
                invalid(format!("-O {f}: vmrepo writes raw, qcow2, vmdk, vdi, vhd (vpc) and vhdx"))
            })?,
        None => match default_output(vm) {
            Some(o) if a.subformat.is_none() && a.compress.is_none() && a.cluster_size.is_none() => {
                return Ok(o);
            }
            Some(o) => o.format(),
            None => {
                return Err(invalid(format!(
                    "{vm} is not in the table of VM software: name a format with -O"
                ))
                .into());
            }
        },
    };
    let mut out = match default_output(vm).filter(|o| o.format() == format) {
        Some(o) => o,
        None => Output::default_for(format).ok_or_else(|| invalid("vmrepo does not write ISO images"))?,
    };
    if let Some(s) = &a.subformat {
        out = match (format, s.to_ascii_lowercase().as_str()) {
            (Format::Vmdk, "monolithicsparse") => Output::Vmdk(VmdkSubformat::MonolithicSparse),
            (Format::Vmdk, "streamoptimized") => Output::Vmdk(VmdkSubformat::StreamOptimized),
            (Format::Vdi, "fixed" | "static") => Output::Vdi { fixed: true },
            (Format::Vdi, "dynamic") => Output::Vdi { fixed: false },
            (Format::Vhd, "fixed") => Output::Vhd { fixed: true },
            (Format::Vhd, "dynamic") => Output::Vhd { fixed: false },
            _ => {
                return Err(invalid(format!(
                    "--subformat {s} is not one of {}: vmdk takes monolithicSparse or streamOptimized, \
                     vdi and vhd take dynamic or fixed",
                    format.name()
                ))
                .into());
            }
        };
    }
    if a.compress.is_some() || a.cluster_size.is_some() {
        let Output::Qcow2 { mut cluster_size, mut compression } = out else {
            return Err(invalid("--compress and --cluster-size are qcow2's (-O qcow2)").into());
        };
        if let Some(c) = &a.compress {
            compression = Some(match c.to_ascii_lowercase().as_str() {
                "zlib" | "deflate" => Compression::Zlib,
                "zstd" => Compression::Zstd,
                _ => return Err(invalid(format!("--compress {c}: zlib or zstd")).into()),
            });
        }
        if let Some(s) = &a.cluster_size {
            cluster_size =
                parse_size(s).ok_or_else(|| invalid(format!("--cluster-size {s}: a size like 64k")))?;
        }
        out = Output::Qcow2 { cluster_size, compression };
    }
    out.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(out)
}

/// `65536`, `64k`, `2M`.
fn parse_size(s: &str) -> Option<u32> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1024u32),
        (i, 'm' | 'M') => (&s[..i], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u32>().ok()?.checked_mul(mult)
}

/// Writes `disk` as `output` to `out`: a new file under a temporary name,
/// renamed once complete; never one of the image's own files.
fn write_file(
    ctx: &Ctx<'_>,
    disk: &dyn vmrepo_format::Disk,
    output: &Output,
    out: &Path,
    force: bool,
    inputs: &[PathBuf],
    progress: &dyn Fn(u64),
) -> Result<Written> {
    match crate::outfile::Target::choose(out, force, inputs)? {
        crate::outfile::Target::Device(_) => Err(invalid(format!(
            "{}: convert writes a file (its tables are written after the data), not a device or a pipe; \
             `vmrepo cat` writes a raw stream",
            out.display()
        ))
        .into()),
        crate::outfile::Target::New(tmp) => {
            let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
            let written = vmrepo_format::write::write_named(
                disk,
                output,
                tmp.file(),
                name.as_deref(),
                progress,
                ctx.cancel,
            )
            .map_err(|e| interrupted_or(ctx, e))
            .with_context(|| format!("writing {}", out.display()))?;
            if ctx.cancel.load(Ordering::Relaxed) {
                return Err(vmrepo_repo::Error::interrupted().into());
            }
            tmp.persist()?;
            Ok(written)
        }
    }
}

/// Converts into a temporary file inside the repository, then imports it
/// under the source's name with the new extension (and `--detail`), its
/// description saying where it came from and the verdict.
#[allow(clippy::too_many_arguments)]
fn convert_and_add(
    ctx: &Ctx<'_>,
    a: &ConvertArgs,
    vm: Vm,
    output: &Output,
    path: &Path,
    content: &Content,
    v: &BootVerdict,
    disk: &dyn vmrepo_format::Disk,
    bar: &Bar,
    progress: &dyn Fn(u64),
) -> Result<(Written, vmrepo_repo::ImageRecord, Option<String>)> {
    let mut catalog = super::open_catalog(ctx)?;
    let (source_name, source_sha) = source_identity(&catalog, &a.image.image, path);
    let name = converted_name(source_name.as_ref(), content, output, a.detail.as_deref())?;
    let sha = match source_sha {
        Some(s) => s,
        None => sha256_of(path, ctx)?,
    };
    // In the repository's own folder, so that the import links it in; a
    // killed run's file is removed by the next.
    let tmp = crate::outfile::TempOut::beside(catalog.repo().meta_dir().join("convert"))?;
    bar.start(disk.size(), "converting");
    let file_name = name.to_string();
    let written =
        vmrepo_format::write::write_named(disk, output, tmp.file(), Some(&file_name), progress, ctx.cancel)
            .map_err(|e| interrupted_or(ctx, e))
            .with_context(|| format!("converting {}", path.display()))?;
    bar.finish();
    if ctx.cancel.load(Ordering::Relaxed) {
        return Err(vmrepo_repo::Error::interrupted().into());
    }
    let converted = vmrepo_repo::content::read(tmp.path())?;
    let source_label = source_name.map_or_else(|| path.display().to_string(), |n| n.to_string());
    let notes = description_notes(&source_label, &sha, output, v, a.force);
    let outcome = vmrepo_repo::add(
        &mut catalog,
        vmrepo_repo::AddRequest {
            source: tmp.path(),
            vm,
            name,
            facts: vmrepo_repo::Facts::default(),
            notes: Some(notes),
            replace: a.replace,
            move_source: true,
            content: Some(converted),
            force: a.force,
            prehashed: None,
            progress: bar,
            cancel: ctx.cancel,
        },
    )?;
    // The temporary file was linked in: its name is gone or harmless; drop removes it.
    drop(tmp);
    Ok((written, outcome.image, Some(sha)))
}

/// The source's convention name and SHA-256, from the catalog when it is
/// a cataloged image, else its name parsed from the file name.
fn source_identity(
    catalog: &vmrepo_repo::Catalog,
    spec: &str,
    path: &Path,
) -> (Option<ImageName>, Option<String>) {
    if !Path::new(spec).exists()
        && let Ok(rec) = catalog.resolve(spec)
    {
        return (ImageName::parse(&rec.name).ok(), rec.sha256);
    }
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    (ImageName::parse_file(&file).ok(), None)
}

/// The converted image's name: the source's fields with the new format's
/// extension and `detail`; without a source name, the fields inspection
/// reads from the guest.
fn converted_name(
    source: Option<&ImageName>,
    content: &Content,
    output: &Output,
    detail: Option<&str>,
) -> Result<ImageName> {
    let ext = Extension::from_user(output.format().extension())?;
    let Some(n) = source else {
        // Named as the source would be, then given the new format's extension.
        let fields =
            vmrepo_repo::naming::NameFields { detail: detail.map(str::to_string), ..Default::default() };
        let info = vmrepo_repo::naming::SourceInfo {
            path: &content.entry,
            is_folder: false,
            content: Some(content),
            force: false,
        };
        let named = vmrepo_repo::naming::build_name(&fields, Some(&info)).map_err(|e| {
            anyhow::Error::from(e)
                .context("the source has no convention name; naming the result from the guest")
        })?;
        return Ok(named.with_ext(Some(ext))?);
    };
    let detail = match detail {
        Some(d) => Some(Detail::parse(d)?),
        None => n.detail().cloned(),
    };
    Ok(ImageName::new(NameParts { detail, ext: Some(ext), ..n.parts() })?)
}

/// A write stopped by a signal is an interruption (exit 130), not an I/O error.
fn interrupted_or(ctx: &Ctx<'_>, e: vmrepo_format::Error) -> anyhow::Error {
    if ctx.cancel.load(Ordering::Relaxed) { vmrepo_repo::Error::interrupted().into() } else { e.into() }
}

/// The SHA-256 of the image file at `path`.
fn sha256_of(path: &Path, ctx: &Ctx<'_>) -> Result<String> {
    let f = vmrepo_format::source::open_file(path)?;
    let d =
        hash_file(Endpoint { file: &f, path }, None, Want { md5: false, sha256: true }, &|_| {}, ctx.cancel)?;
    Ok(d.sha256.map(|s| vmrepo_repo::checksum::hex(&s)).unwrap_or_default())
}
