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

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// How long both loops run.
const RUN: Duration = Duration::from_secs(30);
/// Bans a second the loop aims at, and the most processes it keeps in
/// flight (bans that wait on an apply pile up, then go at once).
const RATE: u32 = 100;
const SPAWNERS: u32 = 32;

/// Two profiles over the same 100,000-prefix group: `churn_b` also opens
/// HTTP, so going from one to the other replaces the whole table (not an
/// element delta) every time.
fn profiles(dir: &Path) -> [String; 2] {
    // 100,000 hosts with a gap after each: none merge, 100,000 intervals.
    let list: String = (0..100_000u32)
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
fn big_applies_and_a_hundred_bans_a_second_both_go_through() {
    if !privileged("big_applies_and_a_hundred_bans_a_second_both_go_through") {
        return;
    }
    let host = Host::new("churn");
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = profiles(dir.path());
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
