//! simplestreams (the format of Ubuntu's cloud images, read by
//! `sstream-query`, `sstream-mirror`, MAAS, LXD and OpenStack's
//! glance-simplestreams-sync): `streams/v1/index.json` (`index:1.0`)
//! naming one products file, `streams/v1/gov.bnl.star.vmrepo:images.json`
//! (`products:1.0`, datatype `image-downloads`), and with an OpenPGP key the
//! same two clearsigned as `.sjson`, the signed index naming the signed
//! products file (as python-simplestreams' own tools write them).
//!
//! Each image is a product `gov.bnl.star.vmrepo:<VM>:<name>` with one
//! version, named by the time the image was added (`20261130_100000`), so
//! that a mirror fetches an image again only when it was replaced, and one
//! item, named by its format, with `ftype`, `path` (relative to the
//! published folder, the mirror's root), `size`, `sha256` and `md5`.

use jiff::Timestamp;
use std::collections::BTreeMap;

use serde::Serialize;
use vmrepo_repo::{Error, ErrorKind, Result};

use super::{Context, OutFile, Skipped, Stage};
use crate::openpgp;
use crate::schema::CatalogImage;

/// The content id: the STAR experiment's domain (star.bnl.gov) reversed,
/// then the tool and what the stream holds.
pub const CONTENT_ID: &str = "gov.bnl.star.vmrepo:images";
/// Where the index is, relative to the published folder.
pub const INDEX: &str = "streams/v1/index.json";

/// The products file's path, `.json` or `.sjson`.
fn products_path(ext: &str) -> String {
    format!("streams/v1/{CONTENT_ID}.{ext}")
}

/// The unsigned index and products file, and with an OpenPGP key their
/// `.sjson` forms (else a [`Skipped`] saying why they were not written).
///
/// # Errors
/// Encoding or signing fails.
pub fn render(ctx: &Context<'_>, skipped: &mut Vec<Skipped>) -> Result<Vec<OutFile>> {
    let updated = rfc2822(ctx.generated);
    let products: BTreeMap<String, Product<'_>> =
        ctx.doc.images.iter().map(|image| product(image, ctx.generated)).collect();
    let names: Vec<&str> = products.keys().map(String::as_str).collect();
    let products_doc = ProductsDoc {
        content_id: CONTENT_ID,
        datatype: "image-downloads",
        format: "products:1.0",
        products: &products,
        serial: ctx.doc.serial,
        updated: &updated,
    };
    let index_for = |ext: &str| IndexDoc {
        format: "index:1.0",
        index: BTreeMap::from([(
            CONTENT_ID,
            IndexEntry {
                datatype: "image-downloads",
                format: "products:1.0",
                path: products_path(ext),
                products: &names,
                updated: &updated,
            },
        )]),
        updated: &updated,
    };
    let products_json = encode(&products_doc)?;
    let mut files = vec![OutFile {
        path: products_path("json"),
        bytes: products_json.clone().into_bytes(),
        stage: Stage::Signed,
    }];
    let mut index_files = vec![OutFile {
        path: INDEX.into(),
        bytes: encode(&index_for("json"))?.into_bytes(),
        stage: Stage::Index,
    }];
    match &ctx.signers.openpgp {
        Some(signer) => {
            files.push(OutFile {
                path: products_path("sjson"),
                bytes: openpgp::clearsign(signer, &products_json)?.into_bytes(),
                stage: Stage::Signed,
            });
            index_files.push(OutFile {
                path: "streams/v1/index.sjson".into(),
                bytes: openpgp::clearsign(signer, &encode(&index_for("sjson"))?)?.into_bytes(),
                stage: Stage::Index,
            });
        }
        None => skipped.push(Skipped {
            export: "simplestreams .sjson",
            reason: "no OpenPGP key (--openpgp-key): only the unsigned streams/v1/*.json were written".into(),
        }),
    }
    files.extend(index_files);
    Ok(files)
}

// The documents as typed structs, serialized straight to text (a tree of
// `serde_json::Value` for 20,000 products cost more to build and to drop
// than to write). Fields are declared in the order of their names: the
// files have sorted keys, as python-simplestreams writes them.

#[derive(Serialize)]
struct IndexDoc<'a> {
    format: &'static str,
    index: BTreeMap<&'static str, IndexEntry<'a>>,
    updated: &'a str,
}

#[derive(Serialize)]
struct IndexEntry<'a> {
    datatype: &'static str,
    format: &'static str,
    path: String,
    products: &'a [&'a str],
    updated: &'a str,
}

#[derive(Serialize)]
struct ProductsDoc<'a> {
    content_id: &'static str,
    datatype: &'static str,
    format: &'static str,
    products: &'a BTreeMap<String, Product<'a>>,
    serial: u64,
    updated: &'a str,
}

#[derive(Serialize)]
struct Product<'a> {
    arch: String,
    bits: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel: Option<&'a str>,
    lib: &'a str,
    maxsize: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    osinfo: Option<&'a str>,
    release: &'a str,
    release_title: &'a str,
    versions: BTreeMap<String, Version<'a>>,
    vm: &'a str,
}

#[derive(Serialize)]
struct Version<'a> {
    items: BTreeMap<&'a str, Item<'a>>,
}

#[derive(Serialize)]
struct Item<'a> {
    ftype: &'a str,
    md5: &'a str,
    path: &'a str,
    sha256: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_size: Option<u64>,
}

/// An image's product name and product.
fn product(image: &CatalogImage, generated: Timestamp) -> (String, Product<'_>) {
    let version = image
        .added
        .as_deref()
        .and_then(|a| a.parse::<Timestamp>().ok())
        .unwrap_or(generated)
        .strftime("%Y%m%d_%H%M%S")
        .to_string();
    let ftype = image.format.as_deref().unwrap_or("raw");
    let item = Item {
        ftype,
        md5: &image.md5,
        path: &image.path,
        sha256: &image.sha256,
        size: image.size,
        virtual_size: image.virtual_size,
    };
    let product = Product {
        arch: debian_arch(&image.arch, image.bits),
        bits: image.bits,
        detail: image.detail.as_deref(),
        kernel: image.kernel.as_deref(),
        lib: &image.lib,
        maxsize: &image.maxsize,
        os: &image.os,
        osinfo: image.osinfo.as_deref(),
        release: &image.os,
        release_title: &image.name,
        versions: BTreeMap::from([(version, Version { items: BTreeMap::from([(ftype, item)]) })]),
        vm: &image.vm,
    };
    (format!("gov.bnl.star.vmrepo:{}:{}", image.vm, image.name), product)
}

/// simplestreams names architectures as Debian does.
pub(crate) fn debian_arch(arch: &str, bits: u16) -> String {
    match (arch, bits) {
        ("x86", 64) => "amd64".into(),
        ("x86", 32) => "i386".into(),
        (a, _) => a.to_string(),
    }
}

/// `Wed, 02 Dec 2026 07:16:19 +0000`, as python-simplestreams writes `updated`.
fn rfc2822(t: Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// Indented JSON with sorted keys and a final line break.
fn encode(v: &impl Serialize) -> Result<String> {
    let mut s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode simplestreams: {e}")))?;
    s.push('\n');
    Ok(s)
}
