#!/usr/bin/env python3
"""Builds the guest disks vmrepo's inspection tests read, with real tools, and
writes beside each one what the test must find in it.

    scripts/build-test-guests.py OUTDIR [--synthetic-only]

Two kinds of guests:

* synthetic guests whose release files, kernels, accounts and STAR folders
  imitate Scientific Linux 4, 5 and 6, CentOS 5 (with a Xen kernel beside its
  own), Fedora 12, Ubuntu 9.10 and two Xen paravirtual SL5 guests with no
  kernel in /boot (one whose inittab starts a getty on xvc0, one whose only
  evidence is a Xen module tree and /dev/xvda1 in its fstab), with STAR
  start-up files in the star account's home and in the system-wide places,
  on MBR (with logical partitions), GPT, LVM (VolGroup00/LogVol00, as SL5 and
  SL6 installed it) and bare-filesystem disks (8 MiB longer than their
  filesystem, as a disk grown without its filesystem);
* a minimal Debian (amd64, and i386 for 32-bit binaries) made by debootstrap,
  on ext4, ext3, xfs (mkfs.xfs with a protofile), btrfs (mkfs.btrfs --rootdir)
  and ext4 on LVM.

Filesystems are made with mke2fs -d, mkfs.xfs -p and mkfs.btrfs --rootdir
(nothing is mounted), laid on disks partitioned by sfdisk; LVM volumes are made
by the lvm2 tools on a loop device without activating them, and the root
filesystem is written at the offset lvs reports. Each disk is converted by
qemu-img into other formats.

The expected answers (OUTDIR/guests.json) come from what this script put in
and from the tools' own reports (sfdisk --json, dumpe2fs, xfs_db, btrfs
inspect-internal; sfdisk's table for what no partition covers, and sfdisk
--list-free), never from vmrepo. Everything is cached in OUTDIR and
rebuilt only when this script changes.
"""

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20
# Formats each disk is converted into, by guest index, so that every format
# meets several guests without converting every guest into every format.
FORMATS = [("qcow2", "qcow2", []), ("vmdk", "vmdk", []), ("vdi", "vdi", []), ("vpc", "vhd", []), ("vhdx", "vhdx", [])]


def run(*args, **kw):
    kw.setdefault("check", True)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    r = subprocess.run(list(args), **kw)
    return r.stdout.decode(errors="replace") if r.stdout is not None else ""


def have(tool):
    return shutil.which(tool) is not None


# ---------------------------------------------------------------- guest trees

def elf_header(bits):
    """A 64-byte ELF header for x86 of the given word size."""
    h = bytearray(64)
    h[0:4] = b"\x7fELF"
    h[4] = 2 if bits == 64 else 1
    h[5] = 1
    h[6] = 1
    h[16:18] = (2).to_bytes(2, "little")
    h[18:20] = (62 if bits == 64 else 3).to_bytes(2, "little")
    return bytes(h)


def bzimage(version):
    """A file with a Linux boot protocol header naming `version`."""
    img = bytearray(0x1000)
    img[0x1FE:0x200] = b"\x55\xaa"
    img[0x202:0x206] = b"HdrS"
    img[0x206:0x208] = (0x020A).to_bytes(2, "little")
    img[0x20E:0x210] = (0x0800).to_bytes(2, "little")
    s = (version + " (mockbuild@builder) #1 SMP").encode()
    img[0xA00:0xA00 + len(s)] = s
    return bytes(img)


def write(root, path, data, mode=0o644):
    p = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(p, mode)


def symlink(root, path, target):
    p = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.symlink(target, p)


# The star account's .cshrc unless a guest says otherwise: it sets STAR up.
DEFAULT_CSHRC = "setenv GROUP_DIR /usr/local/star/group\nsource $GROUP_DIR/group_env.csh\n"


SYNTHETIC = [
    dict(name="sl4", release=("/etc/redhat-release", "Scientific Linux SL release 4.7 (Beryllium)"),
         distro="scientificlinux", version="4.7", token="sl4.7", osinfo=None,
         kernels=["2.6.9-78.0.1.ELsmp"], bits=32, libs={"SL07d": 3}, layout="mbr", fs="ext3",
         hostname=("sysconfig", "rcas6016.rcf.bnl.gov"), pkg="rpm", root_pw="$1$abc$hashedpassword", keys=1),
    dict(name="sl5.3", release=("/etc/redhat-release", "Scientific Linux SL release 5.3 (Boron)"),
         distro="scientificlinux", version="5.3", token="sl5.3", osinfo="scientificlinux5.3",
         kernels=["2.6.18-128.el5"], bits=64, libs={"SL08e": 5}, layout="lvm", fs="ext3",
         hostname=("sysconfig", "rcas1"), pkg="rpm", root_pw="$6$salt$hash", keys=2,
         # Issue 7, item 18: STAR's group start-up and starver, nothing else.
         startup=[("/home/star/.cshrc", "source $GROUP_DIR/star_cshrc.csh\nstarver SL08e\n", True)]),
    dict(name="sl6", release=("/etc/redhat-release", "Scientific Linux release 6.1 (Carbon)"),
         distro="scientificlinux", version="6.1", token="sl6.1", osinfo="scientificlinux6.1",
         kernels=["2.6.32-131.0.15.el6.x86_64"], bits=64, libs={"SL10k": 4, "SL11d": 2}, layout="lvm", fs="ext4",
         hostname=("sysconfig", "rcas2"), pkg="rpm", root_pw="!!", keys=0,
         startup=[("/home/star/.cshrc", "# source $GROUP_DIR/star_cshrc.csh\nset prompt='%m> '\n", False),
                  ("/home/star/.login", "source $GROUP_DIR/star_login.csh\n", True)]),
    dict(name="centos5", release=("/etc/redhat-release", "CentOS release 5.5 (Final)"),
         distro="centos", version="5.5", token="centOS5.5", osinfo="centos5.5",
         kernels=["2.6.18-194.el5", "2.6.18-194.el5xen"], bits=64, libs={"SL09a": 2}, layout="gpt", fs="ext3",
         hostname=("hostname", "centos-star"), pkg="rpm", root_pw="*", keys=0,
         # Both kernels installed: it boots on its own, and is set up for Xen too.
         verdict="own_kernel", xen_evidence=["/boot/vmlinuz-2.6.18-194.el5xen"],
         startup=[("/home/star/.cshrc", "alias ll 'ls -l'\n", False),
                  ("/etc/csh.login", "setenv GROUP_DIR /afs/rhic.bnl.gov/rhstar/group\n"
                   "if ( -r $GROUP_DIR/star_login.csh ) source $GROUP_DIR/star_login.csh\n", True)]),
    dict(name="fedora12", release=("/etc/fedora-release", "Fedora release 12 (Constantine)"),
         distro="fedora", version="12", token="fedora12", osinfo="fedora12",
         kernels=["2.6.31.5-127.fc12.x86_64"], bits=64, libs={}, layout="mbr", fs="ext4",
         hostname=("hostname", "fc12"), pkg="rpm", root_pw="$6$x$y", keys=1, star_account=False),
    dict(name="ubuntu9.10", release=("lsb", "9.10"),
         distro="ubuntu", version="9.10", token="ubuntu9.10", osinfo="ubuntu9.10",
         kernels=["2.6.31-14-generic"], bits=64, libs={"SL08e": 3}, layout="mbr-logical", fs="ext4",
         hostname=("hostname", "karmic"), pkg="deb", root_pw="", keys=1,
         startup=[("/home/star/.cshrc", DEFAULT_CSHRC, True),
                  ("/etc/profile.d/rhic.sh", "export GROUP_DIR=/usr/local/star/group\n. $GROUP_DIR/group_env.sh\n", True),
                  ("/etc/profile.d/less.sh", "export LESS=-R\n", False)]),
    dict(name="sl5.3-xen", release=("/etc/redhat-release", "Scientific Linux SL release 5.3 (Boron)"),
         distro="scientificlinux", version="5.3", token="sl5.3", osinfo="scientificlinux5.3",
         kernels=[], bits=64, libs={"SL08e": 2}, layout="none", fs="ext3",
         hostname=("sysconfig", "xen-guest"), pkg="rpm", root_pw="$6$a$b", keys=1,
         # As RHEL 5's installer writes a paravirtual guest: a getty on Xen's console.
         inittab="id:3:initdefault:\nsi::sysinit:/etc/rc.d/rc.sysinit\n"
                 "co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n",
         fstab="LABEL=/ / ext3 defaults 1 1\n", verdict="xen_paravirtual", xen_evidence=["/etc/inittab"]),
    dict(name="sl5-xenmod", release=("/etc/redhat-release", "Scientific Linux SL release 5.3 (Boron)"),
         distro="scientificlinux", version="5.3", token="sl5.3", osinfo="scientificlinux5.3",
         kernels=[], bits=64, libs={"SL08e": 1}, layout="mbr", fs="ext3",
         hostname=("sysconfig", "xen-mod"), pkg="rpm", root_pw="$6$c$d", keys=0,
         # Issue 7, item 12: nothing in /boot, the kernel's modules and a Xen disk in fstab.
         module_trees=["2.6.18-128.el5xen"], fstab="/dev/xvda1 / ext3 defaults 1 1\n",
         verdict="xen_paravirtual", xen_evidence=["/lib/modules/2.6.18-128.el5xen", "/etc/fstab"]),
]


def synthetic_tree(g, root):
    """Writes the files of a synthetic guest; returns what the test must find."""
    bits = g["bits"]
    if g["release"][0] == "lsb":
        write(root, "/etc/lsb-release",
              "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=9.10\nDISTRIB_CODENAME=karmic\nDISTRIB_DESCRIPTION=\"Ubuntu 9.10\"\n")
        write(root, "/etc/debian_version", "squeeze/sid\n")
        product = "Ubuntu 9.10"
    else:
        write(root, g["release"][0], g["release"][1] + "\n")
        product = g["release"][1]
        if g["release"][0] != "/etc/redhat-release":
            symlink(root, "/etc/redhat-release", os.path.basename(g["release"][0]))
    kind, host = g["hostname"]
    if kind == "sysconfig":
        write(root, "/etc/sysconfig/network", "NETWORKING=yes\nHOSTNAME=%s\n" % host)
    else:
        write(root, "/etc/hostname", host + "\n")
    star_account = g.get("star_account", True)
    passwd = ["root:x:0:0:root:/root:/bin/bash", "bin:x:1:1:bin:/bin:/sbin/nologin",
              "daemon:x:2:2:daemon:/sbin:/sbin/nologin", "nobody:x:99:99:Nobody:/:/sbin/nologin"]
    shadow = ["root:%s:14000:0:99999:7:::" % g["root_pw"], "bin:*:14000:0:99999:7:::",
              "daemon:*:14000:0:99999:7:::", "nobody:*:14000:0:99999:7:::"]
    if star_account:
        passwd.append("star:x:1000:1000:STAR production:/home/star:/bin/tcsh")
        shadow.append("star:!!:14000:0:99999:7:::")
        write(root, "/home/star/.login", "# nothing STAR here\n")
    # Start-up files (path, text, whether it sets STAR up), the star account's and the system's.
    startup = g.get("startup", [("/home/star/.cshrc", DEFAULT_CSHRC, True)] if star_account else [])
    for path, text, _ in startup:
        write(root, path, text)
    if "fstab" in g:
        write(root, "/etc/fstab", g["fstab"])
    if "inittab" in g:
        write(root, "/etc/inittab", g["inittab"])
    write(root, "/etc/passwd", "\n".join(passwd) + "\n")
    write(root, "/etc/shadow", "\n".join(shadow) + "\n", 0o400)
    write(root, "/etc/group", "root:x:0:\n")
    keys = []
    if g["keys"]:
        write(root, "/root/.ssh/authorized_keys",
              "# keys pulled from the STAR key repository\n" +
              "".join("ssh-rsa AAAAB3NzaC1yc2E%d star%d@bnl.gov\n" % (i, i) for i in range(g["keys"])), 0o600)
        keys.append({"path": "/root/.ssh/authorized_keys", "keys": g["keys"]})
    write(root, "/bin/bash", elf_header(bits) + b"\0" * 4032, 0o755)
    symlink(root, "/bin/sh", "bash")
    write(root, "/bin/ls", elf_header(bits), 0o755)
    if g["pkg"] == "rpm":
        write(root, "/var/lib/rpm/Packages", b"\0" * 4096)
    else:
        write(root, "/var/lib/dpkg/status", "Package: base-files\nStatus: install ok installed\n")
    kernels = []
    for v in g["kernels"]:
        write(root, "/boot/vmlinuz-%s" % v, bzimage(v))
        write(root, "/boot/initrd-%s.img" % v, b"\x1f\x8b" + b"\0" * 1022)
        write(root, "/lib/modules/%s/modules.dep" % v, "")
        kernels.append(v)
    if g["kernels"]:
        write(root, "/boot/grub/menu.lst", "default=0\ntitle %s\n  kernel /vmlinuz-%s ro root=/dev/VolGroup00/LogVol00\n"
              % (product, g["kernels"][0]))
    else:
        os.makedirs(os.path.join(root, "boot"), exist_ok=True)
    for v in g.get("module_trees", []):
        write(root, "/lib/modules/%s/modules.dep" % v, "")
    libs = []
    star_bytes = 0
    for lib, files in sorted(g["libs"].items()):
        base = "/usr/local/star/packages/%s" % lib
        size = 0
        for i in range(files):
            data = (("%s library object %d\n" % (lib, i)) * (1000 + 300 * i)).encode()
            write(root, "%s/.sl53_gcc432/lib/libSt%d.so" % (base, i), data)
            size += len(data)
        libs.append(lib.lower())
        star_bytes += size
    if g["libs"]:
        symlink(root, "/usr/local/star/packages/pro", sorted(g["libs"])[0])
    # Hostile corners: a link that tries to leave the guest, and a loop.
    symlink(root, "/etc/escape", "../../../../../../etc/passwd")
    symlink(root, "/loop-a", "loop-b")
    symlink(root, "/loop-b", "loop-a")
    return {
        "os": {"distro": g["distro"], "version": g["version"], "token": g["token"], "osinfo": g["osinfo"],
               "product_name": product},
        "hostname": host,
        "package_format": g["pkg"],
        "kernels": kernels,
        "module_trees": sorted(kernels + g.get("module_trees", [])),
        # Every synthetic guest with a kernel has a menu for it: it boots on its own.
        "verdict": g.get("verdict", "own_kernel"),
        "xen_evidence": g.get("xen_evidence", []),
        "arch": {"isa": "x86", "bits": bits},
        "star": {"libraries": libs, "account": star_account,
                 "startup_scripts": [p for p, _, star in startup if star], "bytes": star_bytes},
        "accounts": {"root_password": password_state(g["root_pw"]), "star_account": star_account,
                     "authorized_keys": keys},
    }


def password_state(field):
    if field == "":
        return "empty"
    if field.startswith("!") or field.startswith("*"):
        return "locked"
    return "set"


def debian_expect(root, bits):
    """What a debootstrapped Debian holds, read from its own files."""
    rel = dict(line.split("=", 1) for line in open(os.path.join(root, "usr/lib/os-release")).read().splitlines() if "=" in line)
    rel = {k: v.strip('"') for k, v in rel.items()}
    dv = open(os.path.join(root, "etc/debian_version")).read().strip()
    major = rel["VERSION_ID"]
    shadow = open(os.path.join(root, "etc/shadow")).read()
    root_pw = next(l.split(":")[1] for l in shadow.splitlines() if l.startswith("root:"))
    hp = os.path.join(root, "etc/hostname")
    host = open(hp).read().strip() if os.path.exists(hp) else None
    return {
        "os": {"distro": "debian", "version": dv, "token": "debian%s" % major, "osinfo": "debian%s" % major,
               "product_name": rel["PRETTY_NAME"]},
        "hostname": host,
        "package_format": "deb",
        "kernels": [],
        "module_trees": [],
        # No kernel and nothing of Xen: a debootstrap root is no Xen guest.
        "verdict": "no_kernel",
        "xen_evidence": [],
        "arch": {"isa": "x86", "bits": bits},
        "star": {"libraries": [], "account": False, "startup_scripts": [], "bytes": 0},
        "accounts": {"root_password": password_state(root_pw), "star_account": False, "authorized_keys": []},
    }


# ------------------------------------------------------------- filesystems

def fs_uuid(name, role):
    h = hashlib.sha256(("%s/%s" % (name, role)).encode()).hexdigest()
    return "%s-%s-4%s-8%s-%s" % (h[0:8], h[8:12], h[13:16], h[17:20], h[20:32])


def make_ext(img, kind, tree, size, label, uuid):
    if os.path.exists(img):
        os.remove(img)
    run("mke2fs", "-q", "-F", "-t", kind, "-L", label, "-U", uuid, "-d", tree, "-E", "root_owner=0:0", img, "%dk" % (size // 1024))
    info = run("dumpe2fs", "-h", img)
    kv = {}
    for line in info.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            kv[k.strip()] = v.strip()
    block = int(kv["Block size"])
    blocks = int(kv["Block count"])
    free = int(kv["Free blocks"])
    return {"type": kind, "label": label, "uuid": uuid, "size": blocks * block,
            "used": (blocks - free) * block, "free": free * block}


def protofile(tree, out):
    """A mkfs.xfs protofile describing `tree` (names with spaces are left out)."""
    lines = ["/dev/null", "0 0", "d--755 0 0"]

    def mode(st):
        t = stat.S_IFMT(st.st_mode)
        c = {stat.S_IFREG: "-", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c", stat.S_IFBLK: "b",
             stat.S_IFIFO: "p"}.get(t)
        if c is None:
            return None
        su = "u" if st.st_mode & stat.S_ISUID else "-"
        sg = "g" if st.st_mode & stat.S_ISGID else "-"
        return "%s%s%s%03o" % (c, su, sg, st.st_mode & 0o777)

    def walk(d, depth):
        for name in sorted(os.listdir(d)):
            if any(ch.isspace() for ch in name) or name.startswith("$"):
                continue
            p = os.path.join(d, name)
            st = os.lstat(p)
            m = mode(st)
            if m is None:
                continue
            pad = " " * depth
            if m[0] == "d":
                lines.append("%s%s %s %d %d" % (pad, name, m, st.st_uid, st.st_gid))
                walk(p, depth + 1)
                lines.append("%s$" % pad)
            elif m[0] == "-":
                lines.append("%s%s %s %d %d %s" % (pad, name, m, st.st_uid, st.st_gid, p))
            elif m[0] == "l":
                lines.append("%s%s %s %d %d %s" % (pad, name, m, st.st_uid, st.st_gid, os.readlink(p)))
            elif m[0] in "bc":
                lines.append("%s%s %s %d %d %d %d" % (pad, name, m, st.st_uid, st.st_gid, os.major(st.st_rdev), os.minor(st.st_rdev)))
            elif m[0] == "p":
                lines.append("%s%s %s %d %d" % (pad, name, m, st.st_uid, st.st_gid))
    walk(tree, 1)
    lines.append("$")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_xfs(img, tree, size, label, uuid, tmp):
    with open(img, "wb") as f:
        f.truncate(size)
    proto = os.path.join(tmp, "proto")
    protofile(tree, proto)
    run("mkfs.xfs", "-q", "-f", "-L", label, "-m", "uuid=" + uuid, "-p", proto, img)
    out = run("xfs_db", "-r", "-c", "sb 0", "-c", "p blocksize dblocks fdblocks", img)
    kv = dict(l.split(" = ") for l in out.splitlines() if " = " in l)
    block, dblocks, free = int(kv["blocksize"]), int(kv["dblocks"]), int(kv["fdblocks"])
    return {"type": "xfs", "label": label, "uuid": uuid, "size": dblocks * block,
            "used": (dblocks - free) * block, "free": free * block}


def make_btrfs(img, tree, size, label, uuid):
    with open(img, "wb") as f:
        f.truncate(size)
    run("mkfs.btrfs", "-q", "-f", "-L", label, "-U", uuid, "--rootdir", tree, img)
    out = run("btrfs", "inspect-internal", "dump-super", img)
    kv = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            kv[parts[0]] = parts[1].strip()
    total, used = int(kv["total_bytes"]), int(kv["bytes_used"])
    return {"type": "btrfs", "label": label, "uuid": uuid, "size": total, "used": used, "free": total - used}


def make_swap(img, size):
    with open(img, "wb") as f:
        f.truncate(size)
    run("mkswap", "-q", img)
    return {"size": size}


# ------------------------------------------------------------------ disks

def dd(src, dst, offset):
    """Copies file `src` into `dst` at byte `offset`, keeping holes."""
    with open(src, "rb") as s, open(dst, "r+b") as d:
        pos = 0
        while True:
            chunk = s.read(MIB)
            if not chunk:
                break
            if chunk.strip(b"\0"):
                d.seek(offset + pos)
                d.write(chunk)
            pos += len(chunk)


# MBR types of extended partitions, as sfdisk writes them.
EXTENDED_TYPES = ("5", "F", "85")


def partition(disk, size, label, parts):
    """Partitions `disk` with sfdisk; returns sfdisk's own account of the table."""
    with open(disk, "wb") as f:
        f.truncate(size)
    script = "label: %s\n" % label + "".join(p + "\n" for p in parts)
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk, input=script.encode())
    table = json.loads(run("sfdisk", "--json", disk))["partitiontable"]
    sector = table.get("sectorsize", 512)
    out = []
    for i, p in enumerate(table["partitions"]):
        number = int(p["node"].replace(disk, "")) if p["node"].startswith(disk) else i + 1
        out.append({"number": number, "start": p["start"] * sector, "size": p["size"] * sector,
                    "type": p["type"].upper(), "bootable": bool(p.get("bootable"))})
    # An extended partition only holds the logical ones: it covers nothing itself.
    covered = sum(p["size"] for p in out if p["type"] not in EXTENDED_TYPES)
    # What sfdisk itself would offer for a new partition (aligned, less the tables).
    listed = run("sfdisk", "--list-free", "--bytes", disk)
    free = int(listed.split(",")[1].split()[0])
    return {"scheme": "gpt" if table["label"] == "gpt" else "mbr", "partitions": out, "covered": covered,
            "sfdisk_free": free}


# Only loop devices, no udev, and no metadata backups written to the host's /etc/lvm.
LVM_CONFIG = ("devices { filter=[\"a|^/dev/loop|\",\"r|.*|\"] obtain_device_list_from_udev=0 } "
              "activation { udev_sync=0 udev_rules=0 } backup { backup=0 archive=0 }")


def lvm(args):
    return run(*(["lvm"] + args + ["--config", LVM_CONFIG]), env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1"))


def make_lvm_pv(pv_img, size, vg, lvs):
    """A physical volume in a file, with logical volumes `lvs` [(name, bytes)]
    made by the lvm2 tools on a loop device and left inactive. Returns each
    volume's byte offset in the file."""
    with open(pv_img, "wb") as f:
        f.truncate(size)
    loop = run("losetup", "-f", "--show", pv_img).strip()
    try:
        lvm(["pvcreate", "-q", "-y", "-ff", loop])
        lvm(["vgcreate", "-q", "-s", "4M", vg, loop])
        for name, nbytes in lvs:
            # --driverloaded n: made without device-mapper, never activated.
            lvm(["lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-y", "-L", "%db" % nbytes, "-n", name, vg])
        pe_start = int(lvm(["pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", loop]).split()[0])
        extent = int(lvm(["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg]).split()[0])
        offsets = {}
        for line in lvm(["lvs", "--noheadings", "-o", "lv_name,seg_pe_ranges", vg]).splitlines():
            name, ranges = line.split()
            first = int(ranges.split(":")[1].split("-")[0])
            offsets[name] = pe_start + first * extent
        # The volume group stays on the PV: it is what the test reads.
        return offsets, extent
    finally:
        run("losetup", "-d", loop, check=False)


# Bytes a bare-filesystem disk has beyond its filesystem.
BARE_TAIL = 8 * MIB


def layout_disk(name, kind, root_img, root_fs, out, tmp, swap_size=32 * MIB, boot=None):
    """Lays a root filesystem (and a swap area, and a /boot filesystem) on a disk."""
    disk = os.path.join(out, name + ".raw")
    root_size = os.path.getsize(root_img)
    swap_img = os.path.join(tmp, name + "-swap")
    expect = {"filesystems": [], "swap": [], "lvs": []}
    if kind == "none":
        shutil.copyfile(root_img, disk)
        # Room the filesystem does not cover: what the budget calls unpartitioned.
        with open(disk, "r+b") as f:
            f.truncate(root_size + BARE_TAIL)
        expect["partitions"] = {"scheme": "none", "partitions": []}
        expect["filesystems"].append(dict(root_fs, device="disk", role="/"))
        expect["covered"] = root_fs["size"]
        expect["sfdisk_free"] = 0
        return disk, expect
    make_swap(swap_img, swap_size)
    sz = lambda n: "size=%dKiB" % (n // 1024)
    if kind == "mbr":
        parts = ["start=2048, %s, type=82" % sz(swap_size), "%s, type=83, bootable" % sz(root_size)]
        table = partition(disk, root_size + swap_size + 4 * MIB, "dos", parts)
        places = [(swap_img, 0, "swap", "p1"), (root_img, 1, "root", "p2")]
    elif kind == "mbr-logical":
        boot_img = os.path.join(tmp, name + "-boot")
        boot_fs = make_ext(boot_img, "ext2", boot, 32 * MIB, "/boot", fs_uuid(name, "boot"))
        parts = ["start=2048, %s, type=83, bootable" % sz(32 * MIB), "type=5",
                 "%s, type=82" % sz(swap_size), "%s, type=83" % sz(root_size)]
        table = partition(disk, root_size + swap_size + 48 * MIB, "dos", parts)
        places = [(boot_img, 0, "boot", "p1"), (swap_img, 2, "swap", "p5"), (root_img, 3, "root", "p6")]
        expect["filesystems"].append(dict(boot_fs, device="p1", role="/boot"))
    elif kind == "gpt":
        parts = ["start=2048, size=1MiB, type=21686148-6449-6E6F-744E-656564454649",
                 "%s, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4" % sz(root_size),
                 "%s, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" % sz(swap_size)]
        table = partition(disk, root_size + swap_size + 8 * MIB, "gpt", parts)
        places = [(root_img, 1, "root", "p2"), (swap_img, 2, "swap", "p3")]
    elif kind == "lvm":
        boot_img = os.path.join(tmp, name + "-boot")
        boot_fs = make_ext(boot_img, "ext3", boot, 32 * MIB, "/boot", fs_uuid(name, "boot"))
        pv_size = root_size + swap_size + 16 * MIB
        pv_img = os.path.join(tmp, name + "-pv")
        offsets, _ = make_lvm_pv(pv_img, pv_size, "VolGroup00", [("LogVol00", root_size), ("LogVol01", swap_size)])
        dd(root_img, pv_img, offsets["LogVol00"])
        dd(swap_img, pv_img, offsets["LogVol01"])
        parts = ["start=2048, %s, type=83, bootable" % sz(32 * MIB), "%s, type=8e" % sz(pv_size)]
        table = partition(disk, pv_size + 40 * MIB, "dos", parts)
        places = [(boot_img, 0, "boot", "p1"), (pv_img, 1, "pv", "p2")]
        expect["filesystems"].append(dict(boot_fs, device="p1", role="/boot"))
        expect["filesystems"].append(dict(root_fs, device="VolGroup00/LogVol00", role="/"))
        expect["swap"].append({"device": "VolGroup00/LogVol01", "size": swap_size})
        expect["lvs"] = [{"vg": "VolGroup00", "name": "LogVol00", "size": root_size},
                         {"vg": "VolGroup00", "name": "LogVol01", "size": swap_size}]
    else:
        raise SystemExit("unknown layout " + kind)
    for img, index, role, device in places:
        dd(img, disk, table["partitions"][index]["start"])
        if role == "root":
            expect["filesystems"].append(dict(root_fs, device=device, role="/"))
        elif role == "swap":
            expect["swap"].append({"device": device, "size": swap_size})
    expect["covered"] = table.pop("covered")
    expect["sfdisk_free"] = table.pop("sfdisk_free")
    expect["partitions"] = table
    return disk, expect


def convert(disk, out, index):
    """Converts a raw disk into two other formats (chosen by index)."""
    made = {"raw": disk}
    for fmt, ext, opts in (FORMATS[index % len(FORMATS)], FORMATS[(index + 2) % len(FORMATS)]):
        dst = disk[: -len(".raw")] + "." + ext
        run("qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, disk, dst)
        made[fmt] = dst
    return made


def virtual_sizes(images):
    """The virtual size of each image, as qemu-img reports it (VHD rounds up to a geometry)."""
    return {fmt: json.loads(run("qemu-img", "info", "--output=json", "-f", fmt, path))["virtual-size"]
            for fmt, path in images.items()}


# ----------------------------------------------------------------- debian

def debootstrap(arch, cache, tmp):
    """A minimal Debian for `arch`, cached as a tarball."""
    tarball = os.path.join(cache, "debian-bookworm-%s.tar" % arch)
    root = os.path.join(tmp, "debian-" + arch)
    if not os.path.exists(tarball):
        run("debootstrap", "--variant=minbase", "--arch=" + arch, "bookworm", root,
            os.environ.get("VMREPO_DEBIAN_MIRROR", "http://deb.debian.org/debian"), stdout=None, stderr=None)
        run("tar", "-C", root, "-cf", tarball + ".tmp", ".")
        os.rename(tarball + ".tmp", tarball)
        shutil.rmtree(root)
    os.makedirs(root, exist_ok=True)
    run("tar", "-C", root, "-xf", tarball)
    return root


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    out = os.path.abspath(sys.argv[1])
    synthetic_only = "--synthetic-only" in sys.argv
    os.makedirs(out, exist_ok=True)
    # One builder at a time per folder: a second waits, then finds the manifest.
    lock = open(os.path.join(out, ".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    stamp = hashlib.sha256(open(__file__, "rb").read()).hexdigest()[:16] + ("-s" if synthetic_only else "")
    manifest = os.path.join(out, "guests.json")
    if os.path.exists(manifest) and json.load(open(manifest)).get("stamp") == stamp:
        print(manifest)
        return
    for tool in ["mke2fs", "dumpe2fs", "mkswap", "sfdisk", "qemu-img", "losetup", "lvm"]:
        if not have(tool):
            raise SystemExit("build-test-guests: %s is missing" % tool)
    guests = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for i, g in enumerate(SYNTHETIC):
            tree = os.path.join(tmp, g["name"])
            os.makedirs(tree)
            expect = synthetic_tree(g, tree)
            boot = None
            if g["layout"] in ("lvm", "mbr-logical"):
                # A separate /boot filesystem takes the kernels.
                boot = os.path.join(tmp, g["name"] + "-boottree")
                shutil.move(os.path.join(tree, "boot"), boot)
                os.makedirs(os.path.join(tree, "boot"))
            root_img = os.path.join(tmp, g["name"] + "-root")
            root_fs = make_ext(root_img, g["fs"], tree, 64 * MIB, "/", fs_uuid(g["name"], "root"))
            disk, layout = layout_disk(g["name"], g["layout"], root_img, root_fs, out, tmp, boot=boot)
            expect.update(layout)
            images = convert(disk, out, i)
            guests.append({"name": g["name"], "images": images, "virtual_sizes": virtual_sizes(images),
                           "expect": expect})
        if not synthetic_only:
            cache = os.environ.get("VMREPO_GUEST_CACHE", out)
            for arch, bits, builds in [("amd64", 64, [("deb-ext4-mbr", "ext4", "mbr"), ("deb-ext3-gpt", "ext3", "gpt"),
                                                    ("deb-xfs-mbr", "xfs", "mbr"), ("deb-btrfs-gpt", "btrfs", "gpt"),
                                                    ("deb-ext4-lvm", "ext4", "lvm")]),
                                       ("i386", 32, [("deb32-ext4-bare", "ext4", "none")])]:
                root = debootstrap(arch, cache, tmp)
                base = debian_expect(root, bits)
                for name, fs, layout in builds:
                    img = os.path.join(tmp, name + "-root")
                    uuid = fs_uuid(name, "root")
                    size = 512 * MIB
                    if fs.startswith("ext"):
                        root_fs = make_ext(img, fs, root, size, "debian-root", uuid)
                    elif fs == "xfs":
                        root_fs = make_xfs(img, root, size, "debian-root", uuid, tmp)
                    else:
                        root_fs = make_btrfs(img, root, size, "debian-root", uuid)
                    boot = None
                    if layout == "lvm":
                        boot = os.path.join(tmp, name + "-boottree")
                        write(boot, "/grub/grub.cfg", "# no kernel in a minbase Debian\n")
                    disk, lay = layout_disk(name, layout, img, root_fs, out, tmp, boot=boot)
                    expect = dict(base)
                    if fs in ("xfs", "btrfs"):
                        # Identified, not read: nothing of the guest's files is known.
                        expect = {"files_not_read": True}
                    expect.update(lay)
                    images = convert(disk, out, len(guests))
                    guests.append({"name": name, "images": images, "virtual_sizes": virtual_sizes(images),
                                   "expect": expect})
                    os.remove(img)
                shutil.rmtree(root)
    json.dump({"stamp": stamp, "guests": guests}, open(manifest + ".tmp", "w"), indent=1)
    os.rename(manifest + ".tmp", manifest)
    print(manifest)


if __name__ == "__main__":
    main()
