//! `vmrepo demo`: a small repository with one image, made and shown.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vmrepo_name::{ImageName, Vm};
use vmrepo_repo::{Catalog, Facts, NoProgress, Query, Repository, VerifyOptions};

use super::Ctx;
use crate::Outcome;
use crate::output::{self, line, size};
use crate::ui::Bar;

/// Builds a small raw disk: an MBR with one Linux partition and a few sectors
/// of text, the rest a hole.
pub(crate) fn demo_disk(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    const SIZE: u64 = 8 << 20;
    const SECTORS: u32 = (SIZE / 512) as u32;
    let f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.set_len(SIZE)?;
    let mut mbr = [0u8; 512];
    // One partition entry at 446: type 0x83 (Linux), LBA 2048 to the end.
    let entry = &mut mbr[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&(SECTORS - 2048).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    f.write_all_at(&mbr, 0)?;
    f.write_all_at(b"vmrepo demonstration disk: STAR SL08e on Scientific Linux 5.3\n", 2048 * 512)?;
    f.sync_all()?;
    Ok(())
}

pub(crate) fn demo(ctx: &Ctx<'_>, dir: Option<&Path>, serving: bool) -> Result<Outcome> {
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("vmrepo-demo"));
    let (repo, _) = Repository::init(&dir)?;
    let mut catalog = Catalog::open(repo, ctx.cancel)?;
    let name = ImageName::parse("sl5.3_x86_64_sl08e_8MB_demo.img")?;
    let say = |s: String| -> Result<()> {
        if !ctx.cli.quiet && !ctx.cli.json {
            line(s)?;
        }
        Ok(())
    };
    say(format!("Demonstration repository: {}", catalog.repo().root().display()))?;
    if catalog.resolve(&format!("kvm/{name}")).is_err() {
        let tmp = catalog.repo().meta_dir().join("demo-disk.img");
        demo_disk(&tmp)?;
        let bar = Bar::new(ctx.cli.quiet || ctx.cli.json);
        let result = vmrepo_repo::add(
            &mut catalog,
            vmrepo_repo::AddRequest {
                source: &tmp,
                vm: Vm::Kvm,
                name: name.clone(),
                facts: Facts::default(),
                notes: Some(
                    "A demonstration image made by `vmrepo demo`: an MBR and one partition, mostly empty."
                        .into(),
                ),
                replace: false,
                move_source: false,
                content: vmrepo_repo::content::read(&tmp).ok(),
                force: false,
                prehashed: None,
                progress: &bar,
                cancel: ctx.cancel,
            },
        );
        let _ = std::fs::remove_file(&tmp);
        let out = result?;
        say(format!(
            "$ vmrepo add demo-disk.img --vm kvm --os sl5.3 --arch x86 --bits 64 --lib sl08e --detail demo\nAdded {}",
            out.image.path
        ))?;
    }
    let report = vmrepo_repo::verify(
        &catalog,
        &VerifyOptions {
            names: Vec::new(),
            quick: false,
            md5: true,
            jobs: 2,
            progress: &NoProgress,
            cancel: ctx.cancel,
        },
    )?;
    say(format!(
        "$ vmrepo verify --md5\nverified {} image(s): {} ok, {} with problems",
        report.images, report.ok, report.failed
    ))?;
    let images = catalog.find(&Query::all())?;
    if ctx.cli.json {
        output::json(
            &serde_json::json!({ "root": catalog.repo().root(), "images": images, "verify": report }),
        )?;
    } else if !ctx.cli.quiet {
        line("$ vmrepo list")?;
        for i in &images {
            line(format_args!("{}  {}  {}  {}", i.vm, i.file, size(i.size), i.maxsize))?;
        }
        line(format_args!(
            "\nTry: cd {} && vmrepo show {}   (or md5sum -c in vm/kvm/)",
            catalog.repo().root().display(),
            name.stem()
        ))?;
        if !serving {
            line(
                "Browse it: cargo run --release -- demo --serve   (or vmrepo demo --serve: the web page and the API)",
            )?;
        }
    }
    Ok(if report.failed > 0 { Outcome::Problems } else { Outcome::Clean })
}
