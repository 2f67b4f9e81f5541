//! RSA signatures an old system checks with the tools it has: SHA-256 and
//! PKCS #1 v1.5, the raw signature as `openssl dgst -sha256 -sign KEY -out
//! FILE.sig FILE` writes it, checked with `openssl dgst -sha256 -verify
//! PUB.pem -signature FILE.sig FILE` (OpenSSL 0.9.8, Scientific Linux 5's,
//! does this) against the public key in a PEM `PUBLIC KEY` block
//! (SubjectPublicKeyInfo). Used for the SSH key list
//! ([`crate::export::keys`]). The key is RustCrypto's `rsa`, as S/MIME uses it.

use std::path::{Path, PathBuf};

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use vmrepo_repo::{Error, ErrorKind, Result};

/// The environment variable naming the RSA key that signs the key list.
pub const RSA_KEY_ENV: &str = "VMREPO_KEYS_RSA_KEY";
/// The largest key file read (a 16384-bit key's PEM is about 13 KiB).
const MAX_PEM_FILE: u64 = 64 << 10;
/// The smallest key that signs.
pub const MIN_BITS: usize = 2048;
/// The size `key generate --rsa` makes.
pub const GENERATED_BITS: usize = 3072;

/// An RSA private key that signs.
pub struct RsaSigner {
    key: rsa::pkcs1v15::SigningKey<Sha256>,
    public: RsaPublicKey,
}

impl RsaSigner {
    /// Reads an unencrypted PEM private key: PKCS #8 (`PRIVATE KEY`, what
    /// `key generate --rsa` and `openssl genpkey` write) or PKCS #1 (`RSA
    /// PRIVATE KEY`, `openssl genrsa`), of at least [`MIN_BITS`] bits.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the file (never its content);
    /// [`ErrorKind::NotFound`].
    pub fn load(path: &Path) -> Result<RsaSigner> {
        let bad = |why: &str| Error::new(ErrorKind::InvalidInput, format!("{}: {why}", path.display()));
        let bytes = crate::key::read_key_file(path, MAX_PEM_FILE, "the RSA key")?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not a PEM RSA private key (not text)"))?;
        if text.contains("ENCRYPTED") {
            return Err(bad(
                "an encrypted key: give it unencrypted (openssl pkey -in KEY -out PLAIN), readable by its owner only",
            ));
        }
        let key = if text.contains("-----BEGIN PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs8_pem(text.trim())
                .map_err(|_| bad("not a PEM RSA private key (PKCS #8)"))?
        } else if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs1_pem(text.trim())
                .map_err(|_| bad("not a PEM RSA private key (PKCS #1)"))?
        } else {
            return Err(bad("not a PEM RSA private key (a PRIVATE KEY or RSA PRIVATE KEY block)"));
        };
        let bits = key.size().saturating_mul(8);
        if bits < MIN_BITS {
            return Err(bad(&format!("an RSA key of {bits} bits: at least {MIN_BITS} are needed")));
        }
        let public = key.to_public_key();
        Ok(RsaSigner { key: rsa::pkcs1v15::SigningKey::new(key), public })
    }

    /// The raw signature of `data` (as many bytes as the modulus).
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.key.sign(data).to_vec()
    }

    /// The public key, a PEM `PUBLIC KEY` block (what `openssl dgst -verify` reads).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if it cannot be encoded.
    pub fn public_pem(&self) -> Result<String> {
        public_pem(&self.public)
    }

    /// The modulus' size in bits.
    pub fn bits(&self) -> usize {
        self.public.size().saturating_mul(8)
    }
}

/// The RSA public key in the PEM file `path` (a `PUBLIC KEY` block of at
/// least [`MIN_BITS`] bits), as its PEM text.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the file; [`ErrorKind::NotFound`].
pub fn read_public_pem(path: &Path) -> Result<String> {
    use rsa::pkcs8::DecodePublicKey;
    let bad = |why: &str| Error::new(ErrorKind::InvalidInput, format!("{}: {why}", path.display()));
    let bytes = crate::key::read_key_file(path, MAX_PEM_FILE, "the RSA public key")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not a PEM public key (not text)"))?;
    if text.contains("PRIVATE KEY") {
        return Err(bad("a private key: give the public one (NAME.rsa.pub.pem)"));
    }
    let key = RsaPublicKey::from_public_key_pem(text.trim())
        .map_err(|_| bad("not a PEM RSA public key (one PUBLIC KEY block)"))?;
    let bits = key.size().saturating_mul(8);
    if bits < MIN_BITS {
        return Err(bad(&format!("an RSA key of {bits} bits: at least {MIN_BITS} are needed")));
    }
    public_pem(&key)
}

fn public_pem(public: &RsaPublicKey) -> Result<String> {
    public
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the RSA public key: {e}")))
}

/// What `key generate --rsa` made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GeneratedRsaKey {
    pub secret: PathBuf,
    pub public: PathBuf,
    pub bits: usize,
}

/// Makes `DIR/NAME.rsa.pem` (PKCS #8, mode 0600) and `DIR/NAME.rsa.pub.pem`
/// (the public key), [`GENERATED_BITS`] bits; never inside a repository,
/// never over an existing file.
///
/// # Errors
/// As [`crate::key::generate_key`].
pub fn generate(dir: &Path, name: &str) -> Result<GeneratedRsaKey> {
    crate::key::check_key_name(name)?;
    if let Some(root) = crate::key::inside_repository(dir) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: inside the repository {}: a secret key is kept out of the tree it signs",
                dir.display(),
                root.display()
            ),
        ));
    }
    let (secret, public) = files(dir, name);
    for p in [&secret, &public] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{}: already exists", p.display())));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create the folder", dir, e))?;
    let key = RsaPrivateKey::new(&mut rand::thread_rng(), GENERATED_BITS)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot make an RSA key: {e}")))?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the RSA key: {e}")))?;
    let pub_pem = public_pem(&key.to_public_key())?;
    crate::key::write_no_replace(&secret, pem.as_bytes(), 0o600)?;
    if let Err(e) = crate::key::write_no_replace(&public, pub_pem.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&secret);
        return Err(e);
    }
    Ok(GeneratedRsaKey { secret, public, bits: GENERATED_BITS })
}

/// The files `generate` writes for `name` in `dir`.
pub fn files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{name}.rsa.pem")), dir.join(format!("{name}.rsa.pub.pem")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;

    #[test]
    fn a_generated_key_signs_and_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(dir.path(), "site").unwrap();
        let s = RsaSigner::load(&g.secret).unwrap();
        assert_eq!(s.bits(), 3072);
        let sig = s.sign(b"list");
        assert_eq!(sig.len(), 384);
        let pem = std::fs::read_to_string(&g.public).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(RsaPublicKey::from_public_key_pem(&pem).unwrap());
        let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
        vk.verify(b"list", &sig).unwrap();
        assert!(vk.verify(b"lisT", &sig).is_err());
        assert_eq!(generate(dir.path(), "site").unwrap_err().kind(), ErrorKind::AlreadyExists);
        std::fs::write(
            dir.path().join("junk.pem"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = RsaSigner::load(&dir.path().join("junk.pem")).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}
