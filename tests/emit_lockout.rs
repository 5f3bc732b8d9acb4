//! The lockout check of the emitted scripts (src/emit/safety.rs,
//! src/emit/lockout.rs) with load.sh and the real iptables in namespaces
//! the tests create: a profile that cuts the SSH client is refused with
//! exit 4 and nothing changes, whether the client comes from
//! SSH_CONNECTION, SSH_CLIENT, or neither (the peer of the only connection
//! to a process named sshd); and the scripts are shellcheck-clean.

mod common;
#[path = "common/emit_host.rs"]
mod emit_host;

use std::process::Command;
use std::time::Duration;

use common::*;
use emit_host::*;
use fwharden::netns::Netns;

fn interlock() {
    std::env::set_var(fwharden::rollback::FORBID_ENV, own_netns());
}

#[test]
#[ignore = "needs root"]
fn the_lockout_check_refuses_a_profile_that_cuts_the_ssh_client() {
    needs_root("the_lockout_check_refuses_a_profile_that_cuts_the_ssh_client");
    interlock();
    let b = EmitHost::new("rblock", Backend::Nft);
    b.previous_rules();
    let before = b.state();
    // `after` lets SSH in from 198.51.100.0/24 only.
    let cut = [("SSH_CONNECTION", "192.0.2.7 50000 10.1.1.1 22")];
    let out = b.expect(4, "after", &[], &cut);
    let err = stderr(&out);
    assert!(
        err.contains("192.0.2.7")
            && err.contains("port 22 arriving on eth0")
            && err.contains("--force")
            && err.contains("Nothing was changed"),
        "{err}"
    );
    assert_eq!(b.state(), before, "a refusal changes nothing");
    assert!(b.rollback_dirs().is_empty(), "nothing saved, no restorer");
    // sudo drops SSH_CONNECTION; SSH_CLIENT has no server address, so the
    // interface is unknown: still refused.
    b.expect(4, "after", &[], &[("SSH_CLIENT", "192.0.2.7 50000 22")]);
    // SSH on wg0 only, the connection arriving on eth0: refused, naming
    // the policy.
    let out = b.expect(
        4,
        "tunnel",
        &[],
        &[("SSH_CONNECTION", "10.0.0.5 50000 10.1.1.1 22")],
    );
    assert!(
        stderr(&out).contains("arriving on eth0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.state(), before);
    // An unreadable variable is said so, and with nothing else to go on
    // (no sshd here) nothing is checked.
    let out = b.expect(
        0,
        "before",
        &["--no-rollback"],
        &[("SSH_CONNECTION", "garbage")],
    );
    assert!(
        stderr(&out).contains("SSH_CONNECTION is set but unreadable"),
        "{}",
        stderr(&out)
    );
    // That reload of `before` swapped its sets in anew (ipset gives a new
    // set a new hash seed, `initval`): the state to come back to.
    let before = b.state();
    // A client the profile lets in: loaded, then put back at once with
    // --rollback.
    let out = b.expect(
        0,
        "after",
        &[],
        &[("SSH_CONNECTION", "198.51.100.7 50000 10.1.1.1 22")],
    );
    assert!(stderr(&out).contains("lockout check: a new SSH connection from 198.51.100.7 to port 22 arriving on eth0 is accepted"), "{}", stderr(&out));
    let dir = printed_dir(&out);
    let back = b.expect(0, "after", &["--rollback", dir.to_str().unwrap()], &[]);
    assert!(
        stdout(&back).contains("previous rules are back"),
        "{}",
        stdout(&back)
    );
    assert_eq!(b.state(), before);
    // --force skips the check (a console), the timer still runs.
    let out = b.expect(0, "after", &["--force", "--timeout", "2"], &cut);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    b.wait_for_state(&before, "forced, unconfirmed");
}

/// Without the variables (sudo drops them), the client is the peer of the
/// only established connection to a local sshd: here a stand-in listening
/// on port 22 whose process is named sshd, reached over a veth pair from a
/// second namespace.
#[test]
#[ignore = "needs root"]
fn without_ssh_connection_the_client_is_found_among_sshds_connections() {
    let test = "without_ssh_connection_the_client_is_found_among_sshds_connections";
    needs_root(test);
    interlock();
    let b = EmitHost::new("rbss", Backend::Nft);
    let client = Netns::create("rbssc").unwrap();
    b.ns.link(&client, &["10.2.2.1/24"], &["10.2.2.7/24"])
        .unwrap();
    // Python under the name sshd (ss reports a process by the name it was
    // run as), listening on 22 as sshd does, holding what it accepts.
    let bin = b.files.path().join("sshd");
    std::os::unix::fs::symlink("/usr/bin/python3", &bin).unwrap();
    let mut server = b.ns.command(bin.to_str().unwrap());
    server
        .args([
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET6)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('::', 22))\n\
             s.listen()\n\
             c = s.accept()\n\
             time.sleep(600)\n",
        ])
        .arg(b.tmp.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut server = server.spawn().unwrap();
    let listening = wait_until(Duration::from_secs(30), || {
        stdout(&b.ns.run(&["ss", "-tlnpH"]).unwrap()).contains("\"sshd\"")
    });
    assert!(listening, "the stand-in sshd never listened");
    let mut conn = client.command("bash");
    conn.args(["-c", "exec busybox nc 10.2.2.1 22"])
        .arg(b.tmp.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut conn = conn.spawn().unwrap();
    let established = wait_until(Duration::from_secs(30), || {
        stdout(&b.ns.run(&["ss", "-tnpH", "state", "established"]).unwrap()).contains("\"sshd\"")
    });
    let before = b.state();
    let out = b.load("after", &[], &[]);
    let _ = conn.kill();
    let _ = server.kill();
    let _ = (conn.wait(), server.wait());
    assert!(
        established,
        "the stand-in connection never came up: {}",
        stdout(&b.ns.run(&["ss", "-tanp"]).unwrap())
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("10.2.2.7") && err.contains("the only connection to sshd"),
        "{err}"
    );
    assert_eq!(b.state(), before);
}

/// The emitted scripts are shellcheck-clean as POSIX sh: load.sh with and
/// without sets and bans, ufw.sh and reload.sh.
#[test]
fn the_emitted_scripts_are_shellcheck_clean() {
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("shellcheck is missing (CI=true: a skip is a failure); run scripts/deps");
        }
        eprintln!("\n!!!!!!!! SKIPPED the_emitted_scripts_are_shellcheck_clean: shellcheck is missing; run scripts/deps !!!!!!!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("bans.toml"), AFTER).unwrap();
    std::fs::write(
        profiles.join("gw.toml"),
        "extends = \"wireguard-gateway\"\n[defaults]\ncontainers = \"ignore\"\n",
    )
    .unwrap();
    let mut scripts = Vec::new();
    for (name, format) in [
        ("ssh-only", "iptables"),
        ("bans", "iptables"),
        ("gw", "ufw"),
    ] {
        let out_dir = dir.path().join(name);
        let out = fwharden()
            .args([
                "--profile-dir",
                "profiles",
                "--profile-dir",
                profiles.to_str().unwrap(),
            ])
            .args([
                "emit",
                name,
                "--format",
                format,
                "--approximate",
                "--output",
            ])
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "emit {name}: {}", stderr(&out));
        let names: &[&str] = if format == "ufw" {
            &["ufw.sh", "reload.sh"]
        } else {
            &["load.sh"]
        };
        scripts.extend(names.iter().map(|n| out_dir.join(n)));
    }
    let out = Command::new("shellcheck")
        .args(["-s", "sh"])
        .args(&scripts)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
