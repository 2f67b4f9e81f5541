//! The HEPiX image list (the HEPiX Virtualisation Working Group's format,
//! read by grid sites' atrope and vmcatcher): `image.list`, a JSON
//! `hv:imagelist` signed as an S/MIME `multipart/signed` message with the
//! administrator's X.509 certificate ([`crate::smime`]). Written only with a
//! certificate and a base URL (its `hv:uri` are absolute).
//!
//! Identifiers are UUIDv5, so that they stay the same from one publish to
//! the next: the list's from its URL, each image's from its path
//! (`vm/<VM>/<file>`), the endorser's from its DN.

use serde_json::{Value, json};
use uuid::Uuid;
use vmrepo_repo::{Error, ErrorKind, Result};

use super::{Context, OutFile, Skipped, Stage};
use crate::metalink::encode_path;
use crate::schema::CatalogImage;
use crate::smime::SmimeSigner;

/// The signed list's file name, as image lists are named in the field.
pub const FILE: &str = "image.list";
/// The export's name in `exports_skipped`.
pub const NAME: &str = "hepix";

/// The namespace of vmrepo's UUIDv5 identifiers: itself the UUIDv5 of
/// `https://github.com/star-vm/vmrepo/hepix` in the URL namespace.
const NAMESPACE: Uuid = Uuid::from_u128(0xd9e8_cce0_04ca_5b15_acfc_9959_e1fe_565a);

/// `image.list`, or nothing (and why, in `skipped`) without a certificate
/// or a base URL.
///
/// # Errors
/// The list cannot be encoded or signed, or an image lacks its SHA-512.
pub fn render(ctx: &Context<'_>, skipped: &mut Vec<Skipped>) -> Result<Vec<OutFile>> {
    let Some(signer) = ctx.signers.smime.as_ref() else {
        skipped.push(Skipped {
            export: NAME,
            reason: "no X.509 certificate to sign it (--smime-cert and --smime-key)".into(),
        });
        return Ok(Vec::new());
    };
    let Some(base) = ctx.base_urls.first() else {
        skipped.push(Skipped { export: NAME, reason: "it needs --base-url (its URLs are absolute)".into() });
        return Ok(Vec::new());
    };
    if signer.not_after < ctx.expires {
        tracing::warn!(
            "the S/MIME certificate expires at {}, before the image list ({}): sites refuse the list from then on",
            signer.not_after,
            ctx.expires
        );
    }
    let list = document(ctx, signer, base)?;
    let mut json = serde_json::to_string_pretty(&list)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the image list: {e}")))?;
    // Canonical text for S/MIME: CRLF line ends (JSON strings hold no raw line end).
    json = json.replace('\n', "\r\n");
    let bytes = signer.sign(json.as_bytes(), ctx.generated)?;
    Ok(vec![OutFile { path: FILE.into(), bytes, stage: Stage::Signed }])
}

/// The `hv:imagelist` document.
fn document(ctx: &Context<'_>, signer: &SmimeSigner, base: &str) -> Result<Value> {
    let uri = format!("{base}/{FILE}");
    let endorser_guid = Uuid::new_v5(&NAMESPACE, format!("endorser:{}", signer.subject).as_bytes());
    let user_uri =
        if signer.email.is_empty() { base.to_string() } else { format!("mailto:{}", signer.email) };
    let mut images = Vec::with_capacity(ctx.doc.images.len());
    for image in &ctx.doc.images {
        let sha512 = ctx.sha512.get(&image.sha256).ok_or_else(|| {
            Error::new(ErrorKind::Io, format!("{}: its SHA-512 was not computed", image.path))
        })?;
        let mut entry = image_entry(image, base, sha512);
        if let Some(o) = entry.as_object_mut() {
            o.insert("ad:user:fullname".into(), json!(signer.common_name));
            o.insert("ad:user:guid".into(), json!(endorser_guid.to_string()));
            o.insert("ad:user:uri".into(), json!(user_uri));
        }
        images.push(json!({ "hv:image": entry }));
    }
    Ok(json!({
        "hv:imagelist": {
            "dc:identifier": Uuid::new_v5(&NAMESPACE, format!("list:{uri}").as_bytes()).to_string(),
            "dc:title": format!("vmrepo images at {base}"),
            "dc:description": format!(
                "The virtual machine images published by vmrepo at {base} (catalog serial {})",
                ctx.doc.serial
            ),
            "dc:source": base,
            "dc:date:created": ctx.generated.to_string(),
            "dc:date:expires": ctx.expires.to_string(),
            "hv:version": ctx.doc.serial.to_string(),
            "hv:uri": uri,
            "hv:endorser": {
                "hv:x509": {
                    "dc:creator": signer.common_name,
                    "hv:dn": signer.subject,
                    "hv:ca": signer.issuer,
                    "hv:email": signer.email,
                }
            },
            "hv:images": images,
        }
    }))
}

/// One image's fields but the endorser's.
fn image_entry(image: &CatalogImage, base: &str, sha512: &str) -> Value {
    let (osname, osversion) = match vmrepo_name::Os::parse(&image.os) {
        Ok(os) => (os.family().display.to_string(), os.version().to_string()),
        Err(_) => (image.os.clone(), String::new()),
    };
    let arch = machine(&image.arch, image.bits);
    let mut description =
        format!("{osname} {osversion} {arch}, STAR library {}, {} disk", image.lib, image.maxsize);
    if let Some(d) = &image.detail {
        description.push_str(&format!(", {d}"));
    }
    // The description file beside the image is its page for people.
    let dir = image.path.rsplit_once('/').map_or("", |(d, _)| d);
    let page = format!("{base}/{}", encode_path(&format!("{dir}/{}.txt", image.name)));
    json!({
        "dc:identifier": image_id(&image.path).to_string(),
        "dc:title": image.name,
        "dc:description": description,
        "hv:uri": format!("{base}/{}", encode_path(&image.path)),
        "hv:size": image.size,
        "sl:checksum:sha512": sha512,
        "hv:format": image.format.as_deref().unwrap_or("raw"),
        "hv:hypervisor": image.vm,
        // Changes exactly when the bytes do.
        "hv:version": image.sha256.get(..16).unwrap_or(&image.sha256),
        "sl:os": "Linux",
        "sl:osname": osname,
        "sl:osversion": osversion,
        "sl:arch": arch,
        "sl:comments": image.kernel.as_deref().map(|k| format!("kernel {k}")).unwrap_or_default(),
        "ad:mpuri": page,
        "ad:group": image.vm,
    })
}

/// An image's stable identifier, from its published path.
pub fn image_id(path: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("image:{path}").as_bytes())
}

/// The machine name `uname -m` would print for an ISA and word size.
fn machine(arch: &str, bits: u16) -> String {
    match (arch.to_ascii_lowercase().as_str(), bits) {
        ("x86", 64) => "x86_64".into(),
        ("x86", 32) => "i686".into(),
        ("arm", 64) => "aarch64".into(),
        ("arm", 32) => "armv7l".into(),
        ("powerpc", 64) => "ppc64".into(),
        ("powerpc", 32) => "ppc".into(),
        ("s390", 64) => "s390x".into(),
        ("riscv", 64) => "riscv64".into(),
        (a, b) => format!("{a}{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_stable_and_distinct() {
        let a = image_id("vm/kvm/sl5.3_x86_64_sl08e_8GB.img");
        assert_eq!(a, image_id("vm/kvm/sl5.3_x86_64_sl08e_8GB.img"));
        assert_ne!(a, image_id("vm/xen/sl5.3_x86_64_sl08e_8GB.img"));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn machines_are_named_as_uname_names_them() {
        assert_eq!(machine("x86", 64), "x86_64");
        assert_eq!(machine("x86", 32), "i686");
        assert_eq!(machine("ARM", 64), "aarch64");
        assert_eq!(machine("SPARC", 64), "sparc64");
    }
}
