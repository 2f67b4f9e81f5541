//! `vmrepo name`.

use crate::util::Repo;

#[test]
fn check_says_which_field_and_what_was_expected() {
    let r = Repo::new();
    assert!(r.ok(&["name", "check", "sl4_x86_32_sl08e_8GB_ec2.img"]).contains("ok"));
    let cases = [
        ("sl4_x86_33_sl08e_8GB.img", "word size \"33\": expected one of 8, 16, 32, 64, 128, 512"),
        ("sl4_x86_32_SL08e_8GB.img", "names use lower case: sl08e"),
        ("centos5_x86_32_sl08e_8GB.img", "centOS5"),
        ("sl4_x86_32_sl08e_8G.img", "8GB"),
        ("sl4_x86_32_sl08e.img", "expected <OS>_<ISA>_<word size>_<STAR lib>_<max size>[_<detail>].<ext>"),
        ("../sl4_x86_32_sl08e_8GB.img", "path separator"),
        ("sl4_x86_32_sl08e_8GB_a\u{1}b.img", "control character"),
    ];
    for (name, expect) in cases {
        let out = r.run(&["name", "check", name]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(expect), "{name}: {text}");
    }
}

#[test]
fn check_json_lists_every_bad_field() {
    let r = Repo::new();
    let out =
        r.run(&["--json", "name", "check", "sl4_x87_33_sl08e_8GB.img", "sl5.3_x86_64_sl08e_1.5TB.qcow2"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fields: Vec<&str> =
        v[0]["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["arch", "bits"]);
    assert_eq!(v[1]["valid"], true);
    assert_eq!(v[1]["fields"]["maxsize_bytes"], 3u64 << 39);
    assert_eq!(v[1]["fields"]["osinfo"], "scientificlinux5.3");
}

#[test]
fn format_prints_the_name_in_the_convention_spelling() {
    let r = Repo::new();
    let out = r.ok(&[
        "name",
        "format",
        "--os",
        "SL5.3",
        "--arch",
        "amd64",
        "--lib",
        "SL08e",
        "--max-size",
        "8G",
        "--detail",
        "ec2",
        "--ext",
        "QCOW2",
    ]);
    assert_eq!(out.trim(), "sl5.3_x86_64_sl08e_8GB_ec2.qcow2");
    let out = r.ok(&[
        "name",
        "format",
        "--os",
        "centos5",
        "--arch",
        "x86",
        "--bits",
        "32",
        "--lib",
        "pro",
        "--max-size",
        "1536MiB",
        "--folder",
    ]);
    assert_eq!(out.trim(), "centOS5_x86_32_pro_1536MB");
    let err = r.fails(
        6,
        &[
            "name",
            "format",
            "--os",
            "sl5.3",
            "--arch",
            "i686",
            "--bits",
            "64",
            "--lib",
            "sl08e",
            "--max-size",
            "8GB",
        ],
    );
    assert!(err.contains("contradicts"), "{err}");
    let err = r.fails(
        6,
        &[
            "name",
            "format",
            "--os",
            "windows7",
            "--arch",
            "x86",
            "--bits",
            "64",
            "--lib",
            "sl08e",
            "--max-size",
            "8GB",
        ],
    );
    assert!(err.contains("unknown operating system"), "{err}");
}
