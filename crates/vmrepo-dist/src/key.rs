//! Signing keys: Ed25519 in minisign's format, made and used with the
//! `minisign` crate, so that the `minisign` tool verifies what vmrepo signs.
//!
//! The secret key is written without a password (as `minisign -G -W`) unless
//! [`PASSWORD_ENV`] holds one, in which case it is encrypted with it (scrypt,
//! as minisign does) and the same variable unlocks it when signing. vmrepo
//! never prompts: publishing runs unattended.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox};
use vmrepo_repo::fsutil;
use vmrepo_repo::{Error, ErrorKind, Result};

/// The environment variable holding the secret key's password, if it has one.
pub const PASSWORD_ENV: &str = "VMREPO_KEY_PASSWORD";

/// The largest key file read: a minisign secret key is about 250 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// What `key generate` made.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    pub secret: PathBuf,
    pub public: PathBuf,
    /// The public key's base64 line (what `minisign -P` takes).
    pub public_line: String,
    /// The key's identifier, as minisign prints it (16 hex digits).
    pub key_id: String,
    /// Whether the secret key is encrypted with a password.
    pub encrypted: bool,
}

/// Makes a key pair `DIR/NAME.key` (mode 0600) and `DIR/NAME.pub`. With a
/// password the secret key is encrypted with it.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a bad name or a folder inside a vmrepo
/// repository (a secret key is kept out of the tree that is published),
/// [`ErrorKind::AlreadyExists`] if either file exists, or an I/O error.
pub fn generate_key(dir: &Path, name: &str, password: Option<String>) -> Result<GeneratedKey> {
    check_key_name(name)?;
    if let Some(root) = inside_repository(dir) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: inside the repository {}: a secret key is kept out of the tree it signs",
                dir.display(),
                root.display()
            ),
        ));
    }
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    for p in [&secret, &public] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{}: already exists", p.display())));
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io("create the folder", dir, e))?;
    let encrypted = password.is_some();
    let pair = match password {
        Some(pw) => KeyPair::generate_encrypted_keypair(Some(pw)),
        None => KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| Error::new(ErrorKind::Io, format!("cannot make a key pair: {e}")))?;
    let key_id = key_id(&pair.pk);
    let sk_text = pair
        .sk
        .to_box(Some(&format!("vmrepo secret key {key_id}")))
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the secret key: {e}")))?
        .into_string();
    let pk_box = pair
        .pk
        .to_box()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the public key: {e}")))?;
    let public_line = pair.pk.to_base64();
    write_no_replace(&secret, sk_text.as_bytes(), 0o600)?;
    if let Err(e) = write_no_replace(&public, pk_box.into_string().as_bytes(), 0o644) {
        let _ = fs::remove_file(&secret);
        return Err(e);
    }
    Ok(GeneratedKey { secret, public, public_line, key_id, encrypted })
}

/// The key identifier minisign prints (`minisign public key 0123ABCD...`).
pub fn key_id(pk: &PublicKey) -> String {
    pk.keynum().iter().rev().map(|b| format!("{b:02X}")).collect()
}

/// Reads a secret key file, unlocking it with `password` (the caller reads
/// [`PASSWORD_ENV`]) if it is encrypted.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the file when it is not a minisign
/// secret key, is encrypted and no password is set, or the password is wrong;
/// an I/O error when it cannot be read.
pub fn load_secret_key(path: &Path, password: Option<String>) -> Result<(SecretKey, PublicKey)> {
    let bad = |why: String| Error::new(ErrorKind::InvalidInput, format!("{}: {why}", path.display()));
    let bytes = read_key_file(path, MAX_KEY_FILE, "the key")?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not a minisign secret key (not text)".into()))?;
    if text.lines().count() != 2 || !text.starts_with("untrusted comment: ") {
        return Err(bad("not a minisign secret key (two lines: a comment, then the key)".into()));
    }
    let sk_box =
        SecretKeyBox::from_string(&text).map_err(|e| bad(format!("not a minisign secret key: {e}")))?;
    let sk = match SecretKey::from_unencrypted_box(sk_box.clone()) {
        Ok(sk) => sk,
        Err(plain) => match password {
            Some(pw) => {
                SecretKey::from_box(sk_box, Some(pw)).map_err(|e| bad(format!("cannot unlock it: {e}")))?
            }
            None if plain.to_string().contains("encrypted") => {
                return Err(bad(format!("the key is encrypted: set {PASSWORD_ENV} to its password")));
            }
            None => return Err(bad(format!("not a minisign secret key: {plain}"))),
        },
    };
    let pk = PublicKey::from_secret_key(&sk).map_err(|e| bad(format!("unusable secret key: {e}")))?;
    Ok((sk, pk))
}

/// The whole of a key or certificate file the user names (`what`: "the
/// key"), at most `cap` bytes. A link is followed (keys are often links,
/// as in a mounted secret); a FIFO, device or folder is refused without
/// blocking or reading it.
///
/// # Errors
/// One line naming the file: [`ErrorKind::NotFound`] when it is missing,
/// [`ErrorKind::InvalidInput`] when it is not a regular file or is larger
/// than `cap`, an I/O error otherwise.
pub fn read_key_file(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let context = |e: Error| Error::new(e.kind(), format!("cannot read {what} {}: {e}", path.display()));
    let f = fsutil::open_regular(path, true).map_err(context)?;
    let mut buf = Vec::new();
    f.take(cap.saturating_add(1)).read_to_end(&mut buf).map_err(|e| context(Error::io("read", path, e)))?;
    if u64::try_from(buf.len()).unwrap_or(u64::MAX) > cap {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("cannot read {what} {}: larger than {cap} bytes", path.display()),
        ));
    }
    Ok(buf)
}

/// A minisign signature of `data` (the `.minisig` file's text), with
/// `trusted_comment` signed along with it.
///
/// # Errors
/// [`ErrorKind::Io`] if signing fails (no randomness), or the comment holds a line break.
pub fn sign(sk: &SecretKey, pk: &PublicKey, data: &[u8], trusted_comment: &str) -> Result<String> {
    if trusted_comment.contains(['\n', '\r']) {
        return Err(Error::new(ErrorKind::InvalidInput, "a trusted comment is one line"));
    }
    let untrusted = format!("signature from vmrepo secret key {}", key_id(pk));
    let sig = minisign::sign(Some(pk), sk, data, Some(trusted_comment), Some(&untrusted))
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot sign: {e}")))?;
    Ok(sig.into_string())
}

/// Letters, digits, `.`, `_` and `-`, not starting with `.`, up to 64.
pub(crate) fn check_key_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{name:?}: a key name is letters, digits, '.', '_' and '-' (up to 64, not starting with '.')"
            ),
        ))
    }
}

/// The repository that `path`, or the nearest folder above it that exists, lies in.
pub fn inside_repository(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    let existing = abs.ancestors().find(|p| p.exists())?;
    vmrepo_repo::layout::repository_containing(existing)
}

/// Writes a new file durably, never over an existing one: a temporary file
/// beside it, fsynced, then hard-linked to its name (which fails if the name
/// is taken), the temporary name removed and the folder fsynced.
pub(crate) fn write_no_replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = fsutil::temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::new(ErrorKind::AlreadyExists, format!("{}: already exists", path.display()))
            } else {
                Error::io("create", path, e)
            }
        })
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    fsutil::fsync_dir(fsutil::parent(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_and_its_public_key_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate_key(dir.path(), "site", None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&k.secret).unwrap().permissions().mode() & 0o777, 0o600);
        let (sk, pk) = load_secret_key(&k.secret, None).unwrap();
        assert_eq!(pk.to_base64(), k.public_line);
        let sig = sign(&sk, &pk, b"catalog", "serial:1").unwrap();
        let sig_box = minisign::SignatureBox::from_string(&sig).unwrap();
        assert_eq!(sig_box.trusted_comment().unwrap(), "serial:1");
        let pk_file = PublicKey::from_file(&k.public).unwrap();
        minisign::verify(&pk_file, &sig_box, std::io::Cursor::new(b"catalog"), true, false, false).unwrap();
        assert!(
            minisign::verify(&pk_file, &sig_box, std::io::Cursor::new(b"catalOg"), true, false, false)
                .is_err()
        );
        // Never over an existing key.
        let err = generate_key(dir.path(), "site", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(generate_key(dir.path(), "../x", None).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn a_file_that_is_no_secret_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.key");
        for junk in [&b"\xff\xfe"[..], b"", b"untrusted comment: x\nAAAA\n", b"one line\n"] {
            fs::write(&p, junk).unwrap();
            let err = load_secret_key(&p, None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("junk.key"), "{err}");
        }
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate_key(dir.path(), "locked", Some("correct horse".into())).unwrap();
        assert!(k.encrypted);
        let err = load_secret_key(&k.secret, None).unwrap_err();
        assert!(err.to_string().contains(PASSWORD_ENV), "{err}");
        let err = load_secret_key(&k.secret, Some("wrong".into())).unwrap_err();
        assert!(err.to_string().contains("locked.key: cannot unlock it"), "{err}");
        let (_, pk) = load_secret_key(&k.secret, Some("correct horse".into())).unwrap();
        assert_eq!(pk.to_base64(), k.public_line);
    }
}
