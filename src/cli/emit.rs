//! `fwharden emit`: the profile in another firewall's format, written to a
//! directory (or stdout when the format is one file).

use std::path::Path;

use serde_json::json;

use super::{exit, load_reporting};
use crate::emit::{self, Approximation, EmitError, Emitted, File, FileKind};
use crate::profile::SearchPath;
use crate::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `nft -f` text, the same as `fwharden show`.
    Nft,
    /// iptables-restore and ip6tables-restore files, an ipset restore
    /// file, and load.sh (checks the SSH client, rolls back in 60 s unless
    /// `load.sh --confirm`; `--timeout N`, `--no-rollback`).
    Iptables,
    /// ufw: ufw.sh (one ufw command per rule, keeps other ufw rules),
    /// reload.sh (replaces user.rules/user6.rules, one reload), and the
    /// before.rules files both install; both check the SSH client and roll
    /// back unless confirmed, as load.sh.
    Ufw,
}

pub fn run(
    search: &SearchPath,
    spec: &str,
    format: Format,
    output: Option<&Path>,
    approx: Approximation,
    json: bool,
) -> anyhow::Result<i32> {
    // A usage error is one whatever the profile says: before anything else.
    let several = match format {
        Format::Nft => None,
        Format::Iptables => Some("iptables and ip6tables restore files, ipset sets, load.sh"),
        Format::Ufw => {
            Some("ufw.sh or reload.sh, with the before.rules and user.rules files they install")
        }
    };
    if let (Some(what), None) = (several, output) {
        eprintln!(
            "fwharden: this format is several files ({what}): name a directory with --output DIR"
        );
        return Ok(exit::USAGE);
    }
    let loaded = load_reporting(search, spec, json);
    let Some(profile) = &loaded.profile else {
        return Ok(exit::INVALID_PROFILE);
    };
    let ruleset = crate::compile::compile(profile);
    let emitted = match format {
        Format::Nft => Ok(Emitted {
            files: vec![File {
                name: "fwharden.nft".into(),
                text: render::nft_text(&ruleset),
                kind: FileKind::Data,
            }],
            warnings: Vec::new(),
        }),
        Format::Iptables => emit::iptables(&ruleset, approx),
        Format::Ufw => emit::ufw::emit(&ruleset, approx),
    };
    let emitted = match emitted {
        Ok(e) => e,
        Err(e @ EmitError::Refused { .. }) => {
            // One line each: every refusal of the run, then what it means.
            let refusals = e.refusals();
            for r in &refusals {
                eprintln!(
                    "fwharden: {} cannot express the rule \"{}\": {}",
                    r.format, r.rule, r.why
                );
            }
            eprintln!(
                "fwharden: {} refused, nothing was written",
                match refusals.len() {
                    1 => "1 rule".to_string(),
                    n => format!("{n} rules"),
                }
            );
            if json {
                let refused: Vec<_> = refusals
                    .iter()
                    .map(|r| json!({"format": r.format, "rule": r.rule, "why": r.why}))
                    .collect();
                let out = json!({"ok": false, "refused": refused, "warnings": []});
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            return Ok(super::codes::of_error(e));
        }
    };
    // On stderr always: a warning (a shortened log prefix, ufw's own log
    // rate) is something a person reads before loading the files.
    for w in &emitted.warnings {
        eprintln!("fwharden: warning: approximated: {w}");
    }
    if json {
        // The files go to the directory; stdout carries the report alone.
        let Some(dir) = output else {
            eprintln!(
                "fwharden: emit --json writes the files to a directory: name one with --output DIR"
            );
            return Ok(exit::USAGE);
        };
        write_all(dir, &emitted.files)?;
        let files: Vec<String> = emitted
            .files
            .iter()
            .map(|f| dir.join(&f.name).display().to_string())
            .collect();
        let out = json!({"ok": true, "files": files, "warnings": emitted.warnings});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::OK);
    }
    match (output, emitted.files.as_slice()) {
        (None, [one]) => print!("{}", one.text),
        (None, files) => {
            let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
            eprintln!(
                "fwharden: this format is {} files ({}): name a directory with --output DIR",
                files.len(),
                names.join(", ")
            );
            return Ok(exit::USAGE);
        }
        (Some(dir), files) => write_all(dir, files)?,
    }
    Ok(exit::OK)
}

fn write_all(dir: &Path, files: &[File]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in files {
        let path = dir.join(&f.name);
        std::fs::write(&path, &f.text).with_context(|| format!("writing {}", path.display()))?;
        let mode = match f.kind {
            FileKind::Data => 0o644,
            FileKind::Script => 0o755,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        eprintln!("fwharden: wrote {}", path.display());
    }
    Ok(())
}
