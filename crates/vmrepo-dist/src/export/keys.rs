//! The repository's SSH public keys ([`vmrepo_site::keys`]) as one
//! `keys/authorized_keys` file, signed twice: `keys/authorized_keys.minisig`
//! with the catalog's minisign key, and, when an RSA key is given,
//! `keys/authorized_keys.sig` (RSA-SHA-256 PKCS #1 v1.5, the raw signature
//! `openssl dgst -sha256 -sign` writes) with its public key beside it as
//! `keys/authorized_keys.pub.pem`, for an old image that has OpenSSL and no
//! minisign ([`crate::rsasig`]). `vmrepo serve` answers the same four files
//! ([`signed_keys`]).
//!
//! Written when the repository has keys, or when DEST already has a list
//! (the last key removed is published as an empty list, so that a removed
//! key stops working where the boot script runs). Signatures are renamed
//! into place before the list they sign.

use vmrepo_repo::Result;
use vmrepo_site::keys::Entry;

use super::{OutFile, Skipped, Stage};
use crate::rsasig::RsaSigner;

/// The list's path in the published tree.
pub const FILE: &str = "keys/authorized_keys";
/// The RSA signature's.
pub const SIG: &str = "keys/authorized_keys.sig";
/// The minisign signature's.
pub const MINISIG: &str = "keys/authorized_keys.minisig";
/// The RSA public key's.
pub const PUB_PEM: &str = "keys/authorized_keys.pub.pem";

/// The list and its signatures.
pub struct SignedKeys {
    pub list: Vec<u8>,
    pub minisig: String,
    /// The RSA signature and the public key that checks it, with an RSA key.
    pub rsa: Option<(Vec<u8>, String)>,
}

/// Signs the authorized_keys file of `entries`. The minisign signature's
/// trusted comment says what it is: `vmrepo keys/authorized_keys N keys
/// generated TIME`.
///
/// # Errors
/// Signing or encoding failures.
pub fn signed_keys(
    entries: &[Entry],
    minisign: (&minisign::SecretKey, &minisign::PublicKey),
    rsa: Option<&RsaSigner>,
    generated: &str,
) -> Result<SignedKeys> {
    let list = vmrepo_site::keys::authorized_keys(entries).into_bytes();
    let comment = format!("vmrepo {FILE} {} keys generated {generated}", entries.len());
    let minisig = crate::key::sign(minisign.0, minisign.1, &list, &comment)?;
    let rsa = match rsa {
        Some(r) => Some((r.sign(&list), r.public_pem()?)),
        None => None,
    };
    Ok(SignedKeys { list, minisig, rsa })
}

/// The files publish writes: the RSA public key and signature (with `rsa`),
/// the minisign signature, then the list, all of stage [`Stage::Signed`].
///
/// # Errors
/// As [`signed_keys`].
pub fn render(
    entries: &[Entry],
    minisign: (&minisign::SecretKey, &minisign::PublicKey),
    rsa: Option<&RsaSigner>,
    generated: &str,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<OutFile>> {
    let signed = signed_keys(entries, minisign, rsa, generated)?;
    let file = |path: &str, bytes: Vec<u8>| OutFile { path: path.into(), bytes, stage: Stage::Signed };
    let mut files = Vec::new();
    match signed.rsa {
        Some((sig, pem)) => {
            files.push(file(PUB_PEM, pem.into_bytes()));
            files.push(file(SIG, sig));
        }
        None => skipped.push(Skipped {
            export: "ssh keys rsa signature",
            reason: format!(
                "no RSA key (--keys-rsa-key or {}): {FILE} is signed with minisign only",
                crate::rsasig::RSA_KEY_ENV
            ),
        }),
    }
    files.push(file(MINISIG, signed.minisig.into_bytes()));
    files.push(file(FILE, signed.list));
    Ok(files)
}
