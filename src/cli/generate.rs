//! `fwharden generate man|completions DIR` (hidden): the man pages and the
//! shell completions, written from the clap definitions themselves, so the
//! package never ships a page or a completion that disagrees with the
//! binary. debian/rules runs it on the freshly built binary.

use std::fs;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;
use crate::exit;

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Artifact {
    /// One man page per visible subcommand (fwharden.8, fwharden-apply.8, ...).
    Man,
    /// bash, zsh and fish completions (fwharden, _fwharden, fwharden.fish).
    Completions,
}

pub fn run(what: Artifact, dir: &Path) -> anyhow::Result<i32> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match what {
        Artifact::Man => {
            let mut cmd = Cli::command().disable_help_subcommand(true);
            // Built, so every subcommand knows its display name
            // ("fwharden-apply"), which names its page.
            cmd.build();
            write_pages(&cmd, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?
        }
        Artifact::Completions => {
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let mut cmd = Cli::command();
                clap_complete::generate_to(shell, &mut cmd, "fwharden", dir).with_context(
                    || format!("cannot write the {shell} completion into {}", dir.display()),
                )?;
            }
        }
    }
    Ok(exit::OK)
}

/// One page per visible command, in section 8: fwharden changes the
/// system's firewall and lives in /usr/sbin (clap_mangen's own
/// `generate_to` writes section 1, which lintian rightly flags for sbin).
fn write_pages(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .generate_to(dir)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_name_every_visible_subcommand_and_no_hidden_one() {
        let dir = tempfile::tempdir().unwrap();
        run(Artifact::Man, dir.path()).unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for page in [
            "fwharden.8",
            "fwharden-apply.8",
            "fwharden-restore.8",
            "fwharden-emit.8",
            "fwharden-audit.8",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
        }
        for hidden in ["fwharden-watch.8", "fwharden-generate.8"] {
            assert!(!names.iter().any(|n| n == hidden), "{hidden} written");
        }
        let apply = fs::read_to_string(dir.path().join("fwharden-apply.8")).unwrap();
        assert!(apply.contains("auto\\-confirm"), "{apply}");
    }

    #[test]
    fn completions_are_written_for_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        run(Artifact::Completions, dir.path()).unwrap();
        let bash = fs::read_to_string(dir.path().join("fwharden.bash")).unwrap();
        assert!(
            bash.contains("restore"),
            "bash completion lacks subcommands"
        );
        assert!(dir.path().join("_fwharden").exists());
        assert!(dir.path().join("fwharden.fish").exists());
    }
}
