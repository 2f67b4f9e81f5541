//! Standard output: buffered into pipes and files, and a closed pipe is not a
//! failure (issue 7, item 22).

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::util::{Repo, have};

/// Images made in a repository by hand (empty files, as an adopted tree
/// holds them): enough for `list` to print more than a pipe holds (64 KiB).
const IMAGES: usize = 1200;

fn many_images() -> Repo {
    let r = Repo::new();
    let dir = r.vm_dir("kvm");
    for i in 0..IMAGES {
        std::fs::write(dir.join(format!("sl5.3_x86_64_sl08e_8GB_n{i:05}.img")), b"").unwrap();
    }
    r
}

/// The `write` calls on standard output of `vmrepo ARGS`, counted by strace,
/// and the bytes written.
fn stdout_writes(r: &Repo, args: &[&str]) -> (usize, usize) {
    let log = r.tmp.path().join("strace.log");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=write", "-e", "signal=none", "-o"])
        .arg(&log)
        .arg(crate::util::bin())
        .arg("--repo")
        .arg(&r.root)
        .args(args)
        .env_remove("VMREPO_REPO")
        .env_remove("VMREPO_INDEX")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(&log).unwrap();
    let writes = log
        .lines()
        .filter(|l| l.split_once(' ').map_or(*l, |(_, rest)| rest).starts_with("write(1,"))
        .count();
    (writes, out.stdout.len())
}

#[test]
fn issue7_item22_find_and_list_write_stdout_in_blocks() {
    if !have("strace", "strace") {
        return;
    }
    let r = many_images();
    for args in [&["--json", "find", "lib=sl08e"][..], &["--json", "list"], &["list"], &["find", "os=sl5.3"]]
    {
        let (writes, bytes) = stdout_writes(&r, args);
        assert!(bytes > 64 * 1024, "{args:?}: only {bytes} bytes printed");
        // One write per 64 KiB block, and at most one more per block where a
        // block ends within a line.
        let most = 2 * bytes.div_ceil(64 * 1024) + 1;
        assert!(writes <= most, "{args:?}: {writes} writes for {bytes} bytes (at most {most})");
    }
}

#[test]
fn issue7_item22_closed_pipe_exits_0() {
    let r = many_images();
    for args in [&["list"][..], &["--json", "list"], &["--json", "find", "os=sl5.3"]] {
        // vmrepo list | head -1
        let mut child = r.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(!first.is_empty(), "{args:?}: nothing printed");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn issue7_item22_streamed_find_json_is_the_whole_array() {
    let r = many_images();
    let all = r.json(&["list"]);
    let names: Vec<&str> = all.as_array().unwrap().iter().map(|i| i["file"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..IMAGES).map(|i| format!("sl5.3_x86_64_sl08e_8GB_n{i:05}.img")).collect();
    assert_eq!(names, expected);
    // No match is an empty array, as serde_json prints one.
    assert_eq!(r.ok(&["--json", "find", "os=sl4"]), "[]\n");
}
