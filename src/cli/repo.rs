//! The commands that keep the repository: init, add, verify, find, list, show,
//! inventory, lint, rm, mv, reindex.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use vmrepo_name::Vm;
use vmrepo_repo::naming::{SourceInfo, build_name};
use vmrepo_repo::{Catalog, ErrorKind, Facts, ImageRecord, Query, Repository, Severity, VerifyOptions};

use super::{Ctx, open_catalog, open_repo};
use crate::Outcome;
use crate::args::{AddArgs, VerifyArgs};
use crate::output::{self, Table, line, or_dash, size};
use crate::ui::Bar;

/// The largest notes file read.
const MAX_NOTES: u64 = 256 * 1024;

pub(crate) fn init(ctx: &Ctx<'_>, dir: Option<&Path>) -> Result<Outcome> {
    let dir =
        dir.map(Path::to_path_buf).or_else(|| ctx.cli.repo.clone()).unwrap_or_else(|| PathBuf::from("."));
    let (repo, outcome) = Repository::init(&dir)?;
    let repo = match &ctx.cli.index {
        Some(p) => repo.with_index_path(p.clone()),
        None => repo,
    };
    let catalog = Catalog::open(repo, ctx.cancel)?;
    let images = catalog.find(&Query::all())?.len();
    let findings = vmrepo_repo::lint(catalog.repo())?;
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    if ctx.cli.json {
        output::json(&serde_json::json!({
            "root": outcome.root,
            "existed": outcome.existed,
            "adopted": outcome.adopted,
            "created": outcome.created_folders,
            "images": images,
            "lint_errors": errors,
            "index": catalog.repo().index_path(),
        }))?;
    } else if !ctx.cli.quiet {
        let what = if outcome.existed {
            "Already a vmrepo repository"
        } else if outcome.adopted {
            "Adopted the existing tree"
        } else {
            "Initialized an empty vmrepo repository"
        };
        line(format_args!("{what} in {}", outcome.root.display()))?;
        for f in &outcome.created_folders {
            line(format_args!("  created {f}/"))?;
        }
        line(format_args!("{images} image(s) cataloged; index: {}", catalog.repo().index_path().display()))?;
        if let Some(fs) = catalog.repo().network_fs() {
            line(format_args!("The tree is on {fs}: the index is kept on this host, where SQLite is safe."))?;
        }
        if errors > 0 {
            line(format_args!("{errors} problem(s) with the convention: run vmrepo lint"))?;
        }
    }
    Ok(Outcome::Clean)
}

pub(crate) fn add(ctx: &Ctx<'_>, a: &AddArgs) -> Result<Outcome> {
    let vm = Vm::from_user(&a.vm)?;
    let source = source_path(&a.file, a.move_source)?;
    let md = std::fs::metadata(&source).map_err(|e| vmrepo_repo::Error::io("read", &source, e))?;
    let content = match vmrepo_repo::content::read(&source) {
        Ok(c) => Some(c),
        // --force stores what vmrepo cannot read as an image, not what is no image file at all.
        Err(e) if a.force && matches!(e.kind(), ErrorKind::BadImage | ErrorKind::NeedsReferenced) => {
            tracing::warn!("{e}; storing it as it is (--force)");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let info =
        SourceInfo { path: &source, is_folder: md.is_dir(), content: content.as_ref(), force: a.force };
    let name = build_name(&a.fields.to_lib(), Some(&info))?;
    let notes = match (&a.notes, &a.notes_file) {
        (Some(n), _) => Some(n.clone()),
        (None, Some(p)) => {
            let bytes = read_small(p, MAX_NOTES)?;
            Some(String::from_utf8(bytes).map_err(|_| {
                vmrepo_repo::Error::new(ErrorKind::InvalidInput, format!("{} is not UTF-8 text", p.display()))
            })?)
        }
        (None, None) => None,
    };
    let mut catalog = open_catalog(ctx)?;
    let bar = Bar::new(ctx.cli.quiet || ctx.cli.json);
    let outcome = vmrepo_repo::add(
        &mut catalog,
        vmrepo_repo::AddRequest {
            source: &source,
            vm,
            name,
            facts: Facts::default(),
            notes,
            replace: a.replace,
            move_source: a.move_source,
            content,
            force: a.force,
            prehashed: None,
            progress: &bar,
            cancel: ctx.cancel,
        },
    )?;
    if ctx.cli.json {
        output::json(&outcome)?;
    } else if !ctx.cli.quiet {
        let verb = if outcome.replaced { "Replaced" } else { "Added" };
        line(format_args!("{verb} {} ({})", outcome.image.path, size(outcome.image.size)))?;
        let f = &a.fields;
        let filled: Vec<&str> = [
            (f.os.is_none(), "OS"),
            (f.arch.is_none(), "instruction set"),
            (f.arch.is_none() && f.bits.is_none(), "word size"),
            (f.lib.is_none(), "STAR library"),
            (f.max_size.is_none(), "maximum size"),
        ]
        .into_iter()
        .filter_map(|(yes, what)| yes.then_some(what))
        .collect();
        if !filled.is_empty() {
            line(format_args!("  read from the image: {}", filled.join(", ")))?;
        }
        if let Some(sha) = &outcome.image.sha256 {
            line(format_args!("  SHA-256 {sha}"))?;
        }
        if let [md5] = outcome.md5.as_slice() {
            line(format_args!("  MD5     {md5}"))?;
        }
    }
    Ok(Outcome::Clean)
}

/// The file to import: the path given, or, when it is a symbolic link the
/// user named, the file it points to (copied; a link cannot be moved for its
/// target, so `--move` of a link is refused).
pub(crate) fn source_path(given: &Path, move_source: bool) -> Result<PathBuf> {
    let lmd = std::fs::symlink_metadata(given).map_err(|e| vmrepo_repo::Error::io("read", given, e))?;
    if !lmd.file_type().is_symlink() {
        return Ok(given.to_path_buf());
    }
    if move_source {
        bail!(vmrepo_repo::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link: --move moves a file, not a link; give the file it points to, or copy",
                given.display()
            ),
        ));
    }
    Ok(given.canonicalize().map_err(|e| vmrepo_repo::Error::io("follow the link", given, e))?)
}

pub(crate) fn read_small(p: &Path, cap: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    // A FIFO or a device is refused, never waited on.
    let f = vmrepo_repo::fsutil::open_regular(p, true)?;
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf).map_err(|e| vmrepo_repo::Error::io("read", p, e))?;
    if buf.len() as u64 > cap {
        bail!(vmrepo_repo::Error::new(
            ErrorKind::InvalidInput,
            format!("{} is larger than {cap} bytes", p.display())
        ));
    }
    Ok(buf)
}

pub(crate) fn verify(ctx: &Ctx<'_>, v: &VerifyArgs) -> Result<Outcome> {
    let catalog = open_catalog(ctx)?;
    let bar = Bar::new(ctx.cli.quiet || ctx.cli.json);
    let jobs = v.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let report = vmrepo_repo::verify(
        &catalog,
        &VerifyOptions {
            names: v.names.clone(),
            quick: v.quick,
            md5: v.md5,
            jobs,
            progress: &bar,
            cancel: ctx.cancel,
        },
    )?;
    if ctx.cli.json {
        output::json(&report)?;
    } else {
        for r in &report.results {
            for p in &r.problems {
                line(format_args!("{}: {} [{}]", r.path, p.message, p.code))?;
            }
        }
        if !ctx.cli.quiet || report.failed > 0 {
            line(format_args!(
                "verified {} image(s), {} hashed: {} ok, {} unchanged since last verified, {} with problems",
                report.images,
                vmrepo_repo::description::human_bytes(report.bytes),
                report.ok,
                report.unchanged,
                report.failed
            ))?;
        }
    }
    Ok(if report.failed > 0 { Outcome::Problems } else { Outcome::Clean })
}

pub(crate) fn find(ctx: &Ctx<'_>, exprs: &[String]) -> Result<Outcome> {
    let query = Query::parse(exprs)?;
    let catalog = open_catalog(ctx)?;
    if ctx.cli.json {
        // Printed as the index hands the records over, never all in memory.
        output::json_array::<_, anyhow::Error>(|emit| catalog.find_each(&query, |i| emit(i)).map(|_| ()))?;
        return Ok(Outcome::Clean);
    }
    let mut t = Table::new(vec!["VM", "IMAGE", "SIZE", "MAX", "FORMAT", "ADDED"]).right_align(&[2, 3]);
    catalog.find_each(&query, |i| {
        t.row_of([
            i.vm.as_str(),
            &i.file,
            &size(i.size),
            &i.maxsize,
            i.format.as_deref().unwrap_or("-"),
            i.added.as_deref().map_or("-", |a| a.get(..10).unwrap_or(a)),
        ]);
        anyhow::Ok(())
    })?;
    if !t.is_empty() {
        t.print()?;
    } else if !ctx.cli.quiet {
        eprintln!("vmrepo: no image matches");
    }
    Ok(Outcome::Clean)
}

pub(crate) fn show(ctx: &Ctx<'_>, spec: &str) -> Result<Outcome> {
    let catalog = open_catalog(ctx)?;
    let shown = vmrepo_repo::show::show(&catalog, spec)?;
    let rec = &shown.image;
    // What is known of an image whose file is gone is shown, and the exit
    // code says it is gone.
    let outcome = if shown.missing() {
        eprintln!("vmrepo: {}/{}: the image is missing; only its sidecars remain", rec.vm, rec.file);
        Outcome::Missing
    } else {
        Outcome::Clean
    };
    if ctx.cli.json {
        output::json(&shown)?;
        return Ok(outcome);
    }
    print_record(rec, &shown.description)?;
    for p in &shown.description_problems {
        line(format_args!("  ! {}.txt line {}: {}: {}", rec.name, p.line, p.key, p.problem))?;
    }
    if let Some(notes) = shown.notes.as_deref().filter(|n| !n.trim().is_empty()) {
        line("Notes:")?;
        for l in notes.lines() {
            line(format_args!("  {l}"))?;
        }
    }
    Ok(outcome)
}

pub(crate) fn print_record(r: &ImageRecord, f: &Facts) -> Result<()> {
    let rows: Vec<(&str, String)> = vec![
        ("Path", r.path.clone()),
        ("Kind", r.kind.clone()),
        ("VM", r.vm.clone()),
        (
            "Operating system",
            match &r.osinfo {
                Some(id) => format!("{} ({id})", r.os),
                None => r.os.clone(),
            },
        ),
        ("Kernel version", or_dash(r.kernel.as_deref())),
        ("Instruction set", format!("{} {}-bit", r.arch, r.bits)),
        ("STAR library", r.lib.clone()),
        ("Maximum size", format!("{} ({} bytes)", r.maxsize, r.maxsize_bytes)),
        ("Storage", or_dash(r.storage.as_deref())),
        ("Format", or_dash(r.format.as_deref())),
        ("Virtual size", size(r.virtual_size)),
        (
            "Size",
            match r.size {
                Some(s) => format!("{} ({s} bytes, {} allocated)", size(Some(s)), size(r.disk_usage)),
                None => "-".into(),
            },
        ),
        (
            "SHA-256",
            match (&r.sha256, f.sha256.len()) {
                (Some(s), _) => s.clone(),
                (None, n) if n > 1 => format!("{n} parts (see the .txt)"),
                _ => "-".into(),
            },
        ),
        ("MD5", or_dash(r.md5.as_deref())),
        (".checksum", r.checksum.clone()),
        (".txt", r.description.clone()),
        (
            "Added",
            match (&r.added, &r.added_by) {
                (Some(a), Some(b)) => format!("{a} by {b}"),
                (Some(a), None) => a.clone(),
                _ => "-".into(),
            },
        ),
        (
            "Last verified",
            match (&r.verified_at, r.verified_ok) {
                (Some(a), Some(true)) => format!("{a}, ok"),
                (Some(a), _) => format!("{a}, FAILED"),
                _ => "never".into(),
            },
        ),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        line(format_args!("{k:<w$}  {v}"))?;
    }
    Ok(())
}

pub(crate) fn inventory(ctx: &Ctx<'_>) -> Result<Outcome> {
    let catalog = open_catalog(ctx)?;
    let inv = catalog.inventory()?;
    if ctx.cli.json {
        output::json(&inv)?;
        return Ok(Outcome::Clean);
    }
    line(format_args!(
        "{} image(s), {} in files, {} on disk, {} of maximum sizes{}",
        inv.total.images,
        size(Some(inv.total.bytes)),
        size(Some(inv.total.disk_usage)),
        size(Some(inv.total.max_bytes)),
        if inv.missing > 0 { format!("; {} missing (sidecars only)", inv.missing) } else { String::new() }
    ))?;
    for (title, groups) in [("VM", &inv.by_vm), ("OS", &inv.by_os), ("LIB", &inv.by_lib)] {
        if groups.is_empty() {
            continue;
        }
        line("")?;
        let mut t = Table::new(vec![title, "IMAGES", "FILE SIZES", "ON DISK", "MAX SIZES"])
            .right_align(&[1, 2, 3, 4]);
        for g in groups.iter() {
            t.row(vec![
                g.key.clone(),
                g.images.to_string(),
                size(Some(g.bytes)),
                size(Some(g.disk_usage)),
                size(Some(g.max_bytes)),
            ]);
        }
        t.print()?;
    }
    Ok(Outcome::Clean)
}

pub(crate) fn lint(ctx: &Ctx<'_>) -> Result<Outcome> {
    let repo = open_repo(ctx)?;
    // Opening the catalog finishes interrupted imports first, so that they are not reported.
    let catalog = Catalog::open(repo, ctx.cancel)?;
    let findings = vmrepo_repo::lint(catalog.repo())?;
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    if ctx.cli.json {
        output::json(&findings)?;
    } else {
        for f in &findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            line(format_args!("{}: {sev}: {} [{}]", f.path, f.message, f.code))?;
        }
        if !ctx.cli.quiet {
            line(format_args!("{} error(s), {} warning(s)", errors, findings.len() - errors))?;
        }
    }
    Ok(if errors > 0 { Outcome::Problems } else { Outcome::Clean })
}

pub(crate) fn rm(ctx: &Ctx<'_>, spec: &str) -> Result<Outcome> {
    let mut catalog = open_catalog(ctx)?;
    let out = vmrepo_repo::remove(&mut catalog, spec, &Bar::new(ctx.cli.quiet), ctx.cancel)?;
    if ctx.cli.json {
        output::json(&out)?;
    } else if !ctx.cli.quiet {
        for p in &out.removed {
            line(format_args!("removed {p}"))?;
        }
    }
    Ok(Outcome::Clean)
}

pub(crate) fn mv(ctx: &Ctx<'_>, from: &str, to: &str, force: bool) -> Result<Outcome> {
    let mut catalog = open_catalog(ctx)?;
    let bar = Bar::new(ctx.cli.quiet);
    let out = vmrepo_repo::rename(
        &mut catalog,
        vmrepo_repo::RenameRequest { from, to, force, progress: &bar, cancel: ctx.cancel },
    )?;
    if ctx.cli.json {
        output::json(&out)?;
    } else if !ctx.cli.quiet {
        line(format_args!("renamed {} to {}", out.from, out.image.path))?;
    }
    Ok(Outcome::Clean)
}

pub(crate) fn reindex(ctx: &Ctx<'_>) -> Result<Outcome> {
    let mut catalog = open_catalog(ctx)?;
    // Rebuilding a copy in memory would rebuild nothing.
    catalog.require_written()?;
    let stats = catalog.rebuild()?;
    let images = catalog.find(&Query::all())?.len();
    if ctx.cli.json {
        output::json(
            &serde_json::json!({ "images": images, "folders_scanned": stats.folders_scanned, "images_read": stats.images_read }),
        )?;
    } else if !ctx.cli.quiet {
        line(format_args!("index rebuilt: {images} image(s) in {} folder(s)", stats.folders_scanned))?;
    }
    Ok(Outcome::Clean)
}
