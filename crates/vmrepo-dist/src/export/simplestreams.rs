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
use serde_json::{Map, Value, json};
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
    let mut products = Map::new();
    for image in &ctx.doc.images {
        let (name, product) = product(image, ctx.generated);
        products.insert(name, product);
    }
    let names: Vec<Value> = products.keys().cloned().map(Value::String).collect();
    let products_doc = json!({
        "format": "products:1.0",
        "datatype": "image-downloads",
        "content_id": CONTENT_ID,
        "updated": updated,
        "serial": ctx.doc.serial,
        "products": products,
    });
    let index_for = |ext: &str| {
        json!({
            "format": "index:1.0",
            "updated": updated,
            "index": {
                CONTENT_ID: {
                    "format": "products:1.0",
                    "datatype": "image-downloads",
                    "path": products_path(ext),
                    "updated": updated,
                    "products": names,
                }
            }
        })
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

/// An image's product name and product.
fn product(image: &CatalogImage, generated: Timestamp) -> (String, Value) {
    let version = image
        .added
        .as_deref()
        .and_then(|a| a.parse::<Timestamp>().ok())
        .unwrap_or(generated)
        .strftime("%Y%m%d_%H%M%S")
        .to_string();
    let ftype = image.format.clone().unwrap_or_else(|| "raw".into());
    let mut item = json!({
        "ftype": ftype,
        "path": image.path,
        "size": image.size,
        "sha256": image.sha256,
        "md5": image.md5,
    });
    if let (Some(v), Some(obj)) = (image.virtual_size, item.as_object_mut()) {
        obj.insert("virtual_size".into(), json!(v));
    }
    let mut product = json!({
        "arch": debian_arch(&image.arch, image.bits),
        "os": image.os,
        "release": image.os,
        "release_title": image.name,
        "vm": image.vm,
        "lib": image.lib,
        "bits": image.bits,
        "maxsize": image.maxsize,
        "versions": { version: { "items": { ftype: item } } },
    });
    if let Some(obj) = product.as_object_mut() {
        for (k, v) in [("osinfo", &image.osinfo), ("detail", &image.detail), ("kernel", &image.kernel)] {
            if let Some(v) = v {
                obj.insert(k.into(), json!(v));
            }
        }
    }
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
fn encode(v: &Value) -> Result<String> {
    let mut s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode simplestreams: {e}")))?;
    s.push('\n');
    Ok(s)
}
