//! `vmrepo key generate` and `vmrepo publish`: the signed catalog and the
//! published tree; `vmrepo trust` and `vmrepo pull`: the keys a repository
//! trusts and fetching from a published tree (the library is vmrepo_dist;
//! docs/distribution.md).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmrepo_dist::PullProgress;
use vmrepo_dist::key::{self, PASSWORD_ENV};
use vmrepo_dist::publish::{self, PublishOptions};
use vmrepo_dist::pull::{PullOptions, Select};
use vmrepo_dist::trust;
use vmrepo_repo::Query;

use super::{Ctx, open_catalog, open_repo};
use crate::Outcome;
use crate::args::{MirrorArgs, PublishArgs, PullArgs};
use crate::output::{self, line};

pub(crate) fn key_generate(
    ctx: &Ctx<'_>,
    dir: Option<&std::path::Path>,
    name: &str,
    openpgp: bool,
    rsa: bool,
) -> Result<Outcome> {
    let dir = dir.unwrap_or(std::path::Path::new("."));
    let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    if rsa {
        // Refused before anything is written when one of its files exists.
        let (secret, public) = vmrepo_dist::rsasig::files(dir, name);
        for p in [secret, public] {
            if std::fs::symlink_metadata(&p).is_ok() {
                return Err(vmrepo_repo::Error::new(
                    vmrepo_repo::ErrorKind::AlreadyExists,
                    format!("{}: already exists", p.display()),
                )
                .into());
            }
        }
    }
    if openpgp {
        // Refused before anything is written when one of its files exists.
        for p in vmrepo_dist::openpgp::key_files(dir, name) {
            if std::fs::symlink_metadata(&p).is_ok() {
                return Err(vmrepo_repo::Error::new(
                    vmrepo_repo::ErrorKind::AlreadyExists,
                    format!("{}: already exists", p.display()),
                )
                .into());
            }
        }
    }
    let k = key::generate_key(dir, name, password.clone())?;
    let pgp = if openpgp {
        match vmrepo_dist::openpgp::generate(dir, name, password) {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = std::fs::remove_file(&k.secret);
                let _ = std::fs::remove_file(&k.public);
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let rsa = if rsa {
        match vmrepo_dist::rsasig::generate(dir, name) {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = std::fs::remove_file(&k.secret);
                let _ = std::fs::remove_file(&k.public);
                if pgp.is_some() {
                    for p in vmrepo_dist::openpgp::key_files(dir, name) {
                        let _ = std::fs::remove_file(p);
                    }
                }
                return Err(e.into());
            }
        }
    } else {
        None
    };
    if ctx.cli.json {
        output::json(&serde_json::json!({
            "secret_key": k.secret,
            "public_key_file": k.public,
            "public_key": k.public_line,
            "key_id": k.key_id,
            "encrypted": k.encrypted,
            "openpgp": pgp,
            "rsa": rsa,
        }))?;
    } else {
        line(k.public.display())?;
        line(&k.public_line)?;
        if !ctx.cli.quiet {
            let lock = if k.encrypted {
                format!("encrypted with the password in {PASSWORD_ENV}")
            } else {
                format!("without a password (set {PASSWORD_ENV} to encrypt it)")
            };
            eprintln!(
                "secret key {} (mode 0600, {lock}); give sites {} and check its key id {}",
                k.secret.display(),
                k.public.display(),
                k.key_id
            );
        }
        if let Some(g) = &rsa {
            line(g.public.display())?;
            if !ctx.cli.quiet {
                eprintln!(
                    "RSA secret key {} ({} bits, mode 0600, unencrypted): it signs keys/authorized_keys (--keys-rsa-key); images check with {}",
                    g.secret.display(),
                    g.bits,
                    g.public.display()
                );
            }
        }
        if let Some(g) = &pgp {
            line(g.keyring.display())?;
            line(&g.fingerprint)?;
            if !ctx.cli.quiet {
                eprintln!(
                    "OpenPGP secret key {} (mode 0600); give sites {} (or the keyring {}) and check its fingerprint {}",
                    g.secret.display(),
                    g.public_armored.display(),
                    g.keyring.display(),
                    g.fingerprint
                );
            }
        }
    }
    Ok(Outcome::Clean)
}

/// The passphrase of an encrypted S/MIME key: the first line of
/// `--smime-key-pass-file` (read as a key is: never a FIFO or /dev/zero),
/// else the environment.
fn smime_password(a: &PublishArgs) -> Result<Option<String>> {
    if let Some(f) = &a.smime_key_pass_file {
        let bytes = key::read_key_file(f, 4096, "the S/MIME key passphrase")?;
        let text = String::from_utf8(bytes).map_err(|_| {
            vmrepo_repo::Error::new(
                vmrepo_repo::ErrorKind::InvalidInput,
                format!("{}: not text", f.display()),
            )
        })?;
        let line = text.lines().next().unwrap_or_default().trim_end_matches('\r').to_string();
        return Ok(Some(line));
    }
    Ok(std::env::var(vmrepo_dist::smime::SMIME_PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
}

pub(crate) fn publish(ctx: &Ctx<'_>, a: &PublishArgs) -> Result<Outcome> {
    let opts = PublishOptions {
        dest: a.dest.clone(),
        query: Query::parse(&a.exprs)?,
        base_url: a.base_url.clone(),
        mirrors: a.mirrors.clone(),
        expires: publish::parse_expires(&a.expires)?,
        key: a.key.clone(),
        key_password: std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
        smime: a.smime_cert.clone().zip(a.smime_key.clone()),
        smime_password: smime_password(a)?,
        openpgp_key: a.openpgp_key.clone(),
        keys_rsa_key: a.keys_rsa_key.clone(),
    };
    let catalog = open_catalog(ctx)?;
    let report = publish::publish(&catalog, &opts, ctx.cancel)?;
    if !ctx.cli.quiet {
        for l in &report.left_out {
            eprintln!("vmrepo: {}: left out: {}", l.path, l.reason);
        }
    }
    if ctx.cli.json {
        output::json(&report)?;
    } else if !ctx.cli.quiet {
        line(format_args!(
            "published {} images to {} (catalog serial {}, expires {}): {} copied, {} linked, {} already there",
            report.images,
            report.dest.display(),
            report.serial,
            report.expires,
            report.copied,
            report.linked,
            report.skipped
        ))?;
    }
    Ok(Outcome::Clean)
}

pub(crate) fn trust_add(ctx: &Ctx<'_>, keyfile: &std::path::Path, name: Option<&str>) -> Result<Outcome> {
    let k = trust::add(&open_repo(ctx)?, keyfile, name)?;
    if ctx.cli.json {
        output::json(&k)?;
    } else if !ctx.cli.quiet {
        line(format_args!("trusted {} as {:?}", k.key_id, k.name))?;
    }
    Ok(Outcome::Clean)
}

pub(crate) fn trust_list(ctx: &Ctx<'_>) -> Result<Outcome> {
    let keys = trust::list(&open_repo(ctx)?)?;
    if ctx.cli.json {
        output::json(&keys)?;
    } else {
        for k in &keys {
            line(format_args!("{}\t{}\t{}", k.name, k.key_id, k.public_key))?;
        }
        if keys.is_empty() && !ctx.cli.quiet {
            eprintln!("vmrepo: no key is trusted (vmrepo trust add KEYFILE)");
        }
    }
    Ok(Outcome::Clean)
}

pub(crate) fn trust_rm(ctx: &Ctx<'_>, name: &str) -> Result<Outcome> {
    let removed = trust::remove(&open_repo(ctx)?, name)?;
    if ctx.cli.json {
        output::json(&removed)?;
    } else if !ctx.cli.quiet {
        let k = &removed.key;
        line(format_args!("no longer trusted: {} ({})", k.name, k.key_id))?;
        for f in &removed.forgotten_sources {
            line(format_args!(
                "forgot serial {} of {}: its next catalog, signed by a key still trusted, is accepted from any serial",
                f.serial, f.source
            ))?;
        }
    }
    Ok(Outcome::Clean)
}

pub(crate) fn pull(ctx: &Ctx<'_>, a: &PullArgs) -> Result<Outcome> {
    let opts = PullOptions {
        mirrors: a.mirrors.clone(),
        select: Select::parse(&a.exprs)?,
        dry_run: a.dry_run,
        insecure: a.insecure,
        jobs: usize::from(a.jobs),
        tries: a.tries,
        stall: Duration::from_secs(a.stall_timeout),
        ..PullOptions::new(&a.source)
    };
    let mut catalog = open_catalog(ctx)?;
    let bars = Arc::new(PullBars::new(ctx.cli.quiet || ctx.cli.json, ctx.cli.quiet));
    let report = vmrepo_dist::pull(&mut catalog, &opts, ctx.cancel, bars.clone());
    bars.clear();
    let report = report?;
    if report.signer.is_none() && !ctx.cli.quiet {
        eprintln!(
            "vmrepo: warning: {}: the catalog is not signed by a trusted key (--insecure)",
            report.source
        );
    }
    if ctx.cli.json {
        output::json(&report)?;
    } else if !ctx.cli.quiet {
        for i in &report.images {
            line(format_args!("{}\t{}", i.action, i.path))?;
        }
        let signer = report.signer.as_deref().unwrap_or("nobody");
        line(format_args!(
            "catalog serial {} from {} (signed by {signer}, expires {}): {} images selected, {} bytes transferred",
            report.serial,
            report.catalog_from,
            report.expires,
            report.images.len(),
            report.transferred
        ))?;
    }
    Ok(Outcome::Clean)
}

pub(crate) fn mirror(ctx: &Ctx<'_>, a: &MirrorArgs) -> Result<Outcome> {
    let trusted = match &a.key {
        Some(path) => {
            // Never blocking on a FIFO nor reading /dev/zero without end.
            let pk = trust::read_public_key(path)?;
            let name = path.file_stem().map_or("key".into(), |s| s.to_string_lossy().into_owned());
            vec![trust::TrustedKey { name, key_id: key::key_id(&pk), public_key: pk.to_base64(), key: pk }]
        }
        None => trust::list(&open_repo(ctx)?)?,
    };
    let report = vmrepo_dist::mirror::mirror(&a.source, &a.dest, &trusted, ctx.cancel)?;
    if ctx.cli.json {
        output::json(&report)?;
    } else if !ctx.cli.quiet {
        line(format_args!(
            "mirrored catalog serial {} from {} to {} (signed by {}, expires {}): {} images, {} fetched, {} bytes transferred, {} old files removed",
            report.serial,
            report.source,
            report.dest.display(),
            report.signer,
            report.expires,
            report.images,
            report.fetched,
            report.transferred,
            report.removed
        ))?;
    }
    Ok(Outcome::Clean)
}

/// `pull`'s progress on standard error: a bar per download under way and one
/// for the total, drawn only on a terminal and without --quiet or --json;
/// notes (a fail-over) are printed unless --quiet.
struct PullBars {
    multi: MultiProgress,
    total: ProgressBar,
    /// Per slot: its bar and the bytes it holds.
    bars: Mutex<HashMap<usize, (ProgressBar, u64)>>,
    quiet: bool,
}

impl PullBars {
    fn new(hidden: bool, quiet: bool) -> PullBars {
        let target = if !hidden && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(style(
            "{msg:.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ));
        PullBars { multi, total, bars: Mutex::new(HashMap::new()), quiet }
    }

    fn clear(&self) {
        for (bar, _) in self.bars.lock().unwrap_or_else(PoisonError::into_inner).values() {
            bar.finish_and_clear();
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl PullProgress for PullBars {
    fn begin(&self, images: usize, bytes: u64) {
        self.total.set_length(bytes);
        self.total.set_message(format!("{images} images"));
        self.total.enable_steady_tick(Duration::from_millis(250));
    }
    fn start(&self, slot: usize, path: &str, size: u64) {
        let bar = self.multi.insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(style("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}"));
        bar.set_message(path.rsplit('/').next().unwrap_or(path).to_string());
        self.bars.lock().unwrap_or_else(PoisonError::into_inner).insert(slot, (bar, 0));
    }
    fn position(&self, slot: usize, bytes: u64) {
        let mut bars = self.bars.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((bar, had)) = bars.get_mut(&slot) {
            bar.set_position(bytes);
            if bytes >= *had {
                self.total.inc(bytes - *had);
            } else {
                self.total.set_position(self.total.position().saturating_sub(*had - bytes));
            }
            *had = bytes;
        }
    }
    fn done(&self, slot: usize) {
        if let Some((bar, _)) = self.bars.lock().unwrap_or_else(PoisonError::into_inner).remove(&slot) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
    fn note(&self, message: &str) {
        if !self.quiet {
            self.multi.suspend(|| eprintln!("vmrepo: {message}"));
        }
    }
}
