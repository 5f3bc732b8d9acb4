//! `fwharden init` and `fwharden edit`, with a real shell as the editor:
//! a copy of a built-in profile with its placeholders marked; an edit
//! saved only once it checks, back into the editor on errors, the profile
//! untouched when the operator leaves. No root: nothing is applied (the
//! apply offered after a save is declined, as a script's empty input does).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;

/// fwharden with profiles only in `dir` (with the shipped base, which the
/// copies extend), `editor` as $EDITOR, and `input` on stdin.
fn run(dir: &Path, editor: Option<&Path>, input: &str, args: &[&str]) -> Output {
    std::fs::create_dir_all(dir).unwrap();
    if !dir.join("base.toml").exists() {
        std::fs::copy(root().join("profiles/base.toml"), dir.join("base.toml")).unwrap();
    }
    let mut c = fwharden();
    c.arg("--profile-dir").arg(dir).args(args);
    c.env_remove("VISUAL");
    match editor {
        Some(e) => c.env("EDITOR", e),
        None => c.env_remove("EDITOR"),
    };
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run fwharden");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("wait for fwharden")
}

/// An editor: a shell script doing `body` to the file "$1" (the n-th call
/// finds its number in $n, kept in a file beside the script).
fn editor(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("editor.sh");
    let count = dir.join("calls");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nn=$(( $(cat '{c}' 2>/dev/null || echo 0) + 1 ))\necho $n > '{c}'\n{body}\n",
            c = count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn init_writes_an_editable_copy_with_its_placeholders_marked() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        None,
        "",
        &["init", "mine", "--from", "vps-profile"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let path = dir.path().join("mine.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# A copy of profile vps-profile"),
        "{text}"
    );
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(fwharden::profile::template::MARK))
        .collect();
    assert!(
        marked.iter().any(|l| l.contains("192.0.2.10")),
        "{marked:?}"
    );
    assert!(
        stdout(&out).contains("hold documentation addresses"),
        "{}",
        stdout(&out)
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // It checks, as a profile of its own.
    let check = run(dir.path(), None, "", &["check", "mine"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));

    // Never over an existing file without --force.
    std::fs::write(&path, "# mine, edited\n").unwrap();
    let again = run(dir.path(), None, "", &["init", "mine"]);
    assert_eq!(again.status.code(), Some(4), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("--force replaces it"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine, edited\n");

    // A built-in name alone makes that profile editable.
    let web = run(dir.path(), None, "", &["init", "web-server"]);
    assert_eq!(web.status.code(), Some(0), "{}", stderr(&web));
    let text = std::fs::read_to_string(dir.path().join("web-server.toml")).unwrap();
    assert!(text.starts_with("# A copy of profile web-server"), "{text}");
}

#[test]
fn edit_saves_a_change_only_once_it_checks() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    let tools = tempfile::tempdir().unwrap();
    assert_eq!(
        run(&profiles, None, "", &["init", "mine", "--from", "base"])
            .status
            .code(),
        Some(0)
    );
    let path = profiles.join("mine.toml");
    let original = std::fs::read_to_string(&path).unwrap();

    // First an invalid change (a host-bits prefix), then fixed when the
    // operator goes back into the editor.
    let ed = editor(
        tools.path(),
        "if [ $n = 1 ]; then printf '[groups]\\nops = [\"10.0.0.1/24\"]\\n' >> \"$1\"; \
         else sed -i 's|10.0.0.1/24|10.0.0.0/24|' \"$1\"; fi",
    );
    let out = run(&profiles, Some(&ed), "e\n", &["edit", "mine"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("has host bits set"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("What now?"), "{}", stdout(&out));
    assert!(stdout(&out).contains("saved"), "{}", stdout(&out));
    assert!(stdout(&out).contains("not applied"), "{}", stdout(&out));
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(saved.contains("ops = [\"10.0.0.0/24\"]"), "{saved}");
    assert_ne!(saved, original);
    assert!(
        !profiles.join(".mine.edit.toml").exists(),
        "the draft was left behind"
    );
}

#[test]
fn an_invalid_edit_left_without_saving_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    run(dir.path(), None, "", &["init", "mine", "--from", "base"]);
    let path = dir.path().join("mine.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let ed = editor(
        tools.path(),
        "printf '[[rule]]\\nallow = \"nosuchservice\"\\n' >> \"$1\"",
    );
    // End of input at "What now?": leave, as a script would.
    let out = run(dir.path(), Some(&ed), "", &["edit", "mine"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("is unchanged"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    assert!(!dir.path().join(".mine.edit.toml").exists());

    // An editor that fails changes nothing either.
    let failing = editor(tools.path(), "echo garbage >> \"$1\"; exit 1");
    let out = run(dir.path(), Some(&failing), "", &["edit", "mine"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);

    // A built-in profile has no file: init first.
    let out = run(dir.path(), Some(&ed), "", &["edit", "vps-profile"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fwharden init vps-profile"),
        "{}",
        stderr(&out)
    );
}
