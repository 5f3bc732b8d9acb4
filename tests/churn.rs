//! Applies and bans that coexist (issue 24): a 100,000-prefix profile is
//! applied again and again while real `fwharden ban` processes arrive at
//! a target of 100 a second, both for 30 s, inside a throwaway namespace.
//! Every apply must succeed (exit 0, nothing rolled back), every ban must
//! succeed (exit 0: fail2ban would otherwise have lost it), and every
//! banned address must be in its set at the end, asked of the kernel's own
//! lookup (`nft get element`), not by listing.
//!
//! The rate is what the load generator aims at, not something asserted: a
//! busy CI machine reaches less, and the test says what it reached.
//!
//! Writers that do not wait on the ban gate (CrowdSec's bouncer, `nft`):
//! a read-back after one of them added a ban still proves a big set
//! without listing it, while one that wrote to table `inet fwharden`
//! itself is still caught.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use fwharden::nft::Check;

/// How long both loops run.
const RUN: Duration = Duration::from_secs(30);
/// Bans a second the loop aims at, and the most processes it keeps in
/// flight (bans that wait on an apply pile up, then go at once).
const RATE: u32 = 100;
const SPAWNERS: u32 = 32;

/// Two profiles over the same group of `hosts` addresses: `churn_b` also opens
/// HTTP, so going from one to the other replaces the whole table (not an
/// element delta) every time.
fn profiles(dir: &Path, hosts: u32) -> [String; 2] {
    // Hosts with a gap after each: none merge, one interval each.
    let list: String = (0..hosts)
        .map(|i| format!("{}\n", Ipv4Addr::from(0x6440_0000 + 2 * i)))
        .collect();
    std::fs::write(dir.join("blocked.txt"), list).unwrap();
    let common = "[groups]\nblocked = { file = \"blocked.txt\" }\n\
                  [bans]\nenabled = true\ntimeout = \"1h\"\n\
                  [[rule]]\nallow = \"ssh\"\n\
                  [[rule]]\ndeny = \"all\"\nfrom = \"blocked\"\n";
    std::fs::write(dir.join("churn_a.toml"), common).unwrap();
    std::fs::write(
        dir.join("churn_b.toml"),
        format!("{common}[[rule]]\nallow = \"http\"\n"),
    )
    .unwrap();
    ["churn_a", "churn_b"].map(|p| dir.join(format!("{p}.toml")).to_string_lossy().into_owned())
}

/// The `i`th address the ban loop bans (172.16.0.0/12, in no group).
fn banned(i: usize) -> String {
    Ipv4Addr::from(0xac10_0000 + i as u32 + 1).to_string()
}

/// The addresses of `addrs` that the kernel's own lookup does not find
/// in their ban set (one GETSETELEM each, from a thread inside the host's
/// namespace: `nft get element` would list the 100,000-prefix set first).
fn missing(host: &Host, addrs: &[String]) -> Vec<String> {
    host.ns
        .run_in(|| {
            addrs
                .iter()
                .filter(|a| !fwharden::nft::banned(a.parse().unwrap()).expect("a lookup"))
                .cloned()
                .collect()
        })
        .expect("enter the host's namespace")
}

#[test]
#[ignore = "needs root"]
fn big_applies_and_a_hundred_bans_a_second_both_go_through() {
    needs_root("big_applies_and_a_hundred_bans_a_second_both_go_through");
    let host = Host::new("churn");
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = profiles(dir.path(), 100_000);
    host.expect(0, &["apply", &a, "--auto-confirm", "--no-probe"]);

    let issued = AtomicUsize::new(0);
    let failed_bans = Mutex::new(Vec::new());
    let mut failed_applies = Vec::new();
    let mut applies = 0;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..SPAWNERS {
            s.spawn(|| {
                // Each spawner takes the next ban when its turn on the
                // shared schedule comes (at once when behind it).
                while start.elapsed() < RUN {
                    let i = issued.fetch_add(1, Ordering::SeqCst);
                    let due = start + Duration::from_secs(1) * i as u32 / RATE;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let addr = banned(i);
                    let out = host.run(&["ban", &addr, "--timeout", "1h"]);
                    if !out.status.success() {
                        failed_bans.lock().unwrap().push(format!(
                            "ban {addr}: exit {:?}: {}",
                            out.status.code(),
                            stderr(&out).trim()
                        ));
                    }
                }
            });
        }
        while start.elapsed() < RUN {
            let profile = if applies % 2 == 0 { &b } else { &a };
            let out = host.run(&["apply", profile, "--auto-confirm", "--no-probe"]);
            applies += 1;
            if !out.status.success() {
                failed_applies.push(format!(
                    "apply {applies}: exit {:?}: {}",
                    out.status.code(),
                    stderr(&out).trim()
                ));
            }
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let bans = issued.load(Ordering::SeqCst);
    eprintln!(
        "{applies} applies of 100,000 prefixes and {bans} bans ({:.0} a second) in {elapsed:.1} s",
        bans as f64 / elapsed
    );

    assert!(applies >= 2, "the apply loop ran once: nothing was tested");
    assert_eq!(failed_applies, Vec::<String>::new(), "applies failed");
    let failed_bans = failed_bans.into_inner().unwrap();
    assert_eq!(failed_bans, Vec::<String>::new(), "bans failed (lost)");
    assert!(
        !host.state_dir().join("rollback-attempts.json").exists(),
        "an apply was rolled back"
    );
    let addrs: Vec<String> = (0..bans).map(banned).collect();
    assert_eq!(missing(&host, &addrs), Vec::<String>::new(), "bans lost");
    host.wait_quiet();
}

/// The model of `profile`, as `show --json` prints it.
fn model(host: &Host, profile: &str) -> fwharden::ruleset::Ruleset {
    serde_json::from_slice(&host.expect(0, &["--json", "show", profile]).stdout).unwrap()
}

/// Applies `r` in the host's namespace (in process), lets `nft` run
/// `foreign` there (a writer that knows nothing of fwharden), then reads
/// back as an apply does, from the same thread.
fn apply_foreign_verify(host: &Host, r: &fwharden::ruleset::Ruleset, foreign: &str) -> Check {
    host.ns
        .run_in(|| {
            let report = fwharden::nft::apply(r).expect("apply");
            assert!(report.exclusive, "nobody else commits in this namespace");
            let out = host.ns.command("nft").arg(foreign).output().unwrap();
            assert!(out.status.success(), "nft {foreign}: {}", stderr(&out));
            fwharden::nft::verify(r, &report).expect("read back")
        })
        .expect("enter the host's namespace")
}

#[test]
#[ignore = "needs root"]
fn a_foreign_ban_does_not_force_a_full_read_a_foreign_write_to_our_table_is_caught() {
    needs_root("a_foreign_ban_does_not_force_a_full_read_a_foreign_write_to_our_table_is_caught");
    let host = Host::new("churnmon");
    let dir = tempfile::tempdir().unwrap();
    let [a, _] = profiles(dir.path(), 10_000);
    let r = model(&host, &a);
    let big: Vec<String> = r
        .sets
        .iter()
        .filter(|s| matches!(&s.kind, fwharden::ruleset::SetKind::Prefixes(n) if n.len() > fwharden::nft::FULL_READ_MAX))
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(big.len(), 1, "one big set: {big:?}");

    // A ban by another program between the commit and the read-back: the
    // big set is still proven by the generation and a sample.
    let ban = "add element inet fwharden-bans ban_v4 { 198.51.100.7 timeout 1h }";
    match apply_foreign_verify(&host, &r, ban) {
        Check::Holds { sampled, .. } => assert_eq!(sampled, big, "the big set was listed"),
        other => panic!("a foreign ban made the read-back fail: {other:?}"),
    }

    // The same moment, an element added to our own big set: not a ban, so
    // the set is read in full, and the extra element is found.
    let edit = format!("add element inet fwharden {} {{ 203.0.113.9 }}", big[0]);
    assert!(
        matches!(
            apply_foreign_verify(&host, &r, &edit),
            Check::Differs { .. }
        ),
        "a write to table inet fwharden went unseen"
    );
    // And one transaction holding both a ban and such a write.
    let both = format!("{ban}; {edit}");
    assert!(
        matches!(
            apply_foreign_verify(&host, &r, &both),
            Check::Differs { .. }
        ),
        "a write to table inet fwharden after a ban went unseen"
    );
    host.wait_quiet();
}
