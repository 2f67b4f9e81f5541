//! OpenPGP keys and signatures, for the formats whose clients check
//! OpenPGP (simplestreams' `.sjson`, virt-builder's `index.asc`): made and
//! used with rPGP (the `pgp` crate, pure Rust), so that `gpgv` and `gpg`
//! verify what vmrepo signs.
//!
//! The key is a v4 Ed25519 primary key (`ed25519` in gpg's listing, EdDSA
//! as gpg has read it since 2.1) that certifies and signs, with one user
//! ID and no subkeys. `key generate --openpgp` writes it beside the
//! minisign key: `NAME.openpgp.key` (the secret key, ASCII-armored, mode
//! 0600; `gpg --import` reads it), `NAME.openpgp.asc` (the public key,
//! ASCII-armored) and `NAME.openpgp.gpg` (the same public key in binary,
//! a keyring for `gpgv --keyring`).
//!
//! The cleartext signatures ([`clearsign`]) are made here rather than by
//! rPGP's cleartext builder, which hashes each line with its trailing
//! whitespace: RFC 9580 section 7.2 strips trailing spaces and tabs from
//! every line before hashing, and gpgv reports such a signature as BAD.

use std::fs;
use std::path::{Path, PathBuf};

use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, Password};
use vmrepo_repo::{Error, ErrorKind, Result};

use crate::key::write_no_replace;

/// The largest secret key file read: an armored Ed25519 key is under 1 KiB.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The environment variable naming the OpenPGP secret key publish signs with.
pub const KEY_ENV: &str = "VMREPO_OPENPGP_KEY";

/// What `key generate --openpgp` made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GeneratedOpenPgpKey {
    pub secret: PathBuf,
    /// The public key, ASCII-armored.
    pub public_armored: PathBuf,
    /// The public key in binary: a keyring for `gpgv --keyring`.
    pub keyring: PathBuf,
    /// The primary key's fingerprint, 40 upper-case hex digits.
    pub fingerprint: String,
    pub user_id: String,
    pub encrypted: bool,
}

/// The three files of the OpenPGP key named `name` in `dir`: (secret, armored public, keyring).
pub fn key_files(dir: &Path, name: &str) -> [PathBuf; 3] {
    [
        dir.join(format!("{name}.openpgp.key")),
        dir.join(format!("{name}.openpgp.asc")),
        dir.join(format!("{name}.openpgp.gpg")),
    ]
}

/// A secret key ready to sign.
pub struct OpenPgpSigner {
    key: SignedSecretKey,
    password: Password,
    fingerprint: String,
}

impl std::fmt::Debug for OpenPgpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenPgpSigner({})", self.fingerprint)
    }
}

impl OpenPgpSigner {
    /// The primary key's fingerprint, 40 upper-case hex digits.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Makes an OpenPGP key `DIR/NAME.openpgp.{key,asc,gpg}`, encrypted with
/// `password` if there is one. The caller has checked the name and that
/// DIR is outside every repository ([`crate::key::generate_key`] does both).
///
/// # Errors
/// [`ErrorKind::AlreadyExists`] if any of the files exists, or an I/O error.
pub fn generate(dir: &Path, name: &str, password: Option<String>) -> Result<GeneratedOpenPgpKey> {
    crate::key::check_key_name(name)?;
    let [secret, public_armored, keyring] = key_files(dir, name);
    for p in [&secret, &public_armored, &keyring] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{}: already exists", p.display())));
        }
    }
    let user_id = format!("{name} (vmrepo publish)");
    let fail = |what: &str, e: pgp::errors::Error| {
        Error::new(ErrorKind::Io, format!("cannot {what} the OpenPGP key: {e}"))
    };
    let encrypted = password.is_some();
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(user_id.clone())
        .passphrase(password);
    let params =
        params.build().map_err(|e| Error::new(ErrorKind::Io, format!("cannot make the OpenPGP key: {e}")))?;
    let sk = params.generate(rand::thread_rng()).map_err(|e| fail("make", e))?;
    let fingerprint = format!("{:X}", sk.fingerprint());
    let sk_text = sk.to_armored_string(ArmorOptions::default()).map_err(|e| fail("encode", e))?;
    let pk = SignedPublicKey::from(sk);
    let pk_text = pk.to_armored_string(ArmorOptions::default()).map_err(|e| fail("encode", e))?;
    let pk_bin = pk.to_bytes().map_err(|e| fail("encode", e))?;
    fs::create_dir_all(dir).map_err(|e| Error::io("create the folder", dir, e))?;
    let mut written: Vec<&Path> = Vec::new();
    let result = (|| {
        for (path, bytes, mode) in [
            (&secret, sk_text.as_bytes(), 0o600),
            (&public_armored, pk_text.as_bytes(), 0o644),
            (&keyring, &pk_bin[..], 0o644),
        ] {
            write_no_replace(path, bytes, mode)?;
            written.push(path);
        }
        Ok(())
    })();
    if let Err(e) = result {
        for p in written {
            let _ = fs::remove_file(p);
        }
        return Err(e);
    }
    Ok(GeneratedOpenPgpKey { secret, public_armored, keyring, fingerprint, user_id, encrypted })
}

/// Reads an OpenPGP secret key (armored or binary, one key), checking its
/// self-signatures and that it can sign; `password` (the caller reads
/// [`crate::key::PASSWORD_ENV`]) unlocks an encrypted one, and is checked
/// here by a test signature so that a wrong one fails before anything is
/// written.
///
/// # Errors
/// [`ErrorKind::NotFound`] when it cannot be read, [`ErrorKind::InvalidInput`]
/// naming the file when it is not such a key, is encrypted without a
/// password, or the password is wrong.
pub fn load_secret_key(path: &Path, password: Option<String>) -> Result<OpenPgpSigner> {
    let bad = |why: String| Error::new(ErrorKind::InvalidInput, format!("{}: {why}", path.display()));
    let bytes = crate::key::read_key_file(path, MAX_KEY_FILE, "the OpenPGP key")?;
    let key = if bytes.starts_with(b"-----BEGIN ") {
        SignedSecretKey::from_armor_single(&bytes[..]).map(|(k, _)| k)
    } else {
        SignedSecretKey::from_bytes(&bytes[..])
    }
    .map_err(|e| bad(format!("not an OpenPGP secret key: {e}")))?;
    key.verify_bindings().map_err(|e| bad(format!("its self-signatures do not verify: {e}")))?;
    let encrypted = key.primary_key.secret_params().is_encrypted();
    let password = match (encrypted, password) {
        (true, None) => {
            return Err(bad(format!(
                "the OpenPGP key is encrypted: set {} to its password",
                crate::key::PASSWORD_ENV
            )));
        }
        (true, Some(pw)) => Password::from(pw),
        (false, _) => Password::empty(),
    };
    let fingerprint = format!("{:X}", key.fingerprint());
    let signer = OpenPgpSigner { key, password, fingerprint };
    detached(&signer, b"vmrepo").map_err(|e| bad(format!("cannot sign with it: {e}")))?;
    Ok(signer)
}

/// The text that a cleartext signature covers (RFC 9580 section 7.2): each
/// line without its trailing spaces and tabs, lines joined by CR LF, the
/// line break before the signature not included. `text`'s lines end with
/// LF (a CR before it is dropped too).
pub fn canonical_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    for (i, line) in text_lines(text).enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(line.trim_end_matches([' ', '\t', '\r']));
    }
    out
}

/// The lines of `text`, without the empty one after a final LF.
fn text_lines(text: &str) -> impl Iterator<Item = &str> {
    text.strip_suffix('\n').unwrap_or(text).split('\n')
}

/// A cleartext-signed copy of `text` (RFC 9580 section 7, `Hash: SHA256`):
/// the text as it is (lines starting with `-` dash-escaped), then the
/// armored signature over its canonical form ([`canonical_text`]).
///
/// # Errors
/// [`ErrorKind::Io`] when signing fails.
pub fn clearsign(signer: &OpenPgpSigner, text: &str) -> Result<String> {
    let canonical = canonical_text(text);
    let sig = sign(signer, pgp::packet::SignatureType::Text, canonical.as_bytes())?;
    let mut out = String::with_capacity(text.len() + 1024);
    out.push_str("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n");
    for line in text_lines(text) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('-') {
            out.push_str("- ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&sig);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// A detached, armored binary signature of `data` (for `gpgv FILE.asc FILE`).
///
/// # Errors
/// [`ErrorKind::Io`] when signing fails.
pub fn detached(signer: &OpenPgpSigner, data: &[u8]) -> Result<String> {
    let mut sig = sign(signer, pgp::packet::SignatureType::Binary, data)?;
    if !sig.ends_with('\n') {
        sig.push('\n');
    }
    Ok(sig)
}

fn sign(signer: &OpenPgpSigner, typ: pgp::packet::SignatureType, data: &[u8]) -> Result<String> {
    let fail = |e: pgp::errors::Error| Error::new(ErrorKind::Io, format!("cannot sign with OpenPGP: {e}"));
    let rng = rand::thread_rng();
    let key = &signer.key.primary_key;
    let sig = match typ {
        pgp::packet::SignatureType::Text => {
            DetachedSignature::sign_text_data(rng, key, &signer.password, HashAlgorithm::Sha256, data)
        }
        _ => DetachedSignature::sign_binary_data(rng, key, &signer.password, HashAlgorithm::Sha256, data),
    }
    .map_err(fail)?;
    sig.to_armored_string(ArmorOptions::default()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_strips_trailing_blanks_and_uses_crlf() {
        assert_eq!(canonical_text("a \nb\t\n \n-c\n"), "a\r\nb\r\n\r\n-c");
        assert_eq!(canonical_text("a\r\nb"), "a\r\nb");
        assert_eq!(canonical_text(""), "");
        assert_eq!(canonical_text("\n\n"), "\r\n");
    }

    #[test]
    fn a_generated_key_loads_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate(dir.path(), "site", None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&k.secret).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(k.fingerprint.len(), 40);
        let s = load_secret_key(&k.secret, None).unwrap();
        assert_eq!(s.fingerprint(), k.fingerprint);
        let signed = clearsign(&s, "x \n-y\n").unwrap();
        assert!(
            signed.starts_with(
                "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx \n- -y\n-----BEGIN PGP SIGNATURE-----"
            ),
            "{signed}"
        );
        assert_eq!(generate(dir.path(), "site", None).unwrap_err().kind(), ErrorKind::AlreadyExists);
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate(dir.path(), "locked", Some("pw".into())).unwrap();
        assert!(k.encrypted);
        let err = load_secret_key(&k.secret, None).unwrap_err();
        assert!(err.to_string().contains("VMREPO_KEY_PASSWORD"), "{err}");
        let err = load_secret_key(&k.secret, Some("wrong".into())).unwrap_err();
        assert!(err.to_string().contains("locked.openpgp.key"), "{err}");
        load_secret_key(&k.secret, Some("pw".into())).unwrap();
    }

    #[test]
    fn junk_is_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.key");
        for junk in [
            &b""[..],
            b"\xff\x00",
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n",
        ] {
            fs::write(&p, junk).unwrap();
            let err = load_secret_key(&p, None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("junk.key"), "{err}");
        }
    }
}
