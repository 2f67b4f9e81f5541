//! `vmrepo context IMAGE --nodes LIST`: a cloud-init seed for each node
//! (vmrepo_site::context). This file reads the flags and the files they
//! name, and prints what was written.

use std::path::Path;

use anyhow::Result;
use vmrepo_repo::{Error, ErrorKind};
use vmrepo_site::context::cloud_config::{Image, Options, Password, SEED_PATH};
use vmrepo_site::context::output::{self, Format};
use vmrepo_site::context::{network, nodes, yaml};

use super::{Ctx, open_catalog};
use crate::Outcome;
use crate::args::{ContextArgs, ContextFormat, PasswordScheme};
use crate::output::{self as out, line};

/// The largest `--user-data` file read.
const MAX_USER_DATA: u64 = 1 << 20;

#[derive(serde::Serialize)]
struct Answer<'a> {
    image: &'a str,
    format: Format,
    output_dir: &'a Path,
    nodes: Vec<output::Seed>,
}

pub(crate) fn context(ctx: &Ctx<'_>, a: &ContextArgs) -> Result<Outcome> {
    let nodes = nodes::parse(&a.nodes)?;
    let (image, repo_root) = image(ctx, &a.image)?;
    if let Some(d) = &a.domain {
        check_domain(d)?;
    }
    check_interface(&a.interface)?;
    let net = match &a.network {
        Some(p) => {
            let t = network::read(p)?;
            network::check(&t, &nodes, &p.display().to_string())?;
            Some(t)
        }
        None => None,
    };
    let keys = if a.keys {
        let root = repo_root.ok_or_else(|| {
            Error::new(
                ErrorKind::NotARepository,
                "--keys takes the keys of a repository: give an image of one",
            )
        })?;
        let keys = vmrepo_site::keys::list(&root)?;
        if keys.is_empty() && !ctx.cli.quiet {
            eprintln!(
                "vmrepo: warning: the repository has no SSH key (vmrepo keys add): nobody can log in by key"
            );
        }
        keys.into_iter().map(|k| k.line).collect()
    } else {
        Vec::new()
    };
    let password = match a.password_scheme {
        None => None,
        Some(scheme) => Some(Password { script: password_script(scheme), seed: seed(ctx, a)? }),
    };
    let admin = match &a.user_data {
        Some(p) => Some(admin_user_data(p)?),
        None => None,
    };
    let opts = Options {
        image,
        domain: a.domain.clone(),
        keys,
        password,
        star_sudo: a.star_sudo,
        admin,
        interface: a.interface.clone(),
    };
    let format = match a.format {
        ContextFormat::Nocloud => Format::NoCloud,
        ContextFormat::Plain => Format::Plain,
        ContextFormat::Ec2 => Format::Ec2,
    };
    let seeds = output::write(&a.output_dir, format, &nodes, &opts, net.as_ref(), a.force)?;
    if ctx.cli.json {
        out::json(&Answer { image: &opts.image.name, format, output_dir: &a.output_dir, nodes: seeds })?;
    } else if !ctx.cli.quiet {
        for s in &seeds {
            for f in &s.files {
                line(format_args!("{}\t{}", s.node, f.path.display()))?;
            }
        }
    }
    Ok(Outcome::Clean)
}

/// The image's name, SHA-256 and STAR library, from the repository (as
/// `vmrepo show` finds it), else from a file's name; and the repository's root.
fn image(ctx: &Ctx<'_>, spec: &str) -> Result<(Image, Option<std::path::PathBuf>)> {
    match open_catalog(ctx) {
        Ok(catalog) => {
            let rec = catalog.resolve(spec)?;
            let lib = vmrepo_name::StarLib::parse(&rec.lib).ok().map(|l| l.to_string());
            let img = Image { name: rec.name, sha256: rec.sha256, lib };
            Ok((img, Some(catalog.repo().root().to_path_buf())))
        }
        Err(e) => {
            let p = Path::new(spec);
            let file = p.file_name().and_then(|f| f.to_str()).filter(|_| p.exists()).ok_or(e)?;
            let name = vmrepo_name::ImageName::parse(file)
                .map_err(|n| Error::new(ErrorKind::InvalidInput, format!("{spec}: {n}")))?;
            Ok((Image { name: name.stem(), sha256: None, lib: Some(name.lib().to_string()) }, None))
        }
    }
}

fn check_domain(d: &str) -> Result<()> {
    let bad = |m: String| Error::new(ErrorKind::InvalidInput, format!("--domain {d:?}: {m}"));
    if d.len() > 253 - 64 {
        return Err(bad("too long for a host name under it".into()).into());
    }
    for label in d.split('.') {
        nodes::check_label(label).map_err(bad)?;
    }
    Ok(())
}

fn check_interface(i: &str) -> Result<()> {
    let ok = !i.is_empty()
        && i.len() <= 15
        && !i.starts_with(['-', '.'])
        && i.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.*?".contains(&b));
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("--interface {i:?}: 1 to 15 of a-z, 0-9, -, _, . and the globs * ?"),
        )
        .into());
    }
    Ok(())
}

/// The admin's `#cloud-config`, parsed; refused with its line when it is not one.
fn admin_user_data(p: &Path) -> Result<yaml::Value> {
    let bytes = vmrepo_dist::key::read_key_file(p, MAX_USER_DATA, "the user-data")?;
    let bad = |line: usize, m: &str| {
        Error::new(ErrorKind::InvalidInput, format!("{} line {line}: {m}", p.display()))
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad(1, "not UTF-8 text"))?;
    let first = text.lines().next().unwrap_or_default();
    if first.trim_end() != "#cloud-config" {
        return Err(bad(1, "not a #cloud-config file (its first line must be #cloud-config)").into());
    }
    let v = yaml::parse(text).map_err(|e| bad(e.line, &e.message))?;
    match v {
        yaml::Value::Map(_) => Ok(v),
        yaml::Value::Null => Ok(yaml::Value::Map(Vec::new())),
        _ => Err(bad(2, "a #cloud-config is a mapping (key: value)").into()),
    }
}

/// `vmrepo password boot-script`'s script, reading the seed at [`SEED_PATH`].
fn password_script(scheme: PasswordScheme) -> String {
    vmrepo_site::boot::password_script(super::site::scheme_of(scheme), SEED_PATH)
}

/// The seed of `--password-seed-file` (its first line), with a warning
/// that user-data is readable by the hypervisor and the metadata service.
fn seed(ctx: &Ctx<'_>, a: &ContextArgs) -> Result<Option<Vec<u8>>> {
    let Some(path) = &a.password_seed_file else { return Ok(None) };
    let seed = super::site::read_seed_file(ctx, path)?;
    if !ctx.cli.quiet {
        eprintln!(
            "vmrepo: warning: the password seed goes into each user-data: whoever reads the seeds, the hypervisor's \
             host or the metadata service can read it; the seed files are written mode 600"
        );
    }
    // What the image's boot script would refuse (a `%`, a NUL, more than
    // 4096 bytes) is refused here, not found at the node's first boot.
    vmrepo_site::password::check_seed(&seed)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{}: {e}", path.display())))?;
    Ok(Some(seed))
}
