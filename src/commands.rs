//! One function per command: turn flags into library calls, print the result.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use vmrepo_name::{Detail, Extension, ImageName, Isa, MaxSize, NameParts, Os, StarLib, Vm, WordSize};
use vmrepo_repo::{
    Catalog, Description, ErrorKind, Facts, ImageKind, ImageRecord, NoProgress, Query, Repository, Severity,
    VerifyOptions,
};

use crate::Outcome;
use crate::args::{AddArgs, Cli, Command, NameCommand, NameFields, VerifyArgs};
use crate::output::{self, Table, line, or_dash, size};
use crate::ui::Bar;

/// Extensions taken over from the source file when `--ext` is not given.
const KNOWN_EXTENSIONS: [&str; 8] = ["img", "raw", "iso", "qcow2", "vmdk", "vdi", "vhd", "vhdx"];
/// The largest notes file read.
const MAX_NOTES: u64 = 256 * 1024;

pub(crate) struct Ctx<'a> {
    pub cli: &'a Cli,
    pub cancel: &'a AtomicBool,
}

pub fn run(cli: Cli, cancel: &AtomicBool) -> Result<Outcome> {
    let ctx = Ctx { cli: &cli, cancel };
    match &cli.command {
        Command::Init { dir } => init(&ctx, dir.as_deref()),
        Command::Name(NameCommand::Check { names }) => name_check(&ctx, names),
        Command::Name(NameCommand::Format { fields, folder }) => name_format(&ctx, fields, *folder),
        Command::Add(a) => add(&ctx, a),
        Command::Verify(v) => verify(&ctx, v),
        Command::Find { exprs } => find(&ctx, exprs),
        Command::List => find(&ctx, &[]),
        Command::Show { name } => show(&ctx, name),
        Command::Inventory => inventory(&ctx),
        Command::Lint => lint(&ctx),
        Command::Rm { name } => rm(&ctx, name),
        Command::Mv { from, to, force } => mv(&ctx, from, to, *force),
        Command::Reindex => reindex(&ctx),
        Command::Demo { dir } => demo(&ctx, dir.as_deref()),
        Command::Info(a) => crate::image::info(&ctx, a),
        Command::Map(a) => crate::image::map(&ctx, a),
        Command::Cat { image, output, force } => crate::image::cat(&ctx, image, output.as_deref(), *force),
        Command::Check(a) => crate::image::check(&ctx, a),
        Command::Inspect { image, max_size } => crate::image::inspect(&ctx, image, max_size.as_deref()),
    }
}

fn open_repo(ctx: &Ctx<'_>) -> Result<Repository> {
    // A wrong setting is said at once, not when a lock is first waited for.
    vmrepo_repo::lock::lock_wait()?;
    let repo = match &ctx.cli.repo {
        Some(dir) => Repository::open(dir)?,
        None => Repository::discover(&std::env::current_dir().context("cannot read the current folder")?)?,
    };
    Ok(match &ctx.cli.index {
        Some(p) => repo.with_index_path(p.clone()),
        None => repo,
    })
}

pub(crate) fn open_catalog(ctx: &Ctx<'_>) -> Result<Catalog> {
    let catalog = Catalog::open(open_repo(ctx)?, ctx.cancel)?;
    Ok(catalog)
}

fn init(ctx: &Ctx<'_>, dir: Option<&Path>) -> Result<Outcome> {
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

fn name_check(ctx: &Ctx<'_>, names: &[String]) -> Result<Outcome> {
    let mut bad = 0;
    let mut results = Vec::new();
    for n in names {
        let errors = ImageName::check(n);
        if !errors.is_empty() {
            bad += 1;
        }
        if ctx.cli.json {
            let parsed = ImageName::parse(n).ok();
            results.push(serde_json::json!({
                "name": n,
                "valid": errors.is_empty(),
                "fields": parsed.as_ref().map(name_json),
                "errors": errors.iter().map(|e| serde_json::json!({
                    "field": e.field().as_str(), "value": e.value(), "problem": e.problem(),
                })).collect::<Vec<_>>(),
            }));
        } else if errors.is_empty() {
            if !ctx.cli.quiet {
                line(format_args!("{n}: ok"))?;
            }
        } else {
            for e in &errors {
                line(format_args!("{n}: {e}"))?;
            }
        }
    }
    if ctx.cli.json {
        output::json(&results)?;
    }
    Ok(if bad > 0 { Outcome::Problems } else { Outcome::Clean })
}

fn name_json(n: &ImageName) -> serde_json::Value {
    serde_json::json!({
        "stem": n.stem(),
        "os": n.os().to_string(),
        "osinfo": n.os().osinfo_id(),
        "arch": n.isa().as_str(),
        "bits": n.word_size().bits(),
        "lib": n.lib().as_str(),
        "maxsize": n.max_size().as_str(),
        "maxsize_bytes": n.max_size().bytes(),
        "detail": n.detail().map(|d| d.as_str()),
        "ext": n.ext().map(|e| e.as_str()),
    })
}

fn name_format(ctx: &Ctx<'_>, fields: &NameFields, folder: bool) -> Result<Outcome> {
    let name = build_name(fields, None)?;
    let name = if folder { name.with_ext(None)? } else { name };
    if ctx.cli.json {
        output::json(&serde_json::json!({ "name": name.to_string(), "fields": name_json(&name) }))?;
    } else {
        line(&name)?;
    }
    Ok(Outcome::Clean)
}

/// What is known of the file being named.
struct SourceInfo<'a> {
    path: &'a Path,
    is_folder: bool,
    /// What the format layer found, if it could read the file.
    content: Option<&'a vmrepo_repo::content::Content>,
    force: bool,
}

fn build_name(f: &NameFields, source: Option<&SourceInfo<'_>>) -> Result<ImageName> {
    let guest = source.and_then(|s| s.content).and_then(|c| c.guest.as_ref());
    let missing = |flag: &str, what: &str, why: &str| -> anyhow::Error {
        let mut msg = format!("{flag} is required: {what}");
        if guest.is_some() {
            msg.push_str(&format!(" ({why})"));
        }
        vmrepo_repo::Error::new(ErrorKind::InvalidInput, msg).into()
    };
    let os = match (&f.os, guest.and_then(|g| g.os.as_ref())) {
        (Some(o), _) => Os::from_user(o)?,
        (None, Some(info)) => match &info.token {
            Some(t) => {
                tracing::info!("--os {t}: from {}", info.source);
                Os::from_user(t)?
            }
            None => {
                return Err(missing(
                    "--os",
                    "the operating system, like sl5.3",
                    &format!("the guest is {}, which no name token stands for", info.product_name),
                ));
            }
        },
        (None, None) => {
            return Err(missing(
                "--os",
                "the operating system, like sl5.3",
                "the guest's release files do not say",
            ));
        }
    };
    let arch = guest.and_then(|g| g.arch.as_ref());
    let (isa, implied) = match (&f.arch, arch) {
        (Some(a), _) => Isa::from_user(a)?,
        (None, Some(a)) => {
            tracing::info!("--arch {} --bits {}: from {}", a.isa, a.bits, a.from);
            (Isa::parse(&a.isa)?, None)
        }
        (None, None) => {
            return Err(missing(
                "--arch",
                "the instruction set, like x86",
                "no ELF binary of the guest could be read",
            ));
        }
    };
    let word_size = match (f.bits, implied) {
        (Some(b), Some(i)) if b != i.bits() => {
            return Err(vmrepo_repo::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "--bits {b} contradicts --arch {}, which is {}-bit",
                    f.arch.as_deref().unwrap_or(""),
                    i.bits()
                ),
            )
            .into());
        }
        (Some(b), _) => WordSize::new(b)?,
        (None, Some(i)) => i,
        (None, None) => match arch {
            Some(a) => WordSize::new(a.bits)?,
            None => {
                return Err(missing(
                    "--bits",
                    "the word size, 32 or 64",
                    "no ELF binary of the guest could be read",
                ));
            }
        },
    };
    let lib = match (&f.lib, guest) {
        (Some(l), _) => StarLib::from_user(l).map_err(|e| {
            // A link (pro, new, dev) in this guest: say which version it is.
            let target =
                guest.and_then(|g| g.star.symbolic.iter().find(|(link, _)| link.eq_ignore_ascii_case(l)));
            match target {
                Some((link, to)) => {
                    let version = to.trim_end_matches('/').rsplit('/').next().unwrap_or(to);
                    let err = vmrepo_repo::Error::new(
                        ErrorKind::InvalidInput,
                        format!("{e}; in this image {link} points to {version}: --lib {version}"),
                    );
                    anyhow::Error::from(err)
                }
                None => anyhow::Error::from(e),
            }
        })?,
        (None, Some(g)) => match g.star.libraries.as_slice() {
            [one] => {
                tracing::info!("--lib {}: from {}", one.name, one.path);
                StarLib::from_user(&one.name)?
            }
            [] => {
                return Err(missing(
                    "--lib",
                    "the STAR library, like sl08e",
                    "the guest holds no STAR library",
                ));
            }
            many => {
                let names: Vec<&str> = many.iter().map(|l| l.name.as_str()).collect();
                return Err(missing(
                    "--lib",
                    "the STAR library, like sl08e",
                    &format!("the guest holds several: {}", names.join(", ")),
                ));
            }
        },
        (None, None) => return Err(missing("--lib", "the STAR library, like sl08e", "")),
    };
    let max_size = match (&f.max_size, source.and_then(|s| s.content)) {
        (Some(m), _) => MaxSize::from_user(m)?,
        // The virtual size is the size the image may grow to.
        (None, Some(c)) => c.max_size()?,
        _ => {
            return Err(vmrepo_repo::Error::new(
                ErrorKind::InvalidInput,
                "--max-size is required: the maximum size, like 8GB",
            )
            .into());
        }
    };
    let detail = f.detail.as_deref().map(Detail::parse).transpose()?;
    let ext = match (source, &f.ext) {
        (Some(s), _) if s.is_folder => None,
        (Some(s), Some(e)) => {
            let ext = Extension::from_user(e)?;
            if let (Some(c), false) = (s.content, s.force) {
                vmrepo_repo::content::check_extension(c, &ext)?;
            }
            Some(ext)
        }
        (None, Some(e)) => Some(Extension::from_user(e)?),
        (Some(s), None) => match s.content {
            // The format decides, whatever the file was called.
            Some(c) => Some(Extension::parse(c.extension())?),
            None => Some(
                s.path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase)
                    .filter(|e| KNOWN_EXTENSIONS.contains(&e.as_str()))
                    .map(|e| Extension::parse(&e))
                    .transpose()?
                    .unwrap_or_else(Extension::raw),
            ),
        },
        (None, None) => Some(Extension::raw()),
    };
    Ok(ImageName::new(NameParts { os, isa, word_size, lib, max_size, detail, ext })?)
}

fn add(ctx: &Ctx<'_>, a: &AddArgs) -> Result<Outcome> {
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
    let name = build_name(&a.fields, Some(&info))?;
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
fn source_path(given: &Path, move_source: bool) -> Result<PathBuf> {
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

fn read_small(p: &Path, cap: u64) -> Result<Vec<u8>> {
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

fn verify(ctx: &Ctx<'_>, v: &VerifyArgs) -> Result<Outcome> {
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

fn find(ctx: &Ctx<'_>, exprs: &[String]) -> Result<Outcome> {
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

fn show(ctx: &Ctx<'_>, spec: &str) -> Result<Outcome> {
    let catalog = open_catalog(ctx)?;
    let rec = catalog.resolve(spec)?;
    let dir = catalog.repo().vm_root().join(&rec.folder);
    let sidecars = vmrepo_repo::layout::Sidecars::of(&dir, &rec.file, &rec.name, rec.image_kind());
    let description = vmrepo_repo::catalog::read_capped(
        &sidecars.description,
        vmrepo_repo::description::MAX_DESCRIPTION_FILE,
    )
    .ok()
    .and_then(|b| Description::parse(&b).ok());
    let (facts, problems) = description.as_ref().map(Description::facts).unwrap_or_default();
    // What is known of an image whose file is gone is shown, and the exit
    // code says it is gone.
    let outcome = if rec.image_kind() == ImageKind::Missing {
        eprintln!("vmrepo: {}/{}: the image is missing; only its sidecars remain", rec.vm, rec.file);
        Outcome::Missing
    } else {
        Outcome::Clean
    };
    if ctx.cli.json {
        output::json(&serde_json::json!({
            "image": rec,
            "description": facts,
            "description_problems": problems,
            "notes": description.as_ref().and_then(Description::notes),
        }))?;
        return Ok(outcome);
    }
    print_record(&rec, &facts)?;
    for p in &problems {
        line(format_args!("  ! {}.txt line {}: {}: {}", rec.name, p.line, p.key, p.problem))?;
    }
    if let Some(notes) = description.as_ref().and_then(Description::notes).filter(|n| !n.trim().is_empty()) {
        line("Notes:")?;
        for l in notes.lines() {
            line(format_args!("  {l}"))?;
        }
    }
    Ok(outcome)
}

fn print_record(r: &ImageRecord, f: &Facts) -> Result<()> {
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

fn inventory(ctx: &Ctx<'_>) -> Result<Outcome> {
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

fn lint(ctx: &Ctx<'_>) -> Result<Outcome> {
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

fn rm(ctx: &Ctx<'_>, spec: &str) -> Result<Outcome> {
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

fn mv(ctx: &Ctx<'_>, from: &str, to: &str, force: bool) -> Result<Outcome> {
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

fn reindex(ctx: &Ctx<'_>) -> Result<Outcome> {
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

/// Builds a small raw disk: an MBR with one Linux partition and a few sectors
/// of text, the rest a hole.
fn demo_disk(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    const SIZE: u64 = 8 << 20;
    const SECTORS: u32 = (SIZE / 512) as u32;
    let f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.set_len(SIZE)?;
    let mut mbr = [0u8; 512];
    // One partition entry at 446: type 0x83 (Linux), LBA 2048 to the end.
    let entry = &mut mbr[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&(SECTORS - 2048).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    f.write_all_at(&mbr, 0)?;
    f.write_all_at(b"vmrepo demonstration disk: STAR SL08e on Scientific Linux 5.3\n", 2048 * 512)?;
    f.sync_all()?;
    Ok(())
}

fn demo(ctx: &Ctx<'_>, dir: Option<&Path>) -> Result<Outcome> {
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("vmrepo-demo"));
    let (repo, _) = Repository::init(&dir)?;
    let mut catalog = Catalog::open(repo, ctx.cancel)?;
    let name = ImageName::parse("sl5.3_x86_64_sl08e_8MB_demo.img")?;
    let say = |s: String| -> Result<()> {
        if !ctx.cli.quiet && !ctx.cli.json {
            line(s)?;
        }
        Ok(())
    };
    say(format!("Demonstration repository: {}", catalog.repo().root().display()))?;
    if catalog.resolve(&format!("kvm/{name}")).is_err() {
        let tmp = catalog.repo().meta_dir().join("demo-disk.img");
        demo_disk(&tmp)?;
        let bar = Bar::new(ctx.cli.quiet || ctx.cli.json);
        let result = vmrepo_repo::add(
            &mut catalog,
            vmrepo_repo::AddRequest {
                source: &tmp,
                vm: Vm::Kvm,
                name: name.clone(),
                facts: Facts::default(),
                notes: Some(
                    "A demonstration image made by `vmrepo demo`: an MBR and one partition, mostly empty."
                        .into(),
                ),
                replace: false,
                move_source: false,
                content: vmrepo_repo::content::read(&tmp).ok(),
                force: false,
                progress: &bar,
                cancel: ctx.cancel,
            },
        );
        let _ = std::fs::remove_file(&tmp);
        let out = result?;
        say(format!(
            "$ vmrepo add demo-disk.img --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --detail demo\nAdded {}",
            out.image.path
        ))?;
    }
    let report = vmrepo_repo::verify(
        &catalog,
        &VerifyOptions {
            names: Vec::new(),
            quick: false,
            md5: true,
            jobs: 2,
            progress: &NoProgress,
            cancel: ctx.cancel,
        },
    )?;
    say(format!(
        "$ vmrepo verify --md5\nverified {} image(s): {} ok, {} with problems",
        report.images, report.ok, report.failed
    ))?;
    let images = catalog.find(&Query::all())?;
    if ctx.cli.json {
        output::json(
            &serde_json::json!({ "root": catalog.repo().root(), "images": images, "verify": report }),
        )?;
    } else if !ctx.cli.quiet {
        line("$ vmrepo list")?;
        for i in &images {
            line(format_args!("{}  {}  {}  {}", i.vm, i.file, size(i.size), i.maxsize))?;
        }
        line(format_args!(
            "\nTry: cd {} && vmrepo show {}   (or md5sum -c in vm/kvm/)",
            catalog.repo().root().display(),
            name.stem()
        ))?;
    }
    Ok(if report.failed > 0 { Outcome::Problems } else { Outcome::Clean })
}
