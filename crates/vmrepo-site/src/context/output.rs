//! Writing the seeds: `nocloud` (`DIR/NODE.iso`, an ISO 9660 volume
//! `cidata`), `plain` (`DIR/NODE/{meta-data,user-data,network-config}`) and
//! `ec2` (one `DIR/user-data` for all copies of a launch).
//!
//! Nothing half-written is visible: every file is written to a hidden
//! temporary name beside its place, all are made durable with one `syncfs`
//! (one flush for a thousand seeds rather than a thousand), then renamed into
//! place and the folders synced. A file already there is replaced only when
//! asked (`force`); otherwise nothing at all is written.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use vmrepo_repo::fsutil;
use vmrepo_repo::{Error, ErrorKind, Result};

use super::cloud_config::{self, Options};
use super::network::Table;
use super::nodes::{self, Node};

/// How the seeds are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One ISO 9660 image labelled `cidata` per node (cloud-init's NoCloud).
    NoCloud,
    /// The three files of each node in a folder of its own.
    Plain,
    /// One user-data for EC2's launch of all the nodes' copies.
    Ec2,
}

/// The ISO volume label cloud-init's NoCloud looks for.
pub const VOLUME_ID: &str = "cidata";

/// A file written.
#[derive(Clone, Debug, Serialize)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// What was written for one node (for `ec2`, one entry for all: `node` is
/// the template of the names).
#[derive(Clone, Debug, Serialize)]
pub struct Seed {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub files: Vec<WrittenFile>,
}

/// The three files of one node, in the order they go on the disk.
pub fn files(o: &Options, node: &str, net: Option<&Table>) -> [(&'static str, String); 3] {
    [
        ("meta-data", cloud_config::meta_data(o, node)),
        ("user-data", cloud_config::user_data(o, node)),
        ("network-config", cloud_config::network_config(o, net.and_then(|t| t.get(node)))),
    ]
}

/// One file waiting for its rename.
struct Pending {
    tmp: PathBuf,
    path: PathBuf,
}

/// Writes the seeds of `nodes` into `dir` (made if missing).
///
/// # Errors
/// [`ErrorKind::AlreadyExists`] when an output is there and `force` is not
/// set (before anything is written); [`ErrorKind::InvalidInput`] for `ec2`
/// with nodes that are not one run (`rcas1..rcas64`) or with `--network`;
/// I/O errors naming the file. On error, no temporary file is left.
pub fn write(
    dir: &Path,
    format: Format,
    nodes: &[Node],
    o: &Options,
    net: Option<&Table>,
    force: bool,
) -> Result<Vec<Seed>> {
    if format == Format::Ec2 && net.is_some() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "--network does not apply to --format ec2: EC2 gives each copy its address",
        ));
    }
    let run = match format {
        Format::Ec2 => Some(nodes::as_run(nodes).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                "--format ec2 names copies from their launch index: --nodes must be one range (rcas1..rcas64)",
            )
        })?),
        _ => None,
    };
    let targets: Vec<PathBuf> = match format {
        Format::NoCloud => nodes.iter().map(|n| dir.join(format!("{}.iso", n.name))).collect(),
        Format::Plain => nodes
            .iter()
            .flat_map(|n| ["meta-data", "user-data", "network-config"].map(|f| dir.join(&n.name).join(f)))
            .collect(),
        Format::Ec2 => vec![dir.join("user-data")],
    };
    make_dir(dir)?;
    remove_stale_temp_files(&targets);
    if !force && let Some(t) = targets.iter().find(|t| t.symlink_metadata().is_ok()) {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{} exists (give --force to replace the seeds)", t.display()),
        ));
    }
    let mut pending = Vec::new();
    let result = write_all(dir, format, nodes, o, net, run.as_ref(), &mut pending);
    let result = result.and_then(|seeds| commit(dir, format, nodes, &pending).map(|()| seeds));
    for p in &pending {
        let _ = fs::remove_file(&p.tmp);
    }
    result
}

/// The temporary files a killed run left beside the targets (regular files
/// named as [`fsutil::temp_sibling`] names them, by a process of this host
/// that is gone); links and other programs' files are left alone.
fn remove_stale_temp_files(targets: &[PathBuf]) {
    let mut folders: Vec<&Path> = targets.iter().map(|t| fsutil::parent(t)).collect();
    folders.sort();
    folders.dedup();
    for folder in folders {
        let Ok(entries) = fs::read_dir(folder) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file())
                && fsutil::is_stale_temp_sibling(&e.file_name().to_string_lossy())
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("make folder", dir, e))?;
    match fs::metadata(dir) {
        Ok(md) if md.is_dir() => Ok(()),
        _ => Err(Error::new(ErrorKind::InvalidInput, format!("{} is not a folder", dir.display()))),
    }
}

fn write_all(
    dir: &Path,
    format: Format,
    nodes: &[Node],
    o: &Options,
    net: Option<&Table>,
    run: Option<&nodes::Run>,
    pending: &mut Vec<Pending>,
) -> Result<Vec<Seed>> {
    if let Some(run) = run {
        let text = cloud_config::user_data_ec2(o, run).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                "the user-data holds \"endraw\", which a jinja template cannot keep",
            )
        })?;
        let f = stage(&dir.join("user-data"), text.as_bytes(), 0o644, pending)?;
        return Ok(vec![Seed { node: run.name(0), instance_id: None, files: vec![f] }]);
    }
    let mut seeds = Vec::with_capacity(nodes.len());
    let mut iso = Vec::new();
    for n in nodes {
        let files = files(o, &n.name, net);
        // The user-data may hold the password seed: readable by its owner only.
        let written = match format {
            Format::NoCloud => {
                iso.clear();
                iso_image(&mut iso, &files)
                    .map_err(|e| Error::io("make the ISO of", &dir.join(&n.name), e))?;
                vec![stage(&dir.join(format!("{}.iso", n.name)), &iso, mode(o), pending)?]
            }
            _ => {
                let sub = dir.join(&n.name);
                if fs::symlink_metadata(&sub).is_err() {
                    fs::create_dir(&sub).map_err(|e| Error::io("make folder", &sub, e))?;
                }
                fsutil::real_folder(dir, &sub)?;
                let mut out = Vec::new();
                for (name, text) in &files {
                    out.push(stage(&sub.join(name), text.as_bytes(), mode(o), pending)?);
                }
                out
            }
        };
        let instance_id = Some(cloud_config::instance_id(&o.image, &n.name));
        seeds.push(Seed { node: n.name.clone(), instance_id, files: written });
    }
    Ok(seeds)
}

/// 0600 when the user-data carries the password seed, else 0644.
fn mode(o: &Options) -> u32 {
    if o.password.as_ref().is_some_and(|p| p.seed.is_some()) { 0o600 } else { 0o644 }
}

fn stage(path: &Path, bytes: &[u8], mode: u32, pending: &mut Vec<Pending>) -> Result<WrittenFile> {
    let tmp = fsutil::temp_sibling(path);
    let mut f: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io("create", path, e))?;
    pending.push(Pending { tmp, path: path.to_path_buf() });
    f.write_all(bytes).map_err(|e| Error::io("write", path, e))?;
    Ok(WrittenFile {
        path: path.to_path_buf(),
        size: bytes.len() as u64,
        sha256: vmrepo_repo::checksum::hex(&Sha256::digest(bytes)),
    })
}

fn commit(dir: &Path, format: Format, nodes: &[Node], pending: &[Pending]) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open folder", dir, e))?;
    rustix::fs::syncfs(&d).map_err(|e| Error::io("sync", dir, e.into()))?;
    for p in pending {
        fs::rename(&p.tmp, &p.path).map_err(|e| Error::io("rename into place", &p.path, e))?;
    }
    if format == Format::Plain {
        for n in nodes {
            fsutil::fsync_dir(&dir.join(&n.name))?;
        }
    }
    fsutil::fsync_dir(dir)
}

/// The NoCloud ISO of one node's files.
fn iso_image(out: &mut Vec<u8>, files: &[(&'static str, String)]) -> std::io::Result<()> {
    let entries: Vec<crate::iso::File<'_>> =
        files.iter().map(|(name, text)| crate::iso::File { name, data: text.as_bytes() }).collect();
    crate::iso::write(out, VOLUME_ID, &entries)
}
