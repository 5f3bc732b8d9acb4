//! The privileged harness: throwaway namespaces that load real rulesets and
//! are gone afterwards, panic included. Every test here changes netfilter
//! only inside namespaces it created.

mod common;

use std::panic;

use common::*;
use fwharden::netns::Netns;

fn exists(name: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
#[ignore = "needs root"]
fn vps_profile_loads_inside_a_namespace_and_reads_back() {
    needs_root("vps_profile_loads_inside_a_namespace_and_reads_back");
    let host_before = host_tables();
    let shown = shipped(&["show", "vps-profile"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vps.nft");
    std::fs::write(&file, &shown.stdout).unwrap();

    let ns = Netns::create("vps").unwrap();
    ns.run(&["nft", "-f", file.to_str().unwrap()]).unwrap();
    let listed = stdout(
        &ns.run(&["nft", "list", "table", "inet", "fwharden"])
            .unwrap(),
    );
    for needle in [
        "chain input",
        "policy drop;",
        "set wg-net_v4",
        "10.0.0.0/24",
        "iifname \"wg0\" ip saddr @wg-net_v4 tcp dport { 5432, 6379 }",
        "udp dport 51820",
        "comment \"vps-profile.toml:",
    ] {
        assert!(
            listed.contains(needle),
            "{needle:?} missing from:\n{listed}"
        );
    }
    // Loading the same text again replaces the table: still one table.
    ns.run(&["nft", "-f", file.to_str().unwrap()]).unwrap();
    let tables = stdout(&ns.run(&["nft", "list", "tables"]).unwrap());
    assert_eq!(tables.trim(), "table inet fwharden");
    assert_eq!(
        host_tables(),
        host_before,
        "the machine's own ruleset changed"
    );
}

#[test]
#[ignore = "needs root"]
fn namespaces_are_removed_on_drop_and_on_panic() {
    needs_root("namespaces_are_removed_on_drop_and_on_panic");
    let name = {
        let ns = Netns::create("drop").unwrap();
        assert!(exists(ns.name()));
        ns.name().to_string()
    };
    assert!(!exists(&name), "{name} survived its drop");

    let name = std::sync::Mutex::new(String::new());
    let result = panic::catch_unwind(|| {
        let ns = Netns::create("panic").unwrap();
        *name.lock().unwrap() = ns.name().to_string();
        panic!("a test failing inside");
    });
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    assert!(
        !name.is_empty() && !exists(&name),
        "{name} survived a panic"
    );
}

#[test]
#[ignore = "needs root"]
fn a_namespace_made_in_process_is_one_ip_knows_with_loopback_up() {
    needs_root("a_namespace_made_in_process_is_one_ip_knows_with_loopback_up");
    let ns = Netns::create("native").unwrap();
    let name = ns.name().to_string();
    assert!(exists(&name), "ip netns list does not show {name}");
    let lo = stdout(&ns.run(&["ip", "-o", "link", "show", "lo"]).unwrap());
    assert!(lo.contains(",UP"), "{lo}");
    ns.run(&["ping", "-c1", "-w5", "127.0.0.1"]).unwrap();
    drop(ns);
    assert!(!exists(&name), "{name} survived its drop");
    assert!(!std::path::Path::new("/run/netns").join(&name).exists());
}

#[test]
#[ignore = "needs root"]
fn linked_namespaces_reach_each_other_and_nothing_else() {
    needs_root("linked_namespaces_reach_each_other_and_nothing_else");
    // `-c1 -w5`: keep sending until one reply or 5 s, so the first echo
    // lost to neighbour discovery on a fresh link is not a failure.
    let a = Netns::create("a").unwrap();
    let b = Netns::create("b").unwrap();
    a.link(
        &b,
        &["10.201.0.1/24", "fd00:201::1/64"],
        &["10.201.0.2/24", "fd00:201::2/64"],
    )
    .unwrap();
    a.run(&["ping", "-c1", "-w5", "10.201.0.2"]).unwrap();
    a.run(&["ping", "-c1", "-w5", "fd00:201::2"]).unwrap();
    // A has no route anywhere else: only the veth and loopback exist.
    let routes = stdout(&a.run(&["ip", "route", "show"]).unwrap());
    assert!(!routes.contains("default"), "{routes}");
}

#[test]
#[ignore = "needs root"]
fn the_harness_refuses_a_namespace_it_does_not_own() {
    needs_root("the_harness_refuses_a_namespace_it_does_not_own");
    let ns = Netns::create("gone").unwrap();
    std::process::Command::new("ip")
        .args(["netns", "del", ns.name()])
        .output()
        .unwrap();
    // Its file is gone: nothing may run "inside" it, since `ip netns exec`
    // would fail or, worse, act on the wrong namespace.
    let err = ns.run(&["nft", "list", "ruleset"]).unwrap_err();
    assert!(err.to_string().contains("refusing to act"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn a_hand_written_table_loads_inside_and_reads_back() {
    needs_root("a_hand_written_table_loads_inside_and_reads_back");
    let host_before = host_tables();
    let ns = Netns::create("hand").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.nft");
    std::fs::write(
        &file,
        "table inet fwharden {\n\
         \tchain input {\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\ttcp dport 22 counter accept comment \"ssh\"\n\
         \t}\n\
         }\n",
    )
    .unwrap();
    ns.run(&["nft", "-f", file.to_str().unwrap()]).unwrap();
    let listed = stdout(
        &ns.run(&["nft", "list", "table", "inet", "fwharden"])
            .unwrap(),
    );
    assert!(
        listed.contains("tcp dport 22 counter packets 0 bytes 0 accept comment \"ssh\""),
        "{listed}"
    );
    assert_eq!(
        host_tables(),
        host_before,
        "the machine's own ruleset changed"
    );
}

#[test]
#[ignore = "needs root"]
fn run_in_enters_the_namespace_on_its_own_thread_only() {
    needs_root("run_in_enters_the_namespace_on_its_own_thread_only");
    let ino = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).map(|m| m.ino()).unwrap()
    };
    let host = ino("/proc/thread-self/ns/net");
    let ns = Netns::create("runin").unwrap();
    let ours = ino(&format!("/run/netns/{}", ns.name()));
    let inside = ns.run_in(|| ino("/proc/thread-self/ns/net")).unwrap();
    assert_eq!(inside, ours);
    assert_ne!(inside, host);
    // The calling thread never moved.
    assert_eq!(ino("/proc/thread-self/ns/net"), host);

    // A panic inside is the caller's panic, and the namespace still goes.
    let name = ns.name().to_string();
    let result = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        ns.run_in(|| panic!("failing inside run_in")).unwrap();
    }));
    assert!(result.is_err());
    drop(ns);
    assert!(!exists(&name), "{name} survived its drop");
}
