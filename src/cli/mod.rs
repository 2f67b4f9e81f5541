//! The commands: one file per family, each turning flags into library calls
//! and printing the result. `repo` keeps the tree (init, add, verify, find,
//! show, inventory, lint, rm, mv, reindex), `name` the naming convention,
//! `image` reads one image file (info, map, cat, check, inspect), `serve` the
//! HTTP service, `token` its write tokens, `dist` the signed catalog and
//! its keys (key generate, publish) and the other side (trust, pull), `site`
//! what makes a started copy a node (password), `keys` the SSH public keys, `context`
//! the nodes' seeds, `convert` an image for another VM software, `demo` the demonstration.

mod context;
mod convert;
mod demo;
mod dist;
mod image;
mod keys;
mod name;
mod repo;
mod serve;
mod site;
mod token;

use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use vmrepo_repo::{Catalog, Repository};

use crate::Outcome;
use crate::args::{Cli, Command, KeyCommand, KeysCommand, NameCommand, TokenCommand, TrustCommand};

pub(crate) struct Ctx<'a> {
    pub cli: &'a Cli,
    pub cancel: &'a AtomicBool,
}

pub fn run(cli: Cli, cancel: &AtomicBool) -> Result<Outcome> {
    let ctx = Ctx { cli: &cli, cancel };
    match &cli.command {
        Command::Init { dir } => repo::init(&ctx, dir.as_deref()),
        Command::Name(NameCommand::Check { names }) => name::name_check(&ctx, names),
        Command::Name(NameCommand::Format { fields, folder }) => name::name_format(&ctx, fields, *folder),
        Command::Add(a) => repo::add(&ctx, a),
        Command::Verify(v) => repo::verify(&ctx, v),
        Command::Find { exprs } => repo::find(&ctx, exprs),
        Command::List => repo::find(&ctx, &[]),
        Command::Show { name } => repo::show(&ctx, name),
        Command::Inventory => repo::inventory(&ctx),
        Command::Lint => repo::lint(&ctx),
        Command::Rm { name } => repo::rm(&ctx, name),
        Command::Mv { from, to, force } => repo::mv(&ctx, from, to, *force),
        Command::Reindex => repo::reindex(&ctx),
        Command::Demo { dir, serve, listen } => {
            let outcome = demo::demo(&ctx, dir.as_deref(), *serve)?;
            if !*serve {
                return Ok(outcome);
            }
            let dir = dir.clone().unwrap_or_else(|| std::path::PathBuf::from("vmrepo-demo"));
            let args = crate::args::ServeArgs {
                listen: listen.clone(),
                read_only: false,
                tls_cert: None,
                tls_key: None,
                header_timeout: None,
                grace: None,
                public_url: None,
                sign_key: None,
                catalog_expires: "7d".into(),
                keys_rsa_key: None,
            };
            serve::serve_repo(&ctx, Repository::open(&dir)?, &args)
        }
        Command::Serve(a) => serve::serve(&ctx, a),
        Command::Token(TokenCommand::Add { name, vms, expires }) => {
            token::add(&ctx, name, vms, expires.as_deref())
        }
        Command::Token(TokenCommand::List) => token::list(&ctx),
        Command::Token(TokenCommand::Revoke { name }) => token::revoke(&ctx, name),
        Command::Key(KeyCommand::Generate { output_dir, name, openpgp, rsa }) => {
            dist::key_generate(&ctx, output_dir.as_deref(), name, *openpgp, *rsa)
        }
        Command::Publish(a) => dist::publish(&ctx, a),
        Command::Trust(TrustCommand::Add { keyfile, name }) => {
            dist::trust_add(&ctx, keyfile, name.as_deref())
        }
        Command::Trust(TrustCommand::List) => dist::trust_list(&ctx),
        Command::Trust(TrustCommand::Rm { name }) => dist::trust_rm(&ctx, name),
        Command::Pull(a) => dist::pull(&ctx, a),
        Command::Mirror(a) => dist::mirror(&ctx, a),
        Command::Password(a) => site::password(&ctx, a),
        Command::Keys(KeysCommand::Add { file, name }) => keys::add(&ctx, file, name.as_deref()),
        Command::Keys(KeysCommand::List) => keys::list(&ctx),
        Command::Keys(KeysCommand::Rm { name }) => keys::rm(&ctx, name),
        Command::Keys(KeysCommand::BootScript(a)) => keys::boot_script(&ctx, a),
        Command::Context(a) => context::context(&ctx, a),
        Command::Convert(a) => convert::convert(&ctx, a),
        Command::Info(a) => image::info(&ctx, a),
        Command::Map(a) => image::map(&ctx, a),
        Command::Cat { image, output, force } => image::cat(&ctx, image, output.as_deref(), *force),
        Command::Check(a) => image::check(&ctx, a),
        Command::Inspect { image, max_size } => image::inspect(&ctx, image, max_size.as_deref()),
    }
}

pub(crate) fn open_repo(ctx: &Ctx<'_>) -> Result<Repository> {
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
