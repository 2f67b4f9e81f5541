//! Request paths under `/vm/` and opening what they name without ever
//! leaving the repository's `vm/` tree.
//!
//! A path is taken apart from the raw request target (before any decoding
//! by the router), each segment percent-decoded once and refused when it is
//! empty, `.` or `..`, starts with a dot (`.vmrepo/`, staging folders), or
//! holds a slash, a backslash, NUL or another control character after
//! decoding. The file is then opened one component at a time from the
//! repository root with `O_NOFOLLOW`, so a symbolic link anywhere on the way
//! is refused rather than followed, and only a regular file is served.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::error::ApiError;

/// The longest segment accepted (a file name on Linux).
pub const MAX_SEGMENT: usize = 255;

/// The segments after `/vm/` of a raw request path, decoded and checked.
///
/// # Errors
/// `400` for a malformed path, `404` for one that is not under `/vm/`.
pub fn vm_segments(raw_path: &str) -> Result<Vec<String>, ApiError> {
    let rest = raw_path.strip_prefix("/vm/").ok_or_else(|| ApiError::not_found("not under /vm/"))?;
    let segments: Vec<String> = rest.split('/').map(decode_segment).collect::<Result<_, _>>()?;
    if segments.len() < 2 || segments.len() > 3 {
        return Err(ApiError::not_found(format!(
            "{raw_path}: /vm/VM/FILE or /vm/VM/FOLDER/PART is expected"
        )));
    }
    Ok(segments)
}

/// One segment, percent-decoded and checked.
pub fn decode_segment(raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("a path segment {why}"));
    if raw.len() > MAX_SEGMENT * 3 {
        return Err(bad("is too long"));
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let s = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8"))?;
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if s.len() > MAX_SEGMENT {
        return Err(bad("is too long"));
    }
    if s.starts_with('.') {
        return Err(bad("starts with a dot"));
    }
    if s.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(bad("holds a slash, a backslash or a control character"));
    }
    Ok(s)
}

/// Opens `root/vm/<components...>` for reading, refusing a symbolic link at
/// any step and anything but a regular file at the end. Never blocks on a
/// FIFO (`O_NONBLOCK`, cleared once the file is known to be regular).
///
/// # Errors
/// `404` when a component is missing, a link or not a folder; `403`-like
/// refusals are reported as `404` so as to say nothing of what is there.
pub fn open_beneath(root: &Path, components: &[&str]) -> Result<(File, std::fs::Metadata), ApiError> {
    let gone = |what: &str| ApiError::not_found(format!("{what}: no such file"));
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir: OwnedFd =
        rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| ApiError::internal(format!("cannot open the repository {}: {e}", root.display())))?;
    let mut path = vec!["vm"];
    path.extend_from_slice(components);
    let (last, folders) = path.split_last().ok_or_else(|| gone("(empty)"))?;
    for c in folders {
        dir = rustix::fs::openat(&dir, *c, dir_flags, Mode::empty()).map_err(|_| gone(&path.join("/")))?;
    }
    let fd = rustix::fs::openat(
        &dir,
        *last,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|_| gone(&path.join("/")))?;
    let file = File::from(fd);
    let md =
        file.metadata().map_err(|e| ApiError::internal(format!("cannot stat {}: {e}", path.join("/"))))?;
    if !md.file_type().is_file() {
        return Err(gone(&path.join("/")));
    }
    // Reads of a regular file never block on O_NONBLOCK, but clear it all the same.
    let fl = rustix::fs::fcntl_getfl(&file).map_err(|e| ApiError::internal(e.to_string()))?;
    rustix::fs::fcntl_setfl(&file, fl - OFlags::NONBLOCK).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((file, md))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_forms_are_refused() {
        for p in [
            "/vm/kvm/..",
            "/vm/kvm/%2e%2e",
            "/vm/kvm/%2E%2E/x",
            "/vm/../etc/passwd",
            "/vm/kvm/a%2fb",
            "/vm/kvm/a%5cb",
            "/vm/kvm/a%00b",
            "/vm/kvm/.vmrepo",
            "/vm/kvm/",
            "/vm/kvm//x",
            "/vm/kvm/%ff",
        ] {
            let e = vm_segments(p).unwrap_err();
            assert!(e.status.is_client_error(), "{p}: {e:?}");
        }
        assert_eq!(vm_segments("/vm/kvm/a.img").unwrap(), ["kvm", "a.img"]);
        assert_eq!(vm_segments("/vm/vmware/f/p.vmdk").unwrap(), ["vmware", "f", "p.vmdk"]);
    }
}
