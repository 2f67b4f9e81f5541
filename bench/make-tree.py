#!/usr/bin/env python3
"""Writes a repository tree of N images as people lay it out by hand: an empty
image file, md5sum's .checksum and a short .txt per image, spread over the VM
folders, operating systems, libraries and sizes. Used by bench/find.sh."""
import hashlib
import os
import sys

root, count = sys.argv[1], int(sys.argv[2])
vms = ["xen", "kvm", "virtualBox", "vmware"]
oses = ["sl4", "sl5.3", "sl5.4", "sl6.1", "ubuntu9.10", "fedora12", "centOS5", "debian12"]
libs = ["sl08e", "sl09a", "sl10k", "sl11d", "sl12a", "sl13b"]
sizes = ["500MB", "2GB", "8GB", "16GB", "2TB"]
exts = ["img", "qcow2", "vmdk", "vdi"]
empty_md5 = hashlib.md5(b"").hexdigest()
empty_sha = hashlib.sha256(b"").hexdigest()
for vm in vms:
    os.makedirs(os.path.join(root, "vm", vm), exist_ok=True)
for i in range(count):
    vm = vms[i % len(vms)]
    stem = "%s_x86_%d_%s_%s_n%05d" % (oses[(i // 4) % len(oses)], 64 if i % 3 else 32,
                                      libs[(i // 7) % len(libs)], sizes[(i // 11) % len(sizes)], i)
    name = "%s.%s" % (stem, exts[(i // 13) % len(exts)])
    d = os.path.join(root, "vm", vm)
    open(os.path.join(d, name), "wb").close()
    with open(os.path.join(d, stem + ".checksum"), "w") as f:
        f.write("%s  %s\n" % (empty_md5, name))
    with open(os.path.join(d, stem + ".txt"), "w") as f:
        f.write("Image: %s\nSHA-256: %s\nNotes:\nbenchmark image %d\n" % (name, empty_sha, i))
