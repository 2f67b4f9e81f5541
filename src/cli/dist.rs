//! `vmrepo key generate` and `vmrepo publish`: the signed catalog and the
//! published tree (the library is vmrepo_dist; docs/distribution.md).

use anyhow::Result;
use vmrepo_dist::key::{self, PASSWORD_ENV};
use vmrepo_dist::publish::{self, PublishOptions};
use vmrepo_repo::Query;

use super::{Ctx, open_catalog};
use crate::Outcome;
use crate::args::PublishArgs;
use crate::output::{self, line};

pub(crate) fn key_generate(ctx: &Ctx<'_>, dir: Option<&std::path::Path>, name: &str) -> Result<Outcome> {
    let dir = dir.unwrap_or(std::path::Path::new("."));
    let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    let k = key::generate_key(dir, name, password)?;
    if ctx.cli.json {
        output::json(&serde_json::json!({
            "secret_key": k.secret,
            "public_key_file": k.public,
            "public_key": k.public_line,
            "key_id": k.key_id,
            "encrypted": k.encrypted,
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
    }
    Ok(Outcome::Clean)
}

pub(crate) fn publish(ctx: &Ctx<'_>, a: &PublishArgs) -> Result<Outcome> {
    let opts = PublishOptions {
        dest: a.dest.clone(),
        query: Query::parse(&a.exprs)?,
        base_url: a.base_url.clone(),
        expires: publish::parse_expires(&a.expires)?,
        key: a.key.clone(),
        key_password: std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
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
