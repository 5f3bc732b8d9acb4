//! `fwharden init` writes an editable copy of a profile; `fwharden edit`
//! opens one in the operator's editor and saves it only once it checks,
//! as `visudo` does for sudoers, then offers the probe and the apply.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::exit;
use crate::profile::lookup::{check_name, Location, ETC_DIR};
use crate::profile::{self, template, SearchPath};
use crate::rollback::ApplyOptions;
use crate::state::Dirs;

/// Where `init` writes and `edit` saves: the first profile directory
/// searched (`--profile-dir`, or /etc/fwharden/profiles).
fn home(search: &SearchPath) -> PathBuf {
    search
        .dirs
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(ETC_DIR))
}

/// `search`, the built-in profiles included.
fn with_builtin(search: &SearchPath) -> SearchPath {
    SearchPath {
        dirs: search.dirs.clone(),
        builtin: true,
    }
}

/// `fwharden init NAME [--from PROFILE] [--force]`.
pub fn init(
    search: &SearchPath,
    name: &str,
    from: Option<&str>,
    force: bool,
) -> anyhow::Result<i32> {
    if let Err(d) = check_name(name) {
        eprintln!("{d}");
        return Ok(exit::USAGE);
    }
    // The source may be built in whatever the search path (after
    // `--profile-dir` too: copying them is what init is for).
    let sources = with_builtin(search);
    // Without --from: the profile of that name (a built-in one, to make
    // it editable), or else the safe base.
    let from = from.unwrap_or_else(|| match sources.find_name(name) {
        Ok(_) => name,
        Err(_) => "base",
    });
    let found = match sources.find(from) {
        Ok(f) => f,
        Err(d) => {
            eprintln!("{d}");
            return Ok(exit::INVALID_PROFILE);
        }
    };
    let dir = home(search);
    let path = dir.join(format!("{name}.toml"));
    if path.exists() && !force {
        eprintln!(
            "fwharden: {} exists; nothing was written. `fwharden edit {name}` edits it; --force replaces it",
            path.display()
        );
        return Ok(exit::REFUSED);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (text, marked) = template::editable_copy(&found.name, &found.text);
    write_atomically(&path, &text)?;
    println!(
        "wrote {} (a copy of {}, {})",
        path.display(),
        found.name,
        found.location.describe()
    );
    if !marked.is_empty() {
        let lines: Vec<String> = marked.iter().map(ToString::to_string).collect();
        println!(
            "lines {} hold documentation addresses that match nobody: put your own there",
            lines.join(", ")
        );
    }
    println!("next: fwharden edit {name}, then fwharden apply {name} --dry-run");
    Ok(exit::OK)
}

/// The file, written to a temporary one beside it, fsynced and renamed
/// over it (the state directory's one way to write a file).
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("profile.toml");
    crate::state::atomic::write_mode(dir, name, text.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// What the operator typed at a prompt (empty at end of input).
fn ask(question: &str) -> String {
    print!("{question} ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim().to_lowercase()
}

/// `fwharden edit NAME`: $VISUAL or $EDITOR on a copy in the profile's
/// own directory (its `extends` and group files resolve alike); saved over
/// the profile only when it checks; on errors, back into the editor or
/// leave with the profile unchanged. Then the probe and the apply are
/// offered; at the end of input (a script), nothing more is done.
pub fn edit(search: &SearchPath, dirs: &Dirs, name: &str) -> anyhow::Result<i32> {
    if let Err(d) = check_name(name) {
        eprintln!("{d}");
        return Ok(exit::USAGE);
    }
    // Built-in ones too, to say how to make them editable.
    let everywhere = with_builtin(search);
    let found = match everywhere.find_name(name) {
        Ok(f) => f,
        Err(d) => {
            eprintln!("{d}");
            return Ok(exit::INVALID_PROFILE);
        }
    };
    let path = match &found.location {
        Location::File(p) => p.clone(),
        Location::Builtin(_) => {
            eprintln!(
                "fwharden: {name} is built into fwharden and has no file to edit: `fwharden init {name}` writes an editable copy to {}",
                home(search).join(format!("{name}.toml")).display()
            );
            return Ok(exit::INVALID_PROFILE);
        }
    };
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Hidden, so `list` and lookups never see it; `.toml`, so the loader
    // reads it as a profile file.
    let draft = dir.join(format!(".{name}.edit.toml"));
    std::fs::copy(&path, &draft).with_context(|| format!("copying {} to edit", path.display()))?;
    let _cleanup = Remove(draft.clone());
    let draft_spec = draft.to_string_lossy().into_owned();
    loop {
        let editor = std::env::var("VISUAL")
            .or_else(|_| std::env::var("EDITOR"))
            .unwrap_or_else(|_| "editor".to_string());
        // Through the shell, as visudo and git do: EDITOR may hold
        // arguments (`code --wait`).
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("fwharden-edit")
            .arg(&draft)
            .status()
            .with_context(|| format!("running the editor {editor:?}"))?;
        if !status.success() {
            eprintln!(
                "fwharden: the editor {editor:?} failed ({status}); {} is unchanged",
                path.display()
            );
            return Ok(exit::FAILURE);
        }
        let text = std::fs::read_to_string(&draft)?;
        if text == std::fs::read_to_string(&path)? {
            println!("no change: {} is as it was", path.display());
            return Ok(exit::OK);
        }
        let loaded = profile::load(&draft_spec, search);
        for d in loaded.diagnostics.iter() {
            eprintln!("{d}");
        }
        if loaded.profile.is_some() {
            write_atomically(&path, &text)?;
            println!("saved {}", path.display());
            return offer(search, dirs, name);
        }
        let answer = ask(&format!(
            "{} has errors (above); nothing was saved. What now? (e)dit again, e(x)it without saving [e]:",
            path.display()
        ));
        if answer != "e" && !(answer.is_empty() && stdin_is_terminal()) {
            eprintln!("fwharden: {} is unchanged", path.display());
            return Ok(exit::INVALID_PROFILE);
        }
    }
}

fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}

/// After a save: the probe, then the apply with its timer, each asked.
fn offer(search: &SearchPath, dirs: &Dirs, name: &str) -> anyhow::Result<i32> {
    if ask(&format!(
        "probe {name} now, with real packets in a replica? [y/N]"
    )) == "y"
    {
        let code = super::probe::run(search, name, std::time::Duration::from_millis(400), false)?;
        if code != exit::OK {
            return Ok(code);
        }
    }
    if ask(&format!(
        "apply {name} now (rolled back in 60 s unless confirmed)? [y/N]"
    )) != "y"
    {
        println!("not applied: `fwharden apply {name} --dry-run` says what it would change");
        return Ok(exit::OK);
    }
    let opts = || ApplyOptions {
        timeout: 60,
        auto_confirm: false,
        force: false,
        dry_run: false,
        operator: crate::sshclient::find(),
        proven: false,
    };
    let probing = super::apply::Probing {
        mode: super::apply::ProbeMode::WhereAvailable,
        break_for_test: None,
    };
    super::apply::run(search, dirs, name, false, opts, &probing, false, false)
}

/// Removes the draft whatever happens.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
