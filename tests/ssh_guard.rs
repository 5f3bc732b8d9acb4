//! The lockout guard over a real SSH session (issue 23): Debian's sshd
//! runs inside a test namespace (its own host key, configuration and pid
//! file in a temporary directory, listening on the namespace's address
//! only), the client logs in from a second namespace linked to it by a
//! veth pair, and fwharden runs in the session, under sudo, which drops
//! SSH_CONNECTION.
//!
//! - `sudo fwharden apply cut-ssh` is refused (exit 4), the client found
//!   from the connection held by the sshd process above it;
//! - an unreadable SSH_CONNECTION is said to be unreadable, with its
//!   value, and the client is still found;
//! - an apply that keeps SSH arms the escape hatch for that client;
//! - `sudo fwharden ban CLIENT` is refused, and the session goes on;
//! - from the console, the only client connected to sshd is guarded, and
//!   with two, both are (no hatch); `ban` of a client merely connected to
//!   sshd (fail2ban's case) goes through.

mod common;

use std::time::Duration;

use common::sshd::*;
use common::*;

#[test]
#[ignore = "needs root"]
fn sudo_over_a_real_ssh_session_is_guarded_by_the_sshd_ancestor() {
    let test = "sudo_over_a_real_ssh_session_is_guarded_by_the_sshd_ancestor";
    needs_root(test);
    if !have_ssh(test) {
        return;
    }
    let site = SshSite::new("sshg");
    let (host, client, sshd) = (&site.host, &site.client, &site.sshd);
    let apply_cut = "apply cut-ssh --no-probe --timeout 120";

    // Without sudo: SSH_CONNECTION, as before.
    let out = sshd.ssh(client, &site.remote(false, "", apply_cut));
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(4), "{text}\nsshd:\n{}", sshd.log());
    assert!(
        text.contains(&format!(
            "SSH client {CLIENT} (to port 22), from SSH_CONNECTION"
        )),
        "{text}"
    );

    // Under sudo, SSH_CONNECTION is gone: the connection held by the sshd
    // process above fwharden names the client.
    let out = sshd.ssh(client, &site.remote(true, "", apply_cut));
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(4), "sudo apply of a profile cutting SSH: {text}");
    assert!(
        text.contains(&format!(
            "SSH client {CLIENT} (to port 22), found from its established connection to sshd"
        )) && text.contains("an ancestor of this process")
            && text.contains("would refuse new SSH connections"),
        "{text}"
    );
    assert!(host.table().is_none(), "a refused apply changed the kernel");

    // Unreadable values are said to be unreadable, and the client is
    // still found.
    for value in ["garbage", "", "203.0.113.99 50000"] {
        let vars = format!("SSH_CONNECTION='{value}'");
        let out = sshd.ssh(
            client,
            &site.remote(true, &vars, &format!("--json {apply_cut}")),
        );
        let (code, text) = code_and_text(&out);
        assert_eq!(code, Some(4), "SSH_CONNECTION={value:?}: {text}");
        assert!(
            text.contains(&format!("SSH_CONNECTION is set but unreadable ({value:?})")),
            "SSH_CONNECTION={value:?}: {text}"
        );
        assert!(!text.contains("unset"), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
        assert_eq!(v["ssh_client"]["method"], "sshd-ancestor", "{v}");
        assert_eq!(v["ssh_client"]["clients"][0]["client"], CLIENT, "{v}");
    }

    // An apply that keeps SSH goes through, and the hatch is armed for
    // the client found this way.
    let out = sshd.ssh(
        client,
        &site.remote(true, "", "--json apply keep-ssh --no-probe --timeout 120"),
    );
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(v["state"], "pending", "{v}");
    let hatch = v["hatch"].as_str().unwrap();
    assert!(
        hatch.starts_with("armed") && hatch.contains(CLIENT),
        "{hatch}"
    );
    assert!(host
        .table_text()
        .contains(&format!("ip saddr {CLIENT} tcp dport 22")));

    // `ban` of the client under sudo: refused, and the session (the next
    // command over it, and a new login) still works.
    let out = sshd.ssh(client, &site.remote(true, "", &format!("ban {CLIENT}")));
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(4), "{text}");
    assert!(
        text.contains("it is your SSH client") && text.contains("--force"),
        "{text}"
    );
    assert!(host.ban_of(CLIENT).is_none());
    let out = sshd.ssh(client, "echo still in");
    assert_eq!(stdout(&out).trim(), "still in", "{}", stderr(&out));

    host.expect(0, &["rollback"]);
    host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn from_the_console_the_clients_connected_to_sshd_are_guarded_and_ban_takes_them() {
    let test = "from_the_console_the_clients_connected_to_sshd_are_guarded_and_ban_takes_them";
    needs_root(test);
    if !have_ssh(test) {
        return;
    }
    let site = SshSite::new("sshc");
    let (host, client, sshd, p) = (&site.host, &site.client, &site.sshd, site.profiles());
    // The ban table, for `ban` below.
    std::fs::write(
        p.join("keep-web.toml"),
        "[bans]\nenabled = true\n[[rule]]\nallow = \"ssh\"\n[[rule]]\nallow = \"http\"\n",
    )
    .unwrap();
    host.confirm_from(p, "keep-web");

    // A connection to sshd that never logs in (a brute-forcer between two
    // guesses) is nobody to guard: from the console, with only that one,
    // the apply goes through.
    let to: std::net::SocketAddr = format!("{SERVER}:22").parse().unwrap();
    let mut stranger = client
        .run_in(|| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10)))
        .unwrap()
        .unwrap();
    let mut banner = [0u8; 4];
    std::io::Read::read_exact(&mut stranger, &mut banner).unwrap();
    assert_eq!(&banner, b"SSH-", "sshd took the connection");
    let out = host.expect_in(
        p,
        0,
        &[
            "--json",
            "apply",
            "cut-ssh",
            "--no-probe",
            "--timeout",
            "120",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ssh_client"]["method"], "not-found", "{v}");
    host.expect(0, &["rollback"]);

    // From the console (no SSH_CONNECTION, no sshd above it) while a
    // session is open: its client is the only logged-in connection to
    // sshd, and the guard keeps it.
    let _session = sshd.session(client, CLIENT);
    let out = host.expect_in(p, 4, &["apply", "cut-ssh", "--no-probe"]);
    assert!(
        stderr(&out).contains(&format!(
            "SSH client {CLIENT} (to port 22), found as the only established connection to sshd"
        )),
        "{}",
        stderr(&out)
    );
    // Two sessions, from two addresses, neither above fwharden: both are
    // guarded, and no hatch is armed (it lets one address in).
    let _second = sshd.session(client, CLIENT2);
    let out = host.expect_in(p, 4, &["--json", "apply", "cut-ssh", "--no-probe"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ssh_client"]["method"], "ambiguous", "{v}");
    assert!(
        stderr(&out).contains(&format!("SSH clients {CLIENT} (to port 22), {CLIENT2} (to port 22): several established connections to sshd")),
        "{}",
        stderr(&out)
    );
    let out = host.expect_in(p, 0, &["--json", "apply", "keep-ssh", "--no-probe"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["hatch"]
            .as_str()
            .unwrap()
            .starts_with("none: SSH clients"),
        "{v}"
    );
    host.expect(0, &["rollback"]);
    // But `ban` (fail2ban's path) takes only a client known to be this
    // process's: a client merely connected to sshd is what fail2ban bans.
    host.expect_in(p, 0, &["ban", CLIENT]);
    host.expect_in(p, 0, &["unban", CLIENT]);
    host.wait_quiet();
}
