//! `fwharden log` on the kernel-log path (a profile without
//! `nflog_group`), against the real journalctl reading a real journal: a
//! private systemd-journald (tests/common/journald.rs) stores kernel
//! messages in the exact format nf_log_syslog writes, the profile's
//! ruleset is loaded in a test namespace, and `fwharden log --journal-dir`
//! runs there. The messages are written by the test, not by the kernel:
//! a network namespace's `log` statements reach the kernel log only with
//! the global sysctl net.netfilter.nf_log_all_netns=1, which a test must
//! not change.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::journald::{have_journald, Journald};
use common::readme::readme_blocks;
use common::*;

/// Line 6 denies 2323 and logs with the default prefix; line 14 logs
/// 2525/udp with its own; the policy's drops are logged by `log_drops`.
const PROFILE: &str = "# tests/log_journal.rs
# No nflog_group: logs go to the kernel log.

[groups]
admin = [\"10.96.0.2\"]
[[rule]]
deny = 2323
log = true

[[rule]]
allow = \"ssh\"
from = \"admin\"

[[rule]]
deny = \"2525/udp\"
log = \"udp 2525: \"
";

const FLOODER: &str = "203.0.113.66";
const SCANNER: &str = "198.51.100.7";
const V6: &str = "2001:db8::5";

fn tcp4(prefix: &str, src: &str, dport: u16) -> String {
    format!("{prefix}IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC={src} DST=198.18.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=40000 DPT={dport} WINDOW=64240 RES=0x00 SYN URGP=0 ")
}

fn tcp6(prefix: &str, dport: u16) -> String {
    format!("{prefix}IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd SRC=2001:0db8:0000:0000:0000:0000:0000:0005 DST=2001:0db8:0000:0000:0000:0000:0000:0001 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=672371 PROTO=TCP SPT=40000 DPT={dport} WINDOW=64800 RES=0x00 SYN URGP=0 ")
}

fn udp4(prefix: &str, src: &str, dport: u16) -> String {
    format!("{prefix}IN=eth0 OUT= MAC= SRC={src} DST=198.18.0.1 LEN=33 TOS=0x00 PREC=0x00 TTL=64 ID=17 DF PROTO=UDP SPT=41000 DPT={dport} LEN=13 ")
}

/// The JSON lines of `fwharden --json log --since 1h --journal-dir DIR`
/// and `filter`, which must succeed.
fn logged(host: &Host, profiles: &Path, dir: &str, filter: &[&str]) -> Vec<serde_json::Value> {
    let args = ["--json", "log", "--since", "1h", "--journal-dir", dir];
    let out = host.expect_in(profiles, 0, &[&args[..], filter].concat());
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
#[ignore = "needs root"]
fn the_journal_summary_ranks_a_flooding_source_first_with_its_profile_line() {
    needs_root("the_journal_summary_ranks_a_flooding_source_first_with_its_profile_line");
    if !have_journald("the_journal_summary_ranks_a_flooding_source_first_with_its_profile_line") {
        return;
    }
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(profiles.path().join("journal.toml"), PROFILE).unwrap();
    let host = Host::new("logj");
    host.confirm_from(profiles.path(), "journal");

    let mut journald = Journald::start();
    let mut written = 0;
    let mut kernel = |text: &str| {
        journald.kernel(text);
        written += 1;
    };
    for _ in 0..12 {
        kernel(&tcp4("fwharden deny 2323: ", FLOODER, 2323));
    }
    for _ in 0..3 {
        kernel(&tcp4("fwharden drop: ", SCANNER, 2424));
    }
    kernel(&tcp6("fwharden deny 2323: ", 2323));
    kernel(&tcp6("fwharden deny 2323: ", 2323));
    kernel(&udp4("udp 2525: ", SCANNER, 2525));
    // Not ours, or not a packet: left out.
    kernel(&tcp4("ufw block: ", FLOODER, 2323));
    kernel("fwharden deny 2323: IN=eth0 OUT= TRUNCATED");
    kernel("e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex");
    journald.wait_for(written);
    let dir = journald.dir();
    let dir = dir.to_str().unwrap();

    // The last hour's ranking, from the journal.
    let out = host.expect_in(
        profiles.path(),
        0,
        &[
            "--json",
            "log",
            "--summary",
            "--since",
            "1h",
            "--journal-dir",
            dir,
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("one JSON document ({e}): {}", stdout(&out)));
    assert_eq!(report["since_secs"], 3600, "{report}");
    assert_eq!(report["packets"], 18, "{report}");
    assert_eq!(report["sources"][0]["key"], FLOODER, "{report}");
    assert_eq!(report["sources"][0]["packets"], 12, "{report}");
    assert_eq!(report["sources"][1]["key"], SCANNER, "{report}");
    assert_eq!(report["sources"][1]["packets"], 4, "{report}");
    assert_eq!(report["sources"][2]["key"], V6, "{report}");
    assert_eq!(report["ports"][0]["key"], "tcp/2323", "{report}");
    assert_eq!(report["ports"][0]["packets"], 14, "{report}");
    assert_eq!(
        report["rules"][0]["key"], "journal.toml:6 deny 2323",
        "{report}"
    );
    assert_eq!(report["rules"][0]["packets"], 14, "{report}");
    assert_eq!(
        report["rules"][1]["key"], "defaults: log drops (policy drop)",
        "{report}"
    );
    assert!(
        stderr(&out).contains("reading the kernel log from the journal in"),
        "{}",
        stderr(&out)
    );

    // The text, as the README shows it.
    let text = stdout(&host.expect_in(
        profiles.path(),
        0,
        &["log", "--summary", "--since", "1h", "--journal-dir", dir],
    ));
    let blocks = readme_blocks("## Observing: metrics and log");
    let shown = blocks
        .iter()
        .find(|b| b.contains("fwharden log --summary --since 1h"))
        .expect("README shows the journal summary");
    let shown: String = shown
        .lines()
        .skip_while(|l| !l.starts_with("$ fwharden log --summary"))
        .skip(1)
        .take_while(|l| !l.starts_with('$'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(shown, text, "README's summary");

    // Each packet, filtered: by port, by source prefix, by rule line.
    let by_port = logged(&host, profiles.path(), dir, &["--port", "2424"]);
    assert_eq!(by_port.len(), 3, "{by_port:?}");
    for e in &by_port {
        assert_eq!(e["src"], SCANNER, "{e}");
        assert_eq!(e["verdict"], "drop", "{e}");
        assert_eq!(e["line"], "", "{e}");
        assert_eq!(e["iface"], "eth0", "{e}");
        assert_eq!(e["rule"], "defaults: log drops (policy drop)", "{e}");
    }
    let v6 = logged(&host, profiles.path(), dir, &["--from", "2001:db8::/32"]);
    assert_eq!(v6.len(), 2, "{v6:?}");
    assert_eq!(v6[0]["src"], V6);
    assert_eq!(v6[0]["line"], "journal.toml:6");
    let udp = stdout(&host.expect_in(
        profiles.path(),
        0,
        &["log", "--since", "1h", "--journal-dir", dir, "--rule", "14"],
    ));
    assert_eq!(udp.lines().count(), 1, "{udp}");
    assert!(
        udp.contains(&format!(
            "drop   {SCANNER} -> 198.18.0.1 udp/2525 iface=eth0 journal.toml:14 deny 2525/udp"
        )),
        "{udp}"
    );

    // Following: what the journal had, then what arrives, until --count.
    let mut follow = host.fw();
    follow
        .args(["--profile-dir", profiles.path().to_str().unwrap()])
        .args([
            "--json",
            "log",
            "--follow",
            "--since",
            "1h",
            "--journal-dir",
            dir,
            "--port",
            "2626",
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = Killed(follow.spawn().unwrap());
    let (tx, rx) = mpsc::channel();
    let out = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    journald.kernel(&tcp4("fwharden drop: ", SCANNER, 2626));
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the first packet to 2626 within 60 s");
    assert!(first.contains("\"port\":2626"), "{first}");
    // Written once the first is printed: read by following.
    journald.kernel(&tcp4("fwharden drop: ", FLOODER, 2626));
    let second = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the second packet to 2626 within 60 s");
    assert!(
        second.contains(&format!("\"src\":\"{FLOODER}\"")),
        "{second}"
    );
    assert!(
        wait_until(Duration::from_secs(60), || child
            .0
            .try_wait()
            .unwrap()
            .is_some_and(|s| s.success())),
        "--count 2 ends it"
    );

    // A directory holding no journal: said, exit 1.
    let empty = tempfile::tempdir().unwrap();
    let out = host.expect_in(
        profiles.path(),
        1,
        &[
            "log",
            "--since",
            "1h",
            "--journal-dir",
            empty.path().to_str().unwrap(),
        ],
    );
    assert!(
        stderr(&out).contains("no journal files in it"),
        "{}",
        stderr(&out)
    );
    // The machine's own journal, when it has none (no journald here).
    let system = ["/run/log/journal", "/var/log/journal"]
        .iter()
        .any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()));
    if !system {
        let out = host.expect_in(profiles.path(), 1, &["log", "--since", "1h"]);
        assert!(
            stderr(&out).contains("no journal on this host"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("nflog_group"), "{}", stderr(&out));
    }
}
