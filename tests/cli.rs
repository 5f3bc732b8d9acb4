//! The command line as a user and as automation meet it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

/// Every shipped profile's name and `description`, read from profiles/.
fn shipped_descriptions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("profiles")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = toml_edit::ImDocument::parse(text.as_str()).unwrap();
        let description = doc["description"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no description", path.display()))
            .to_string();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        out.push((name, description));
    }
    out.sort();
    assert!(out.len() >= 7, "{out:?}");
    out
}

#[test]
fn list_shows_every_shipped_profile_with_its_description() {
    let out = shipped(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for (name, description) in shipped_descriptions() {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(line.contains(&format!("profiles/{name}.toml")), "{line}");
        assert!(line.ends_with(&description), "{line}");
    }
}

#[test]
fn list_json_gives_name_location_and_description() {
    let out = shipped(&["--json", "list"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = v.as_array().unwrap();
    let shipped = shipped_descriptions();
    assert_eq!(listed.len(), shipped.len(), "{v}");
    for (name, description) in shipped {
        let p = listed
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing: {v}"));
        assert_eq!(p["builtin"], false, "{p}");
        assert_eq!(p["description"], description.as_str(), "{p}");
        assert_eq!(p["location"], format!("profiles/{name}.toml"), "{p}");
    }
}

#[test]
fn builtin_profiles_are_listed_without_a_profile_dir() {
    let out = fwharden().arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for (name, description) in shipped_descriptions() {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.ends_with(&description)),
            "{name} missing:\n{text}"
        );
    }
}

#[test]
fn check_json_carries_the_summary_and_the_warnings() {
    let out = shipped(&["--json", "check", "base"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["profile"]["name"], "base");
    let w = &v["warnings"][0];
    assert!(
        w["message"].as_str().unwrap().contains("allows no SSH"),
        "{w}"
    );
    assert!(
        out.stderr.is_empty(),
        "JSON mode keeps stderr for failures only"
    );
}

/// `check` in a directory holding `files`, for `name`: (exit, stderr).
fn check_in(files: &[(&str, &str)], name: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in files {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let out = fwharden()
        .arg("--profile-dir")
        .arg(dir.path())
        .args(["check", "--deny-warnings", name])
        .output()
        .unwrap();
    let err = stderr(&out).replace(&format!("{}/", dir.path().display()), "");
    (out.status.code(), err)
}

#[test]
fn defaults_that_cut_the_host_off_are_warned_where_they_are_set() {
    let ssh = "[[rule]]\nallow = \"ssh\"\n";
    let (code, err) = check_in(
        &[("n.toml", &format!("[defaults]\nicmp = \"none\"\n{ssh}"))],
        "n",
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("n.toml:2:8: warning: `icmp = \"none\"` drops IPv6 neighbour discovery"),
        "{err}"
    );
    assert!(err.contains("help: write `icmp = \"essential\"`"), "{err}");

    // Set in a parent, warned there; a child that sets it back is quiet.
    let parent = format!("[defaults]\noutput = \"drop\"\nestablished = false\n{ssh}");
    let files = [
        ("p.toml", parent.as_str()),
        ("c.toml", "extends = \"p\"\n"),
        (
            "ok.toml",
            "extends = \"p\"\n[defaults]\nestablished = true\n",
        ),
    ];
    let (code, err) = check_in(&files, "c");
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("p.toml:3:15: warning: `established = false` with a chain that drops: the replies to the connections the rules allow are dropped on the way out"), "{err}");
    // The child that keeps replies is told only that nothing else leaves.
    let (code, err) = check_in(&files, "ok");
    assert_eq!(code, Some(3), "{err}");
    assert!(!err.contains("established"), "{err}");
    assert!(err.contains("p.toml:2:10: warning: `output = \"drop\"` leaves no way out for DNS (53 udp/tcp), NTP (123/udp) or package updates (80/443 tcp)"), "{err}");

    // Nothing drops: nothing to say.
    let open = "[defaults]\ninput = \"accept\"\nestablished = false\nicmp = \"none\"\n\
                [[rule]]\ndeny = 23\n";
    assert_eq!(check_in(&[("o.toml", open)], "o"), (Some(0), String::new()));
}

#[test]
fn databases_and_admin_services_open_to_any_are_warned_at_their_rule() {
    let profile = "[groups]\nadmin = [\"192.0.2.10\"]\n\
                   [[rule]]\nallow = \"ssh\"\nfrom = \"admin\"\n\
                   [[rule]]\nallow = [\"https\", \"postgres\"]\n\
                   [[rule]]\nallow = \"6379/tcp\"\nfrom = \"any6\"\n\
                   [[rule]]\nallow = \"9100\"\ninterface = \"eth0\"\n";
    let (code, err) = check_in(&[("db.toml", profile)], "db");
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("db.toml:6:1: warning: postgres (5432/tcp) allowed from any address"),
        "{err}"
    );
    assert!(
        err.contains("db.toml:8:1: warning: redis (6379/tcp) allowed from any address"),
        "{err}"
    );
    assert!(
        err.contains("db.toml:11:1: warning: node-exporter (9100/tcp) allowed from any address"),
        "{err}"
    );
    assert!(err.contains("help: allow it only from a group"), "{err}");
    assert_eq!(
        err.matches("warning:").count(),
        3,
        "ssh from admin is quiet:\n{err}"
    );

    // From a group only: nothing to say.
    let quiet = "[groups]\nwg = [\"10.0.0.0/24\"]\n[[rule]]\nallow = [\"ssh\", \"redis\", \"mysql\"]\nfrom = \"wg\"\n";
    assert_eq!(
        check_in(&[("q.toml", quiet)], "q"),
        (Some(0), String::new())
    );
}

#[test]
fn a_mistyped_profile_name_gets_the_closest_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web-front.toml"),
        "[[rule]]\nallow = \"https\"\n",
    )
    .unwrap();
    for command in ["check", "show"] {
        for (typed, near) in [("web-frnt", "web-front"), ("vps-profle", "vps-profile")] {
            // The second directory's profiles and the built-in ones are
            // found only without --profile-dir.
            let mut cmd = fwharden();
            if typed == "web-frnt" {
                cmd.arg("--profile-dir").arg(dir.path());
            }
            let out = cmd.args([command, typed]).output().unwrap();
            assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
            assert!(
                stderr(&out).contains(&format!("help: did you mean `{near}`?")),
                "{command} {typed}: {}",
                stderr(&out)
            );
        }
    }
    // Nothing near: the general hint.
    let out = fwharden().args(["check", "zzzzzzzz"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("run `fwharden list`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn show_source_prints_a_profile_as_written_built_in_ones_too() {
    let base = std::fs::read_to_string(root().join("profiles/base.toml")).unwrap();
    // Built in after `cargo install` (the package's copy is the same text).
    let empty = tempfile::tempdir().unwrap();
    let out = fwharden()
        .args(["show", "--source", "base"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), base);

    // A file of the user's, by name, byte for byte.
    let mine = "# mine\n[[rule]]\nallow = \"ssh\"\n";
    std::fs::write(empty.path().join("mine.toml"), mine).unwrap();
    let out = fwharden()
        .arg("--profile-dir")
        .arg(empty.path())
        .args(["show", "--source", "mine"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), mine);

    let out = fwharden()
        .args(["show", "--source", "bse"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("did you mean `base`?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn deny_warnings_makes_a_warning_fatal() {
    assert_eq!(shipped(&["check", "base"]).status.code(), Some(0));
    assert_eq!(
        shipped(&["check", "--deny-warnings", "base"]).status.code(),
        Some(3)
    );
    assert_eq!(
        shipped(&["check", "--deny-warnings", "vps-profile"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn check_json_of_an_invalid_profile_lists_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[rule]]\nallow = \"postgress\"\nfrom = \"10.0.0.1/8\"\n",
    )
    .unwrap();
    let out = fwharden()
        .args(["--json", "check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    for e in errors {
        assert_eq!(e["file"], path.to_str().unwrap(), "{e}");
        assert!(e["line"].as_u64().unwrap() > 0, "{e}");
        assert!(e["column"].as_u64().unwrap() > 0, "{e}");
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
        assert!(!e["hint"].as_str().unwrap().is_empty(), "{e}");
    }
    assert!(errors[0]["hint"]
        .as_str()
        .unwrap()
        .contains("did you mean `postgres`"));
}

#[test]
fn every_shipped_profile_checks_and_shows_as_json() {
    for (name, _) in shipped_descriptions() {
        let check = shipped(&["--json", "check", &name]);
        assert_eq!(check.status.code(), Some(0), "{name}");
        let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        assert_eq!(v["ok"], true, "{name}");
        assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{name}");
        let show = shipped(&["--json", "show", &name]);
        assert_eq!(show.status.code(), Some(0), "{name}");
        let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        assert_eq!(v["table"], "fwharden", "{name}");
    }
}

#[test]
fn show_json_is_the_ruleset_model() {
    let out = shipped(&["--json", "show", "vps-profile"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["table"], "fwharden");
    assert_eq!(v["chains"][0]["hook"], "input");
    assert!(v["sets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "wg-net_v4"));
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = fwharden().arg("--help").output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("Examples:") && text.contains("Exit codes:"),
        "{text}"
    );
}

#[test]
fn names_with_path_tricks_are_refused() {
    for bad in ["..", ".", ".hidden", "a b", "a\\b", "base\n", "é", ""] {
        for cmd in ["check", "show"] {
            let out = shipped(&[cmd, bad]);
            assert_eq!(out.status.code(), Some(3), "{cmd} {bad:?}");
            assert!(out.stdout.is_empty(), "{cmd} {bad:?}: {}", stdout(&out));
            let err = stderr(&out);
            assert!(
                err.contains("is not a profile name") || err.contains("the profile name is empty"),
                "{cmd} {bad:?}: {err}"
            );
            assert!(err.contains("help: "), "{cmd} {bad:?}: {err}");
        }
    }
    // With a `/`, a name is a path, and there is no such file.
    for bad in ["../etc/passwd", "../no-such-dir/x", "profiles/../../x"] {
        let out = shipped(&["check", bad]);
        assert_eq!(out.status.code(), Some(3), "{bad}");
        assert!(out.stdout.is_empty(), "{bad}");
        assert!(
            stderr(&out).contains("cannot read the profile"),
            "{bad}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn usage_errors_have_their_code() {
    assert_eq!(
        fwharden().arg("frobnicate").output().unwrap().status.code(),
        Some(2)
    );
    // emit needs its format.
    let out = fwharden().args(["emit", "vps-profile"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--format"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs root"]
fn root_refuses_profiles_others_could_write() {
    needs_root("root_refuses_profiles_others_could_write");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, "[[rule]]\nallow = \"ssh\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = fwharden()
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("chmod go-w"), "{}", stderr(&out));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    let out = fwharden()
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("chown root:"), "{}", stderr(&out));

    std::os::unix::fs::chown(&path, Some(0), None).unwrap();
    assert_eq!(
        fwharden()
            .args(["check", path.to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
}
