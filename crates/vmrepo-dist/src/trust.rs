//! The keys a repository trusts to sign the catalogs it pulls: minisign
//! public keys, one file each, in `.vmrepo/trusted/NAME.pub`.
//!
//! A key is parsed before it is kept, and kept in minisign's own format (the
//! file `key generate` writes), so that `minisign -V -p` reads it too. Each
//! file appears whole under its name (a temporary file, fsync, link); the
//! same key is never kept twice under two names.

use std::fs;
use std::path::{Path, PathBuf};

use minisign::{PublicKey, PublicKeyBox};
use serde::Serialize;
use vmrepo_repo::{Error, ErrorKind, Repository, Result, fsutil};

use crate::key::{self, key_id};

/// The folder under `.vmrepo/` that holds the trusted keys.
pub const TRUSTED_DIR: &str = "trusted";
/// The ending of a trusted key's file.
const KEY_EXT: &str = ".pub";
/// The largest public key file read: minisign's is about 110 bytes.
const MAX_PUBLIC_KEY_FILE: u64 = 4096;

/// A trusted key.
#[derive(Clone, Debug, Serialize)]
pub struct TrustedKey {
    pub name: String,
    /// As minisign prints it (16 hex digits).
    pub key_id: String,
    /// The public key's base64 line.
    pub public_key: String,
    #[serde(skip)]
    pub key: PublicKey,
}

/// The folder of trusted keys of `repo`.
pub fn trusted_dir(repo: &Repository) -> PathBuf {
    repo.meta_dir().join(TRUSTED_DIR)
}

/// Parses a minisign public key: the file minisign and `key generate` write
/// (an `untrusted comment:` line, then the key), or the bare base64 line.
///
/// # Errors
/// A message saying what is wrong, without the file's name.
pub fn parse_public_key(bytes: &[u8]) -> std::result::Result<PublicKey, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not a minisign public key (not text)".to_string())?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let pk = match lines.as_slice() {
        [line] => PublicKey::from_base64(line.trim()),
        [comment, _] if comment.starts_with("untrusted comment:") => {
            PublicKeyBox::from_string(text).and_then(PublicKey::from_box)
        }
        _ => return Err("not a minisign public key (a comment line, then the key)".into()),
    };
    pk.map_err(|e| format!("not a minisign public key: {e}"))
}

/// The minisign public key in the file `path` (as [`parse_public_key`]
/// takes it), read as [`key::read_key_file`] reads a key.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the file when it is not a regular
/// file or not such a key; [`ErrorKind::NotFound`] when it is missing.
pub fn read_public_key(path: &Path) -> Result<PublicKey> {
    let bytes = key::read_key_file(path, MAX_PUBLIC_KEY_FILE, "the key")?;
    parse_public_key(&bytes)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{}: {e}", path.display())))
}

/// Trusts the key in `keyfile` under `name` (default: the file's name
/// without `.pub`).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a file that is not a minisign public key
/// or a bad name; [`ErrorKind::AlreadyExists`] when the name is taken or the
/// same key is already trusted (under the name given in the message);
/// [`ErrorKind::NotFound`] when the file is missing.
pub fn add(repo: &Repository, keyfile: &Path, name: Option<&str>) -> Result<TrustedKey> {
    let pk = read_public_key(keyfile)?;
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let file = keyfile.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            file.strip_suffix(KEY_EXT).unwrap_or(&file).to_string()
        }
    };
    key::check_key_name(&name)?;
    let id = key_id(&pk);
    if let Some(same) = list(repo)?.into_iter().find(|k| k.key_id == id) {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("the key {id} is already trusted, as {:?}", same.name),
        ));
    }
    let dir = trusted_dir(repo);
    fs::create_dir_all(&dir).map_err(|e| Error::io("create the folder", &dir, e))?;
    // Kept in minisign's format whatever form it came in.
    let text = pk
        .to_box()
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("cannot encode the key: {e}")))?
        .into_string();
    key::write_no_replace(&dir.join(format!("{name}{KEY_EXT}")), text.as_bytes(), 0o644).map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            Error::new(ErrorKind::AlreadyExists, format!("a key named {name:?} is already trusted"))
        } else {
            e
        }
    })?;
    Ok(TrustedKey { name, key_id: id, public_key: pk.to_base64(), key: pk })
}

/// The trusted keys, by name.
///
/// # Errors
/// [`ErrorKind::BadSidecar`] naming a file in the folder that is not a
/// minisign public key (a key nobody can tell is trusted is not ignored); I/O errors.
pub fn list(repo: &Repository) -> Result<Vec<TrustedKey>> {
    let dir = trusted_dir(repo);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if fsutil::is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &dir, e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(KEY_EXT) else { continue };
        if file.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let bytes = vmrepo_repo::catalog::read_capped(&path, MAX_PUBLIC_KEY_FILE)
            .map_err(|e| Error::new(ErrorKind::BadSidecar, format!("cannot read {}: {e}", path.display())))?;
        let pk = parse_public_key(&bytes)
            .map_err(|e| Error::new(ErrorKind::BadSidecar, format!("{}: {e}", path.display())))?;
        keys.push(TrustedKey {
            name: name.to_string(),
            key_id: key_id(&pk),
            public_key: pk.to_base64(),
            key: pk,
        });
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(keys)
}

/// A key no longer trusted, and the sources whose serial was forgotten with it.
#[derive(Clone, Debug, Serialize)]
pub struct RemovedKey {
    #[serde(flatten)]
    pub key: TrustedKey,
    /// Each source whose last catalog this key signed, with the serial that
    /// was its high-water mark: the next catalog from it is accepted from
    /// any serial (signed by a key still trusted).
    pub forgotten_sources: Vec<ForgottenSource>,
}

/// A source whose newest serial `trust rm` forgot.
#[derive(Clone, Debug, Serialize)]
pub struct ForgottenSource {
    pub source: String,
    pub serial: u64,
}

/// No longer trusts the key `name`, and forgets the serial of every source
/// whose last catalog it signed (see [`mod@crate::pull`]: a leaked key may have
/// signed a catalog whose serial would block every honest one after it).
///
/// # Errors
/// [`ErrorKind::NotFound`] when no key has that name;
/// [`ErrorKind::Locked`] while a pull runs (nothing is removed); I/O errors.
pub fn remove(repo: &Repository, name: &str) -> Result<RemovedKey> {
    key::check_key_name(name)?;
    let Some(k) = list(repo)?.into_iter().find(|k| k.name == name) else {
        return Err(Error::new(ErrorKind::NotFound, format!("no trusted key is named {name:?}")));
    };
    // The serials first: a failure there leaves the key trusted, and the
    // command can be run again; the other order could leave a removed key's
    // serial blocking a source with no key left to name it by.
    let forgotten = crate::pull::forget_signer(repo, &k.key_id)?;
    let dir = trusted_dir(repo);
    let path = dir.join(format!("{name}{KEY_EXT}"));
    fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
    fsutil::fsync_dir(&dir)?;
    Ok(RemovedKey {
        key: k,
        forgotten_sources: forgotten
            .into_iter()
            .map(|(source, serial)| ForgottenSource { source, serial })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_added_listed_refused_twice_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Repository::init(&dir.path().join("repo")).unwrap();
        let keys = tempfile::tempdir().unwrap();
        let a = key::generate_key(keys.path(), "alpha", None).unwrap();
        let b = key::generate_key(keys.path(), "beta", None).unwrap();
        let added = add(&repo, &a.public, None).unwrap();
        assert_eq!((added.name.as_str(), added.key_id.as_str()), ("alpha", a.key_id.as_str()));
        // The bare base64 line is a key too.
        let line = keys.path().join("line");
        fs::write(&line, format!("{}\n", b.public_line)).unwrap();
        add(&repo, &line, Some("site-b")).unwrap();
        let names: Vec<String> = list(&repo).unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["alpha", "site-b"]);
        // The same key under another name, or another key under a taken name.
        let err = add(&repo, &a.public, Some("again")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("\"alpha\""), "{err}");
        let c = key::generate_key(keys.path(), "gamma", None).unwrap();
        assert_eq!(add(&repo, &c.public, Some("alpha")).unwrap_err().kind(), ErrorKind::AlreadyExists);
        // What is no key is refused, and so is a name that is no file name.
        fs::write(keys.path().join("junk.pub"), "untrusted comment: x\nAAAA\n").unwrap();
        assert_eq!(
            add(&repo, &keys.path().join("junk.pub"), None).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(add(&repo, &c.public, Some("../x")).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(add(&repo, &a.secret, Some("secret")).unwrap_err().kind(), ErrorKind::InvalidInput);
        // The kept file is minisign's format.
        let kept = fs::read(trusted_dir(&repo).join("site-b.pub")).unwrap();
        assert_eq!(key_id(&parse_public_key(&kept).unwrap()), b.key_id);
        assert_eq!(remove(&repo, "alpha").unwrap().key.key_id, a.key_id);
        assert_eq!(remove(&repo, "alpha").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(list(&repo).unwrap().len(), 1);
    }
}
