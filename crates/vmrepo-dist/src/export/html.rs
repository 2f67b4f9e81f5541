//! `index.html`: a static page of the published images, so that a plain web
//! server is enough to browse them, with `style.css` beside it.
//!
//! It is rendered from `vmrepo serve`'s own templates and style sheet
//! (crates/vmrepo-serve/templates/, `published.html` extending serve's
//! `base.html`; crates/vmrepo-serve/static/style.css), read at build time
//! through askama's `dirs` (crates/vmrepo-dist/askama.toml) and
//! `include_bytes!`: the same markup and style as serve's page without
//! depending on the server crate (axum, tokio), and without a copy. The page
//! has no script; every link is relative, to a file publish wrote.

use std::collections::BTreeSet;

use askama::Template;
use vmrepo_repo::description::human_bytes;
use vmrepo_repo::{Error, ErrorKind, Result};

use super::{Context, OutFile, Stage};
use crate::metalink::encode_path;
use crate::schema::CatalogImage;

/// The page's file name.
pub const PAGE_FILE: &str = "index.html";
/// Its style sheet's file name (serve's, as it is).
pub const STYLE_FILE: &str = "style.css";
/// serve's style sheet.
const STYLE: &[u8] = include_bytes!("../../../vmrepo-serve/static/style.css");

/// What `base.html` reads (serve's `Frame`): here the style sheet beside the page.
struct Frame {
    css: &'static str,
}

#[derive(Template)]
#[template(path = "published.html")]
struct Page<'a> {
    frame: Frame,
    serial: u64,
    generated: &'a str,
    expires: &'a str,
    total: String,
    images: Vec<Row<'a>>,
}

/// One image's row.
struct Row<'a> {
    name: &'a str,
    vm: &'a str,
    file: &'a str,
    href: String,
    os: &'a str,
    arch: &'a str,
    lib: &'a str,
    maxsize: &'a str,
    size: String,
    size_bytes: u64,
    format: &'a str,
    sha256: &'a str,
    /// (label, link) of each file of the image that is in the tree.
    files: Vec<(&'static str, String)>,
}

/// The page and its style sheet, in stage [`Stage::Index`]: written last.
///
/// # Errors
/// The page cannot be rendered.
pub fn render(ctx: &Context<'_>) -> Result<Vec<OutFile>> {
    let doc = ctx.doc;
    let total = doc.images.iter().fold(0u64, |t, i| t.saturating_add(i.size));
    let page = Page {
        frame: Frame { css: STYLE_FILE },
        serial: doc.serial,
        generated: &doc.generated,
        expires: &doc.expires,
        total: human_bytes(total),
        images: doc.images.iter().map(|i| row(i, ctx.files)).collect(),
    };
    let html =
        page.render().map_err(|e| Error::new(ErrorKind::Io, format!("cannot render {PAGE_FILE}: {e}")))?;
    // The style sheet first: the page that names it comes after.
    Ok(vec![
        OutFile { path: STYLE_FILE.into(), bytes: STYLE.to_vec(), stage: Stage::Index },
        OutFile { path: PAGE_FILE.into(), bytes: html.into_bytes(), stage: Stage::Index },
    ])
}

fn row<'a>(i: &'a CatalogImage, placed: &BTreeSet<String>) -> Row<'a> {
    let dir = i.path.rsplit_once('/').map_or("", |(d, _)| d);
    let mut files = vec![("image", encode_path(&i.path))];
    for (label, ext) in [("description", "txt"), ("md5", "checksum")] {
        let p = format!("{dir}/{}.{ext}", i.name);
        if placed.contains(&p) {
            files.push((label, encode_path(&p)));
        }
    }
    if let Some(m) = &i.metalink {
        files.push(("metalink", encode_path(m)));
    }
    Row {
        name: &i.name,
        vm: &i.vm,
        file: &i.file,
        href: encode_path(&i.path),
        os: &i.os,
        arch: &i.arch,
        lib: &i.lib,
        maxsize: &i.maxsize,
        size: human_bytes(i.size),
        size_bytes: i.size,
        format: i.format.as_deref().unwrap_or(""),
        sha256: &i.sha256,
        files,
    }
}
