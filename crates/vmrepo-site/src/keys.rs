//! The repository's SSH public keys: the people who may log into a started
//! copy as root or star. One OpenSSH public key per file, in
//! `<repository root>/keys/<NAME>.pub`, each checked with the `ssh-key`
//! crate when it is added and again whenever the list is read.
//!
//! What is kept: a known key type (RSA of at least [`MIN_RSA_BITS`] bits,
//! ECDSA, Ed25519 and their security-key forms); DSA is refused. One key
//! per file, re-encoded as the single line `TYPE BASE64 COMMENT`; the same
//! key material is never kept under two names.
//!
//! The folder is strict: a `.pub` file in it that is a symbolic link, not a
//! regular file, larger than [`MAX_KEY_FILE`], badly named or not such a key
//! makes [`list`] fail naming it, rather than be left out or followed (a key
//! list nobody can vouch for is not published). Other files (no `.pub`
//! ending, hidden, vmrepo's temporary files) are not keys and are skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use ssh_key::{Algorithm, HashAlg, PublicKey, public::KeyData};
use vmrepo_repo::{Error, ErrorKind, Repository, Result, fsutil, lock::RepoLock};

/// The folder under the repository root that holds the keys.
pub const KEYS_DIR: &str = "keys";
/// The ending of a key's file.
pub const KEY_EXT: &str = ".pub";
/// The largest key file read (a 16384-bit RSA key's line is under 3 KiB).
pub const MAX_KEY_FILE: u64 = 16 << 10;
/// The most keys a repository holds (a cap on what one listing allocates).
pub const MAX_KEYS: usize = 10_000;
/// The longest key name.
pub const MAX_NAME: usize = 64;
/// The smallest RSA modulus kept, in bits.
pub const MIN_RSA_BITS: u32 = 2048;

/// One key of the repository: its name and its authorized_keys line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    /// One OpenSSH authorized_keys line, without its line break:
    /// `ssh-ed25519 AAAA... comment`.
    pub line: String,
}

/// What `keys list` shows of a key: as `ssh-keygen -lf` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    pub name: String,
    /// As ssh-keygen names it: `RSA`, `ECDSA`, `ED25519`, `ECDSA-SK`, `ED25519-SK`.
    #[serde(rename = "type")]
    pub key_type: String,
    /// The line's first word: `ssh-rsa`, `ssh-ed25519`, `ecdsa-sha2-nistp256`...
    pub algorithm: String,
    pub bits: u32,
    /// `SHA256:` and the unpadded base64 digest, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    pub comment: String,
    pub line: String,
}

/// The folder of keys of the repository at `root`.
pub fn keys_dir(root: &Path) -> PathBuf {
    root.join(KEYS_DIR)
}

/// Letters, digits, `.`, `_`, `-` and `@`, up to [`MAX_NAME`], not
/// starting with `.`, `-` or `@` (so never hidden, never a path, never an option).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] saying the rule.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(['.', '-', '@'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{:?}: a key name is letters, digits, '.', '_', '-' and '@' (up to {MAX_NAME}, not starting with '.', '-' or '@')",
                name.chars().take(80).collect::<String>()
            ),
        ))
    }
}

/// A name made from `text` (a key's comment, a file's name): every other
/// character becomes `-`, runs of `-` are one, leading `.`, `-`, `@` go,
/// cut at [`MAX_NAME`]. `None` when nothing is left.
pub fn sanitise_name(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || "._-@".contains(c) { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_start_matches(['.', '-', '@']).trim_end_matches('-');
    let out: String = out.chars().take(MAX_NAME).collect();
    let out = out.trim_end_matches('-').to_string();
    check_name(&out).ok().map(|()| out)
}

/// The one OpenSSH public key in `bytes` (a `.pub` file: blank lines and
/// `#` lines aside, exactly one key line), checked against the rules above.
///
/// # Errors
/// A message saying what is wrong (with the line number), without the
/// file's name and never quoting its content (it may be a private key).
pub fn parse_one(bytes: &[u8]) -> std::result::Result<PublicKey, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not an OpenSSH public key (not text)".to_string())?;
    if text.contains("PRIVATE KEY") {
        return Err("this is a private key, not a public one (give the .pub file); it was not kept".into());
    }
    if text.contains("BEGIN SSH2 PUBLIC KEY") {
        return Err("an RFC 4716 (SSH2) public key: convert it with `ssh-keygen -i -f FILE` first".into());
    }
    let mut found: Option<(usize, PublicKey)> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((first, _)) = &found {
            return Err(format!(
                "line {n}: a second key (the first is on line {first}): one key per entry, add each with its own name"
            ));
        }
        let key = parse_line(line).map_err(|e| format!("line {n}: {e}"))?;
        found = Some((n, key));
    }
    found.map(|(_, k)| k).ok_or_else(|| "no OpenSSH public key in it".to_string())
}

/// One key line, checked: type, size, comment.
fn parse_line(line: &str) -> std::result::Result<PublicKey, String> {
    let key = PublicKey::from_openssh(line).map_err(|e| {
        let word = line.split_whitespace().next().unwrap_or_default();
        if Algorithm::new(word).is_err() || word.contains("-cert-") {
            "not an OpenSSH public key (it must start with the key type, such as ssh-ed25519; options and certificates are not taken)".to_string()
        } else {
            format!("not an OpenSSH public key ({e})")
        }
    })?;
    check_key(&key)?;
    if key.comment().chars().any(char::is_control) {
        return Err("the key's comment holds control characters".into());
    }
    Ok(key)
}

/// The type rules: DSA and unknown types refused, RSA of at least [`MIN_RSA_BITS`].
fn check_key(key: &PublicKey) -> std::result::Result<(), String> {
    match key.key_data() {
        KeyData::Dsa(_) => {
            Err("a DSA key: refused (1024 bits, and OpenSSH itself no longer takes it); make an ed25519 key"
                .into())
        }
        KeyData::Rsa(_) => {
            let bits = bits(key.key_data());
            if bits < MIN_RSA_BITS {
                Err(format!("an RSA key of {bits} bits: at least {MIN_RSA_BITS} are needed"))
            } else {
                Ok(())
            }
        }
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) | KeyData::SkEcdsaSha2NistP256(_) | KeyData::SkEd25519(_) => {
            Ok(())
        }
        _ => Err(format!("an unknown key type {:?}", key.algorithm().as_str())),
    }
}

/// The key's size in bits, as ssh-keygen counts it.
fn bits(data: &KeyData) -> u32 {
    match data {
        KeyData::Rsa(rsa) => {
            let n = rsa.n.as_positive_bytes().unwrap_or_default();
            let n = match n.iter().position(|&b| b != 0) {
                Some(i) => &n[i..],
                None => return 0,
            };
            let top = 8 - n[0].leading_zeros();
            u32::try_from(n.len() - 1).unwrap_or(u32::MAX / 16).saturating_mul(8).saturating_add(top)
        }
        KeyData::Ecdsa(ec) => match ec.curve().as_str() {
            "nistp384" => 384,
            "nistp521" => 521,
            _ => 256,
        },
        _ => 256,
    }
}

/// ssh-keygen's name of the key's type.
fn type_name(data: &KeyData) -> &'static str {
    match data {
        KeyData::Rsa(_) => "RSA",
        KeyData::Dsa(_) => "DSA",
        KeyData::Ecdsa(_) => "ECDSA",
        KeyData::Ed25519(_) => "ED25519",
        KeyData::SkEcdsaSha2NistP256(_) => "ECDSA-SK",
        KeyData::SkEd25519(_) => "ED25519-SK",
        _ => "UNKNOWN",
    }
}

/// What `list` shows of the key `key` named `name`.
pub fn info(name: &str, key: &PublicKey) -> KeyInfo {
    KeyInfo {
        name: name.to_string(),
        key_type: type_name(key.key_data()).to_string(),
        algorithm: key.algorithm().as_str().to_string(),
        bits: bits(key.key_data()),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        comment: key.comment().to_string(),
        line: line_of(key),
    }
}

/// The key's authorized_keys line.
fn line_of(key: &PublicKey) -> String {
    // Encoding a key that was just decoded does not fail; an empty line
    // would be refused by every reader.
    key.to_openssh().unwrap_or_default()
}

/// The repository's keys, sorted by name; empty when there is none.
///
/// # Errors
/// [`ErrorKind::BadSidecar`] naming a `.pub` file of `keys/` that is not
/// a kept key (see the module); an I/O error reading the folder.
pub fn list(repo_root: &Path) -> Result<Vec<Entry>> {
    Ok(list_keys(repo_root)?.into_iter().map(|k| Entry { name: k.name, line: k.line }).collect())
}

/// [`list`], with each key's type, size, fingerprint and comment.
///
/// # Errors
/// As [`list`].
pub fn list_keys(repo_root: &Path) -> Result<Vec<KeyInfo>> {
    Ok(read_all(repo_root)?.into_iter().map(|(name, key)| info(&name, &key)).collect())
}

/// The parsed keys, sorted by name.
fn read_all(repo_root: &Path) -> Result<Vec<(String, PublicKey)>> {
    let dir = keys_dir(repo_root);
    match fs::symlink_metadata(&dir) {
        Err(e) if fsutil::is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("inspect", &dir, e)),
        Ok(md) if !md.is_dir() => {
            return Err(Error::new(
                ErrorKind::BadSidecar,
                format!(
                    "{} is {}, not a folder of keys",
                    dir.display(),
                    fsutil::describe_type(md.file_type())
                ),
            ));
        }
        Ok(_) => {}
    }
    let entries = fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with('.') {
            continue;
        }
        let Some(name) = file.strip_suffix(KEY_EXT) else { continue };
        let path = entry.path();
        let bad = |why: String| Error::new(ErrorKind::BadSidecar, format!("{}: {why}", path.display()));
        check_name(name).map_err(|e| bad(e.to_string()))?;
        if keys.len() >= MAX_KEYS {
            return Err(Error::new(
                ErrorKind::BadSidecar,
                format!("{}: more than {MAX_KEYS} keys", dir.display()),
            ));
        }
        let bytes = vmrepo_repo::catalog::read_capped(&path, MAX_KEY_FILE).map_err(|e| bad(e.to_string()))?;
        let key = parse_one(&bytes).map_err(bad)?;
        keys.push((name.to_string(), key));
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keys)
}

/// The authorized_keys file of `entries`: each line once, in order, each
/// ending with a line break; empty for no entry.
pub fn authorized_keys(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&e.line);
        out.push('\n');
    }
    out
}

/// Keeps the key in `bytes` (a `.pub` file's content, read by the caller
/// with a cap; `source` names it in errors) as `name`, or by default the
/// key's comment made a name ([`sanitise_name`]), else `file_name`'s. The
/// repository lock is held while the folder is checked and written.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for what is not one acceptable key or a bad
/// name; [`ErrorKind::AlreadyExists`] when the name is taken or the same
/// key is kept under another name (named in the message);
/// [`ErrorKind::BadSidecar`] when the folder holds a bad file;
/// [`ErrorKind::Locked`], [`ErrorKind::Interrupted`], I/O errors.
pub fn add(
    repo: &Repository,
    bytes: &[u8],
    source: &str,
    name: Option<&str>,
    file_name: Option<&str>,
    cancel: &AtomicBool,
) -> Result<KeyInfo> {
    let key = parse_one(bytes).map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{source}: {e}")))?;
    let name = match name {
        Some(n) => n.to_string(),
        None => sanitise_name(key.comment())
            .or_else(|| file_name.and_then(|f| sanitise_name(f.strip_suffix(KEY_EXT).unwrap_or(f))))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{source}: the key has no comment to name it by: give --name NAME"),
                )
            })?,
    };
    check_name(&name)?;
    let _lock = RepoLock::acquire(&repo.meta_dir(), &|| {}, cancel)?;
    let root = repo.root();
    let existing = read_all(root)?;
    if existing.iter().any(|(n, _)| *n == name) {
        return Err(Error::new(ErrorKind::AlreadyExists, format!("a key named {name:?} is already kept")));
    }
    if let Some((same, _)) = existing.iter().find(|(_, k)| k.key_data() == key.key_data()) {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{source}: the key {} is already kept, as {same:?}", key.fingerprint(HashAlg::Sha256)),
        ));
    }
    let dir = keys_dir(root);
    match fs::create_dir(&dir) {
        Ok(()) => fsutil::fsync_dir(root)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create the folder", &dir, e)),
    }
    fsutil::real_folder(root, &dir)?;
    let info = info(&name, &key);
    fsutil::write_atomic(
        &dir.join(format!("{name}{KEY_EXT}")),
        format!("{}\n", info.line).as_bytes(),
        0o644,
    )?;
    Ok(info)
}

/// Removes the key `name`, under the repository lock.
///
/// # Errors
/// [`ErrorKind::NotFound`] when no key has that name;
/// [`ErrorKind::InvalidInput`] for a bad name or a file that is a link or
/// not a regular file (removed by hand, not by vmrepo); lock and I/O errors.
pub fn remove(repo: &Repository, name: &str, cancel: &AtomicBool) -> Result<KeyInfo> {
    check_name(name)?;
    let _lock = RepoLock::acquire(&repo.meta_dir(), &|| {}, cancel)?;
    let root = repo.root();
    let dir = keys_dir(root);
    let path = dir.join(format!("{name}{KEY_EXT}"));
    let md = match fs::symlink_metadata(&path) {
        Err(e) if fsutil::is_not_found(&e) => {
            return Err(Error::new(ErrorKind::NotFound, format!("no key is named {name:?}")));
        }
        Err(e) => return Err(Error::io("inspect", &path, e)),
        Ok(md) => md,
    };
    fsutil::real_folder(root, &dir)?;
    if !md.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is {}, not a key vmrepo kept", path.display(), fsutil::describe_type(md.file_type())),
        ));
    }
    // What is removed is said; a file that is no key is removed all the same.
    let bytes = vmrepo_repo::catalog::read_capped(&path, MAX_KEY_FILE).unwrap_or_default();
    let info = match parse_one(&bytes) {
        Ok(key) => info(name, &key),
        Err(_) => KeyInfo {
            name: name.to_string(),
            key_type: "UNKNOWN".into(),
            algorithm: String::new(),
            bits: 0,
            fingerprint: String::new(),
            comment: String::new(),
            line: String::new(),
        },
    };
    fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
    fsutil::fsync_dir(&dir)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFnCx4zmxxfj5Jz757+bi0dCaMtAygSJRF0KYHdpwc7K alice@laptop";

    #[test]
    fn names_are_checked_and_made_from_comments() {
        for good in ["alice", "alice@laptop", "a.b_c-d", "x"] {
            check_name(good).unwrap();
        }
        for bad in ["", ".hidden", "-opt", "@x", "a/b", "..", "a b", "é", &"x".repeat(65), "a\nb"] {
            assert_eq!(check_name(bad).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        assert_eq!(
            sanitise_name("Alice Smith <alice@cern.ch>").as_deref(),
            Some("Alice-Smith-alice@cern.ch")
        );
        assert_eq!(sanitise_name("../../etc/passwd").as_deref(), Some("etc-passwd"));
        assert_eq!(sanitise_name("  ...  "), None);
        assert_eq!(sanitise_name(&"y".repeat(200)).unwrap().len(), MAX_NAME);
    }

    #[test]
    fn one_key_per_file_and_no_private_key_echoed() {
        let k = parse_one(format!("# mine\n\n{ED}\r\n").as_bytes()).unwrap();
        assert_eq!(k.comment(), "alice@laptop");
        let two = format!("{ED}\n{ED}\n");
        assert!(parse_one(two.as_bytes()).unwrap_err().contains("line 2: a second key"));
        let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n";
        let err = parse_one(private.as_bytes()).unwrap_err();
        assert!(err.contains("private key") && !err.contains("b3Bl"), "{err}");
        assert!(parse_one(b"\xff\xfe").is_err());
        assert!(parse_one(b"").unwrap_err().contains("no OpenSSH"));
        let opts = format!("from=\"10.0.0.1\" {ED}");
        assert!(parse_one(opts.as_bytes()).unwrap_err().contains("options"));
        assert!(parse_one(b"ssh-ed25519 AAAA x").is_err());
        let ctl = format!("{ED}\x1b[2J");
        assert!(parse_one(ctl.as_bytes()).unwrap_err().contains("control"));
    }

    #[test]
    fn a_repository_keeps_lists_refuses_twice_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Repository::init(&dir.path().join("repo")).unwrap();
        let no = AtomicBool::new(false);
        assert!(list(repo.root()).unwrap().is_empty());
        let k = add(&repo, ED.as_bytes(), "a.pub", None, Some("a.pub"), &no).unwrap();
        assert_eq!((k.name.as_str(), k.key_type.as_str(), k.bits), ("alice@laptop", "ED25519", 256));
        assert_eq!(k.fingerprint, "SHA256:1MFEBEXxRZfcWTN+nzJ8gO2ziVJE8Tg01cz+5otl7yk");
        let err = add(&repo, ED.as_bytes(), "b.pub", Some("bob"), None, &no).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("\"alice@laptop\""), "{err}");
        let entries = list(repo.root()).unwrap();
        assert_eq!(entries, [Entry { name: "alice@laptop".into(), line: ED.into() }]);
        assert_eq!(authorized_keys(&entries), format!("{ED}\n"));
        // A link dropped into the folder makes the list fail, by name.
        std::os::unix::fs::symlink("/etc/passwd", keys_dir(repo.root()).join("evil.pub")).unwrap();
        let err = list(repo.root()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadSidecar);
        assert!(err.to_string().contains("evil.pub"), "{err}");
        assert_eq!(remove(&repo, "evil", &no).unwrap_err().kind(), ErrorKind::InvalidInput);
        fs::remove_file(keys_dir(repo.root()).join("evil.pub")).unwrap();
        assert_eq!(remove(&repo, "alice@laptop", &no).unwrap().bits, 256);
        assert_eq!(remove(&repo, "alice@laptop", &no).unwrap_err().kind(), ErrorKind::NotFound);
        assert!(list(repo.root()).unwrap().is_empty());
    }
}
