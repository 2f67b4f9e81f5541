//! The proof that a machine takes a seed: a Linux kernel (Debian's
//! `linux-image-cloud-amd64`) and a busybox initramfs (Debian's
//! `busybox-static`) boot under `qemu-system-x86_64 -accel tcg` with two
//! virtio disks, a decoy ISO and the seed; the initramfs finds the disk
//! labelled `cidata` as cloud-init does (`findfs LABEL=cidata`), mounts it
//! with Linux's own iso9660 driver (Rock Ridge, then Joliet with `norock`),
//! and prints what it holds on the serial console; the test compares it with
//! what was written, byte for byte.
//!
//! The Debian packages are unpacked (`apt-get download` + `dpkg-deb -x`) and
//! cached under target/tmp/context-boot: the kernel and busybox must not be
//! installed on the host, and Debian's qemu-system-x86 cannot be installed
//! beside a newer qemu-utils. A `qemu-system-x86_64` on PATH is used as is.
//! Skipped with a notice where a piece cannot be had; under CI a failure.
//! TCG is slow: the guest is given minutes, and the test is never timed.
//! One seed is written with `vmrepo_site::iso::write` directly (a decoy disk
//! beside it), the other by `vmrepo context IMAGE --nodes rcas7 --keys`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The longest the guest may take before it is killed (TCG on a busy machine).
const GUEST_LIMIT: Duration = Duration::from_secs(240);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Under CI a failure naming what is missing; elsewhere a notice.
fn missing(what: &str) {
    assert!(!ci(), "the boot test needs {what}");
    eprintln!("SKIPPED: the boot test needs {what}");
}

fn said(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("context-boot")
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok installed"))
}

/// Debian `packages` unpacked into `cache()/name` (once; a finished unpack is
/// renamed into place, so a killed run leaves nothing half-made there).
fn unpack(name: &str, packages: &[String]) -> Result<PathBuf, String> {
    let root = cache().join(name);
    if root.join(".done").is_file() {
        return Ok(root);
    }
    let tmp = cache().join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("debs")).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let download =
        || Command::new("apt-get").arg("download").args(packages).current_dir(tmp.join("debs")).output();
    let mut out = download();
    if !out.as_ref().is_ok_and(|o| o.status.success())
        && Command::new("apt-get").args(["update", "-qq"]).output().is_ok_and(|o| o.status.success())
    {
        out = download();
    }
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(format!("apt-get download {} failed: {}", packages.join(" "), said(&o))),
        Err(e) => return Err(format!("apt-get: {e}")),
    }
    let debs = std::fs::read_dir(tmp.join("debs")).map_err(|e| e.to_string())?;
    for deb in debs.flatten() {
        let o = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb.path())
            .arg(&tmp)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("dpkg-deb -x {}: {}", deb.path().display(), said(&o)));
        }
    }
    let _ = std::fs::remove_dir_all(tmp.join("debs"));
    std::fs::write(tmp.join(".done"), b"").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&root);
    if std::fs::rename(&tmp, &root).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(root)
}

/// What runs qemu: the program and its environment and firmware arguments.
struct Qemu {
    program: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// `qemu-system-x86_64` from PATH, or Debian's unpacked with the libraries
/// the host lacks (the package's dependencies, recursively, that are not
/// installed) and its firmware.
fn qemu() -> Result<Qemu, String> {
    if Command::new("sh")
        .args(["-c", "command -v qemu-system-x86_64"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(Qemu { program: "qemu-system-x86_64".into(), env: vec![], args: vec![] });
    }
    let root = cache().join("qemu");
    let packages = if root.join(".done").is_file() {
        vec![]
    } else {
        let o = Command::new("apt-cache")
            .args([
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
            ])
            .args(["--no-replaces", "--no-enhances", "--no-pre-depends", "qemu-system-x86"])
            .output()
            .map_err(|e| format!("apt-cache: {e}"))?;
        if !o.status.success() {
            return Err(format!("apt-cache depends qemu-system-x86: {}", said(&o)));
        }
        let mut names: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        names.retain(|p| !installed(p));
        names
    };
    let root = unpack("qemu", &packages)?;
    let lib = format!("{0}/usr/lib/x86_64-linux-gnu:{0}/lib/x86_64-linux-gnu", root.display());
    let program = root.join("usr/bin/qemu-system-x86_64");
    let env = vec![("LD_LIBRARY_PATH".to_string(), lib)];
    let args = vec![
        "-L".to_string(),
        root.join("usr/share/qemu").display().to_string(),
        "-L".to_string(),
        root.join("usr/share/seabios").display().to_string(),
    ];
    let o = Command::new(&program)
        .arg("--version")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if !o.status.success() {
        return Err(format!("{} --version: {}", program.display(), said(&o)));
    }
    Ok(Qemu { program, env, args })
}

/// Debian's cloud kernel: the unpacked package root and the kernel's version.
fn kernel() -> Result<(PathBuf, String), String> {
    let root = if cache().join("kernel/.done").is_file() {
        cache().join("kernel")
    } else {
        // linux-image-cloud-amd64 is a metapackage: the kernel is in the
        // linux-image-<version>-cloud-amd64 it depends on.
        let o = Command::new("apt-cache")
            .args(["depends", "linux-image-cloud-amd64"])
            .output()
            .map_err(|e| format!("apt-cache: {e}"))?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let package = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
            .ok_or_else(|| format!("apt-cache depends linux-image-cloud-amd64 names no kernel: {text}"))?
            .to_string();
        unpack("kernel", &[package])?
    };
    let modules =
        std::fs::read_dir(root.join("lib/modules")).map_err(|e| format!("{}: {e}", root.display()))?;
    let version = modules
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .next()
        .ok_or_else(|| format!("{}: no lib/modules/<version>", root.display()))?;
    if !root.join(format!("boot/vmlinuz-{version}")).is_file() {
        return Err(format!("{}: no boot/vmlinuz-{version}", root.display()));
    }
    Ok((root, version))
}

fn busybox() -> Result<PathBuf, String> {
    let root = unpack("busybox", &["busybox-static".to_string()])?;
    let b = root.join("bin/busybox");
    if b.is_file() { Ok(b) } else { Err(format!("{}: no bin/busybox", root.display())) }
}

/// Every .ko file of the kernel by module name.
fn module_files(dir: &Path, found: &mut BTreeMap<String, PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            module_files(&p, found);
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
            if let Some(stem) = name.strip_suffix(".ko") {
                found.insert(stem.replace('-', "_"), p.clone());
            } else if name.contains(".ko.") {
                // Compressed modules (newer Debian) would need unpacking first.
                found.entry(name.split(".ko.").next().unwrap_or(name).replace('-', "_")).or_insert(p.clone());
            }
        }
    }
}

/// The module's `depends=` from its .modinfo strings.
fn depends(ko: &[u8]) -> Vec<String> {
    let needle = b"\0depends=";
    let Some(at) = ko.windows(needle.len()).position(|w| w == needle) else { return vec![] };
    let rest = &ko[at + needle.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// The modules `wanted` and what they depend on, dependencies first, as
/// (name, bytes); those built into the kernel are left out.
fn modules(kroot: &Path, version: &str, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let base = kroot.join("lib/modules").join(version);
    let builtin = std::fs::read_to_string(base.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |m: &str| {
        builtin.lines().any(|l| {
            l.rsplit('/').next().and_then(|f| f.strip_suffix(".ko")).map(|f| f.replace('-', "_"))
                == Some(m.to_string())
        })
    };
    let mut files = BTreeMap::new();
    module_files(&base.join("kernel"), &mut files);
    let mut out: Vec<(String, Vec<u8>)> = vec![];
    fn visit(
        m: &str,
        files: &BTreeMap<String, PathBuf>,
        is_builtin: &dyn Fn(&str) -> bool,
        out: &mut Vec<(String, Vec<u8>)>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 32 || out.iter().any(|(n, _)| n == m) || is_builtin(m) {
            return Ok(());
        }
        let path = files.get(m).ok_or_else(|| format!("the kernel has no module {m}"))?;
        if path.extension().is_some_and(|e| e != "ko") {
            return Err(format!("{}: compressed modules are not handled", path.display()));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for d in depends(&bytes) {
            visit(&d, files, is_builtin, out, depth + 1)?;
        }
        out.push((m.to_string(), bytes));
        Ok(())
    }
    for m in wanted {
        visit(m, &files, &is_builtin, &mut out, 0)?;
    }
    Ok(out)
}

/// A newc cpio archive (what the kernel unpacks as its initramfs).
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Cpio {
        Cpio { buf: vec![], ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.ino += 1;
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, b"", (0, 0));
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, data, (0, 0));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, b"", (0, 0));
        self.buf
    }
}

/// The initramfs's /init: load the modules, find the disk labelled cidata,
/// mount it (Rock Ridge, then Joliet), print what it holds between markers,
/// power off.
fn init_script(modules: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         echo VMREPO-BOOTED\n",
    );
    for m in modules {
        s.push_str(&format!("insmod /lib/modules/{m}.ko || echo VMREPO-ERROR insmod {m}\n"));
    }
    s.push_str(
        r#"dev=
i=0
while [ $i -lt 300 ]; do
  dev=$(findfs LABEL=cidata 2>/dev/null) && break
  sleep 0.2
  i=$((i+1))
done
echo "VMREPO-DEVICE $dev"
echo "VMREPO-LABEL $(dd if=$dev bs=1 skip=32808 count=32 2>/dev/null)"
mkdir -p /rr /joliet
mount -t iso9660 -o ro $dev /rr || echo VMREPO-ERROR mount rock ridge
mount -t iso9660 -o ro,norock $dev /joliet || echo VMREPO-ERROR mount joliet
for f in meta-data user-data network-config; do
  echo "VMREPO-BEGIN $f"
  cat /rr/$f
  echo "VMREPO-END $f"
done
cd /rr && for f in *; do echo "VMREPO-RR $(sha256sum "$f")"; done; cd /
cd /joliet && for f in *; do echo "VMREPO-JOLIET $(sha256sum "$f")"; done; cd /
echo "VMREPO-LS $(ls -ln /rr/meta-data)"
dmesg | grep -i "iso 9660 extensions" | sed 's/^/VMREPO-DMESG /'
echo VMREPO-DONE
poweroff -f
"#,
    );
    s
}

/// Kills qemu when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots the kernel and an initramfs built here with `disks` attached as
/// virtio disks, in order; returns the serial console's text.
fn boot(disks: &[&Path]) -> Option<String> {
    // Two tests must not unpack the same packages at once.
    static UNPACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let held = UNPACK.lock().unwrap_or_else(|e| e.into_inner());
    let q = match qemu() {
        Ok(q) => q,
        Err(e) => {
            missing(&format!("qemu-system-x86_64 (from PATH, or Debian's qemu-system-x86 unpacked): {e}"));
            return None;
        }
    };
    let (kroot, version) = match kernel() {
        Ok(k) => k,
        Err(e) => {
            missing(&format!("Debian's linux-image-cloud-amd64 unpacked: {e}"));
            return None;
        }
    };
    let busybox = match busybox() {
        Ok(b) => std::fs::read(b).unwrap(),
        Err(e) => {
            missing(&format!("Debian's busybox-static unpacked: {e}"));
            return None;
        }
    };
    drop(held);
    let mods = modules(&kroot, &version, &["virtio_pci", "virtio_blk", "isofs"])
        .unwrap_or_else(|e| panic!("the kernel's modules: {e}"));
    let names: Vec<String> = mods.iter().map(|(n, _)| n.clone()).collect();
    let mut cpio = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    cpio.entry("dev/console", 0o020_600, b"", (5, 1));
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.file("init", 0o755, init_script(&names).as_bytes());
    for (n, bytes) in &mods {
        cpio.file(&format!("lib/modules/{n}.ko"), 0o644, bytes);
    }
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("initrd.cpio");
    std::fs::write(&initrd, cpio.finish()).unwrap();
    let serial = tmp.path().join("serial.txt");

    let mut cmd = Command::new(&q.program);
    cmd.envs(q.env.iter().map(|(k, v)| (k, v)))
        .args(&q.args)
        .args(["-accel", "tcg", "-m", "256", "-no-reboot", "-nodefaults", "-display", "none"])
        .arg("-kernel")
        .arg(kroot.join(format!("boot/vmlinuz-{version}")))
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 rdinit=/init"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()));
    for d in disks {
        cmd.arg("-drive").arg(format!("file={},format=raw,if=virtio,readonly=on", d.display()));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut guard = Guard(cmd.spawn().unwrap());
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < GUEST_LIMIT,
            "the guest did not power off within {GUEST_LIMIT:?}; console:\n{}",
            std::fs::read_to_string(&serial).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    if let Some(mut e) = guard.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let console = std::fs::read_to_string(&serial).unwrap_or_default().replace('\r', "");
    eprintln!("the guest ran {:.1} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "qemu failed ({status}): {stderr}\nconsole:\n{console}");
    Some(console)
}

fn between<'a>(console: &'a str, file: &str) -> &'a str {
    let begin = format!("VMREPO-BEGIN {file}\n");
    let end = format!("VMREPO-END {file}\n");
    let a = console.find(&begin).unwrap_or_else(|| panic!("no {begin:?} on the console:\n{console}"))
        + begin.len();
    let b = console[a..].find(&end).unwrap_or_else(|| panic!("no {end:?} on the console:\n{console}")) + a;
    &console[a..b]
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_machine_finds_the_seed_labelled_cidata_and_reads_its_files() {
    let meta = b"instance-id: rcas7-test\nlocal-hostname: rcas7\n".to_vec();
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn0t5cZ0Zm4Tz2wS3v5M9XqZq1pY6m8gQ6y0hJjKkLl star@rcas-test";
    let user = format!("#cloud-config\nhostname: rcas7\nssh_authorized_keys:\n  - {key}\n").into_bytes();
    let net = b"version: 2\nethernets:\n  all:\n    match:\n      name: \"e*\"\n    dhcp4: true\n".to_vec();
    let files = [
        vmrepo_site::iso::File { name: "meta-data", data: &meta },
        vmrepo_site::iso::File { name: "user-data", data: &user },
        vmrepo_site::iso::File { name: "network-config", data: &net },
    ];
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed.iso");
    let mut out = std::fs::File::create(&seed).unwrap();
    vmrepo_site::iso::write(&mut out, "cidata", &files).unwrap();
    out.flush().unwrap();
    // A decoy first, so that the seed is found by its label, not its place.
    let decoy = tmp.path().join("decoy.iso");
    let other = b"instance-id: wrong\nlocal-hostname: wrong\n";
    vmrepo_site::iso::write(
        std::fs::File::create(&decoy).unwrap(),
        "other",
        &[vmrepo_site::iso::File { name: "meta-data", data: other }],
    )
    .unwrap();

    let Some(console) = boot(&[&decoy, &seed]) else { return };
    assert!(console.contains("VMREPO-DONE"), "the guest did not finish:\n{console}");
    assert!(!console.contains("VMREPO-ERROR"), "the guest failed:\n{console}");
    assert!(console.contains("VMREPO-DEVICE /dev/vdb\n"), "the seed is not the disk found:\n{console}");
    assert_eq!(between(&console, "meta-data").as_bytes(), &meta[..]);
    assert_eq!(between(&console, "user-data").as_bytes(), &user[..]);
    assert_eq!(between(&console, "network-config").as_bytes(), &net[..]);
    assert!(between(&console, "meta-data").contains("local-hostname: rcas7\n"));
    assert!(
        between(&console, "user-data").lines().any(|l| l == format!("  - {key}")),
        "the key line:\n{console}"
    );
    // The names through Rock Ridge and through Joliet, with the data's hashes.
    for tree in ["RR", "JOLIET"] {
        for f in &files {
            let line = format!("VMREPO-{tree} {}  {}\n", hex(&Sha256::digest(f.data)), f.name);
            assert!(console.contains(&line), "no {line:?} on the console:\n{console}");
        }
    }
    // Linux saw Rock Ridge's ER entry; the mode and owner come from PX.
    assert!(console.contains("ISO 9660 Extensions: RRIP_1991A"), "no Rock Ridge in dmesg:\n{console}");
    assert!(console.contains("VMREPO-LS -r--------    1 0        0"), "the mode from PX:\n{console}");
}

/// An SSH public key (its private half was thrown away).
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF4K0NoxtbfG+NFQNthXoCDEdhVdU4BcDBOxSamXjlaD star@rcas-test";

#[test]
fn a_machine_takes_the_seed_vmrepo_context_writes() {
    let r = crate::util::Repo::new();
    let src = r.scratch().join("img.raw");
    crate::util::pattern_file(&src, 1 << 16, 7);
    let added = r.add(&src, "kvm", &["--max-size", "2GB"]);
    let image = [&added["image"]["name"], &added["name"], &added[0]["name"], &added[0]["image"]["name"]]
        .iter()
        .find_map(|v| v.as_str())
        .unwrap_or_else(|| panic!("no image name in vmrepo add's JSON: {added}"))
        .to_string();
    std::fs::create_dir_all(r.root.join("keys")).unwrap();
    std::fs::write(r.root.join("keys/star.pub"), format!("{KEY}\n")).unwrap();
    let out = r.scratch().join("seeds");
    let o = out.to_str().unwrap();
    r.ok(&["context", &image, "--nodes", "rcas7", "--keys", "-o", o]);
    // The same seed as plain files: what the guest must read back.
    let plain = r.scratch().join("plain");
    r.ok(&[
        "context",
        &image,
        "--nodes",
        "rcas7",
        "--keys",
        "--format",
        "plain",
        "-o",
        plain.to_str().unwrap(),
    ]);
    let read = |f: &str| std::fs::read(plain.join("rcas7").join(f)).unwrap();
    let (meta, user, net) = (read("meta-data"), read("user-data"), read("network-config"));

    let Some(console) = boot(&[&out.join("rcas7.iso")]) else { return };
    assert!(console.contains("VMREPO-DONE"), "the guest did not finish:\n{console}");
    assert!(!console.contains("VMREPO-ERROR"), "the guest failed:\n{console}");
    assert_eq!(between(&console, "meta-data").as_bytes(), &meta[..]);
    assert_eq!(between(&console, "user-data").as_bytes(), &user[..]);
    assert_eq!(between(&console, "network-config").as_bytes(), &net[..]);
    let hostname = between(&console, "meta-data")
        .lines()
        .find_map(|l| l.strip_prefix("local-hostname: "))
        .unwrap_or_else(|| panic!("no local-hostname:\n{console}"));
    assert_eq!(hostname.trim_matches('"'), "rcas7");
    assert!(
        between(&console, "user-data").contains(KEY),
        "the key is not in the user-data the machine read:\n{console}"
    );
    assert!(console.contains("ISO 9660 Extensions: RRIP_1991A"), "no Rock Ridge in dmesg:\n{console}");
}
