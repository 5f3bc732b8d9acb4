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
    /// One man page per visible subcommand (fwharden.1, fwharden-apply.1, ...).
    Man,
    /// bash, zsh and fish completions (fwharden, _fwharden, fwharden.fish).
    Completions,
}

pub fn run(what: Artifact, dir: &Path) -> anyhow::Result<i32> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match what {
        Artifact::Man => clap_mangen::generate_to(Cli::command(), dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display()))?,
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
        for page in ["fwharden.1", "fwharden-apply.1", "fwharden-restore.1"] {
            assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
        }
        for hidden in ["fwharden-watch.1", "fwharden-generate.1", "fwharden-emit.1"] {
            assert!(!names.iter().any(|n| n == hidden), "{hidden} written");
        }
        let apply = fs::read_to_string(dir.path().join("fwharden-apply.1")).unwrap();
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
