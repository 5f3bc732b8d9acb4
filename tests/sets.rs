//! Sets of any shape: random address lists (hosts, prefixes, overlaps,
//! adjacent hosts that form no prefix, both families, the first and last
//! address of each family) go from a profile through the compiler into the
//! kernel, inside throwaway namespaces. For every list:
//! - the netlink apply succeeds and reads back as the model;
//! - `nft -f` of `show` loads a table that lists exactly as ours;
//! - the kernel's own lookup (`nft get element`), the model and the
//!   evaluator agree with a brute-force answer on every edge address:
//!   the first and last address of each item and the ones just outside.

mod common;

use std::net::IpAddr;
use std::process::Stdio;

use common::*;
use fwharden::netns::Netns;
use fwharden::profile::{load, SearchPath};
use fwharden::ruleset::eval::{evaluate, Packet};
use fwharden::ruleset::*;
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// An item of a group as a closed range of addresses, with its family width.
#[derive(Debug, Clone)]
struct Item {
    net: IpNet,
}

impl Item {
    fn range(&self) -> (u128, u128) {
        match self.net {
            IpNet::V4(n) => (
                u32::from(n.network()).into(),
                u32::from(n.broadcast()).into(),
            ),
            IpNet::V6(n) => (n.network().into(), n.broadcast().into()),
        }
    }

    fn v6(&self) -> bool {
        matches!(self.net, IpNet::V6(_))
    }
}

fn addr(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(v.into())
    } else {
        IpAddr::V4((v as u32).into())
    }
}

/// Items clustered around a few anchors, so that lists hold adjacent
/// hosts, touching and overlapping prefixes, and the ends of each family.
fn item() -> impl Strategy<Value = Item> {
    let v4_anchors = prop::sample::select(vec![0u128, 0xc000_0200, 0x0a00_0000, 0xffff_ff00]);
    let v6_anchors = prop::sample::select(vec![0u128, 0x2001_0db8_u128 << 96, u128::MAX - 0xff]);
    let v4 = (
        v4_anchors,
        0u128..256,
        prop_oneof![4 => Just(32u8), 2 => 24u8..32, 1 => 1u8..24],
    )
        .prop_map(|(anchor, offset, len)| {
            let a = std::net::Ipv4Addr::from((anchor + offset) as u32);
            ipnet::Ipv4Net::new(a, len).unwrap().trunc().into()
        });
    let v6 = (
        v6_anchors,
        0u128..256,
        prop_oneof![4 => Just(128u8), 2 => 120u8..128, 1 => 1u8..120],
    )
        .prop_map(|(anchor, offset, len)| {
            let a = std::net::Ipv6Addr::from(anchor + offset);
            ipnet::Ipv6Net::new(a, len).unwrap().trunc().into()
        });
    prop_oneof![3 => v4, 2 => v6].prop_map(|net| Item { net })
}

/// Items, then neighbours of some of them: the host right after an item
/// (it touches the item and rarely merges with it into a prefix), and the
/// ends of each family. These are the shapes that need an end and a start
/// element at one key, or an open interval.
fn list() -> impl Strategy<Value = Vec<Item>> {
    (
        prop::collection::vec(item(), 1..24),
        prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        any::<[bool; 4]>(),
    )
        .prop_map(|(mut items, neighbours, ends)| {
            for pick in neighbours {
                let it = pick.get(&items).clone();
                let (_, last) = it.range();
                let max = if it.v6() { u128::MAX } else { u32::MAX.into() };
                if last < max {
                    items.push(Item {
                        net: IpNet::from(addr(last + 1, it.v6())),
                    });
                }
            }
            let extremes = [
                "0.0.0.0/32",
                "255.255.255.255/32",
                "::/128",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            ];
            for (take, net) in ends.iter().zip(extremes) {
                if *take {
                    items.push(Item {
                        net: net.parse().unwrap(),
                    });
                }
            }
            items
        })
}

/// The first and last address of each item and those just outside it.
fn edges(items: &[Item]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for it in items {
        let (first, last) = it.range();
        let max = if it.v6() { u128::MAX } else { u32::MAX.into() };
        out.push(addr(first, it.v6()));
        out.push(addr(last, it.v6()));
        if let Some(before) = first.checked_sub(1) {
            out.push(addr(before, it.v6()));
        }
        if last < max {
            out.push(addr(last + 1, it.v6()));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn profile_text(items: &[Item]) -> String {
    let members: Vec<String> = items.iter().map(|i| format!("\"{}\"", i.net)).collect();
    format!(
        "description = \"random set\"\n[groups]\ng = [{}]\n\n[[rule]]\nallow = \"ssh\"\nfrom = \"g\"\n",
        members.join(", ")
    )
}

fn compile(items: &[Item], dir: &std::path::Path) -> Ruleset {
    let path = dir.join("random.toml");
    std::fs::write(&path, profile_text(items)).unwrap();
    let loaded = load(path.to_str().unwrap(), &SearchPath::only(vec![]));
    let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
    let profile = loaded
        .profile
        .unwrap_or_else(|| panic!("the profile is valid: {errors:?}"));
    fwharden::compile::compile(&profile)
}

fn list_table(ns: &Netns) -> String {
    stdout(
        &ns.run(&["nft", "list", "table", "inet", "fwharden"])
            .unwrap(),
    )
}

/// Which of `addrs` the kernel finds in set `set`, asking its own lookup
/// (`nft get element`), one query per address in one `nft -i` session. A
/// query for an address the set does not hold fails, and nft echoes the
/// failed command on stderr: those are the misses.
fn kernel_members(ns: &Netns, set: &str, addrs: &[IpAddr]) -> Vec<bool> {
    use std::io::Write;
    ns.verify().unwrap();
    let script: String = addrs
        .iter()
        .map(|a| format!("get element inet fwharden {set} {{ {a} }}\n"))
        .collect();
    let mut child = ns
        .command("nft")
        .arg("-i")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    let missed: Vec<String> = err
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("get element inet fwharden {set} {{ ")))
        .filter_map(|l| l.strip_suffix(" }"))
        .map(str::to_string)
        .collect();
    let found: Vec<bool> = addrs
        .iter()
        .map(|a| !missed.contains(&a.to_string()))
        .collect();
    let hits = stdout(&out).matches("table inet fwharden").count();
    assert_eq!(
        hits,
        found.iter().filter(|f| **f).count(),
        "every query either printed its element or failed: {err}"
    );
    found
}

fn check_list(ours: &Netns, theirs: &Netns, items: &[Item]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let r = compile(items, dir.path());

    ours.run_in(|| fwharden::nft::apply(&r))
        .unwrap()
        .map_err(|e| TestCaseError::fail(format!("apply failed: {e}")))?;
    let back = ours.run_in(fwharden::nft::read_table).unwrap().unwrap();
    prop_assert_eq!(back.as_ref(), Some(&r), "read-back differs from the model");

    // What nft itself loads from `show` lists exactly as what we loaded.
    let text = dir.path().join("show.nft");
    std::fs::write(&text, fwharden::render::nft_text(&r)).unwrap();
    let _ = theirs.run(&["nft", "delete", "table", "inet", "fwharden"]);
    theirs
        .run(&["nft", "-f", text.to_str().unwrap()])
        .map_err(|e| TestCaseError::fail(format!("nft -f of show failed: {e}")))?;
    prop_assert_eq!(list_table(ours), list_table(theirs));

    let all = edges(items);
    for family in [Family::Ipv4, Family::Ipv6] {
        let addrs: Vec<IpAddr> = all
            .iter()
            .copied()
            .filter(|a| a.is_ipv6() == (family == Family::Ipv6))
            .collect();
        if addrs.is_empty() {
            continue;
        }
        let set = format!("g_{}", family.suffix());
        let kernel = kernel_members(ours, &set, &addrs);
        for (a, in_kernel) in addrs.iter().zip(kernel) {
            let truth = items.iter().any(|i| i.net.contains(a));
            let in_model = matches!(
                r.set(&set).map(|s| &s.kind),
                Some(SetKind::Prefixes(nets)) if nets.iter().any(|n| n.contains(a))
            );
            let packet = Packet {
                source: *a,
                protocol: Protocol::Tcp,
                dport: 22,
                interface: Some("eth0".into()),
                state: CtState::New,
            };
            let evaluated = evaluate(&r, Hook::Input, &packet).accepted();
            prop_assert_eq!(in_kernel, truth, "kernel lookup of {} in {}", a, set);
            prop_assert_eq!(in_model, truth, "model membership of {}", a);
            prop_assert_eq!(evaluated, truth, "evaluator's verdict for {}", a);
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs root"]
fn random_address_lists_load_read_back_and_match_brute_force() {
    needs_root("random_address_lists_load_read_back_and_match_brute_force");
    let ours = Netns::create("setsours").unwrap();
    let theirs = Netns::create("setstext").unwrap();
    let cases = std::env::var("FWHARDEN_SET_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&list(), |items| check_list(&ours, &theirs, &items))
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn two_adjacent_hosts_apply_through_the_cli_and_roll_back() {
    needs_root("two_adjacent_hosts_apply_through_the_cli_and_roll_back");
    let host = Host::new("setcli");
    let profiles = host.dir().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let write = |groups: &str| {
        std::fs::write(
            profiles.join("pair.toml"),
            format!("description = \"pair\"\n[groups]\nadmin = {groups}\n\n[[rule]]\nallow = \"ssh\"\nfrom = \"admin\"\n"),
        )
        .unwrap();
    };
    let dir = ["--profile-dir", profiles.to_str().unwrap()];
    write(r#"["192.0.2.5", "192.0.2.6"]"#);
    host.expect(
        0,
        &[&dir[..], &["apply", "pair", "--auto-confirm"]].concat(),
    );
    let first = host.table_text();
    assert!(
        first.contains("192.0.2.5, 192.0.2.6"),
        "both hosts, as nft lists them:\n{first}"
    );
    write(r#"["192.0.2.5", "192.0.2.6", "192.0.2.7", "2001:db8::1", "2001:db8::2"]"#);
    host.expect(
        0,
        &[&dir[..], &["apply", "pair", "--timeout", "30"]].concat(),
    );
    let second = host.table_text();
    assert!(second.contains("192.0.2.6/31"), "{second}");
    host.expect(0, &["rollback"]);
    assert_eq!(host.table_text(), first, "rollback restores the exact set");
}

/// n hosts 10.x.y.z, every other address: none touching.
fn spaced_hosts(n: u32, offset: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| IpNet::from(IpAddr::V4((0x0a00_0000 + offset + 2 * i).into())))
        .collect()
}

fn with_big_set(nets: Vec<IpNet>) -> Ruleset {
    let dir = tempfile::tempdir().unwrap();
    let mut r = compile(
        &[Item {
            net: "192.0.2.1/32".parse().unwrap(),
        }],
        dir.path(),
    );
    r.sets[0].kind = SetKind::Prefixes(nets);
    r
}

#[test]
#[ignore = "needs root"]
fn a_big_set_is_verified_by_generation_and_sampled_lookups() {
    needs_root("a_big_set_is_verified_by_generation_and_sampled_lookups");
    let n = fwharden::nft::FULL_READ_MAX as u32 * 3;
    let r = with_big_set(spaced_hosts(n, 0));
    let ns = Netns::create("setverify").unwrap();
    let check = |applied: &Ruleset, expected: &Ruleset, exclusive: bool| {
        ns.run_in(|| {
            let mut report = fwharden::nft::apply(applied).unwrap();
            report.exclusive &= exclusive;
            fwharden::nft::verify(expected, &report).unwrap()
        })
        .unwrap()
    };
    // Alone in the namespace: the big set is proven by sample, the rest read.
    match check(&r, &r, true) {
        fwharden::nft::Check::Holds { sampled, .. } => assert_eq!(sampled, ["g_v4"]),
        other => panic!("{other:?}"),
    }
    // Without the generation proof everything is read, element by element.
    match check(&r, &r, false) {
        fwharden::nft::Check::Holds { sampled, .. } => assert!(sampled.is_empty()),
        other => panic!("{other:?}"),
    }
    // The kernel holding other elements than expected (the first prefix is
    // always sampled) is caught by the lookups.
    let shifted = with_big_set(spaced_hosts(n, 1));
    match check(&shifted, &r, true) {
        fwharden::nft::Check::Differs {
            lookup: Some(why), ..
        } => assert!(why.contains("g_v4"), "{why}"),
        other => panic!("{other:?}"),
    }
    match check(&shifted, &r, false) {
        fwharden::nft::Check::Differs { lookup: None, .. } => {}
        other => panic!("{other:?}"),
    }
}

/// Membership of every edge address of `items` in the kernel's sets of
/// `r` matches a brute-force answer over `items`.
fn kernel_agrees(
    ns: &Netns,
    r: &Ruleset,
    items: &[Item],
    edges_of: &[Item],
) -> Result<(), TestCaseError> {
    for family in [Family::Ipv4, Family::Ipv6] {
        let addrs: Vec<IpAddr> = edges(edges_of)
            .into_iter()
            .filter(|a| a.is_ipv6() == (family == Family::Ipv6))
            .collect();
        let set = format!("g_{}", family.suffix());
        if addrs.is_empty() || r.set(&set).is_none() {
            continue;
        }
        for (a, found) in addrs.iter().zip(kernel_members(ns, &set, &addrs)) {
            let truth = items.iter().any(|i| i.net.contains(a));
            prop_assert_eq!(found, truth, "kernel lookup of {} in {}", a, set);
        }
    }
    Ok(())
}

fn check_delta(ns: &Netns, old: &[Item], new: &[Item]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (compile(old, dir.path()), compile(new, dir.path()));
    if !a.differs_only_in_elements(&b) {
        // A family appeared or vanished: a full replacement, tested above.
        return Ok(());
    }
    let result = ns
        .run_in(|| {
            let first = fwharden::nft::apply(&a)?;
            let report = fwharden::nft::apply_delta(&a, &b, first.generation)?;
            let check = fwharden::nft::verify(&b, &report)?;
            Ok::<_, fwharden::nft::NftError>((report, check, fwharden::nft::read_table()?))
        })
        .unwrap();
    let (report, check, back) =
        result.map_err(|e| TestCaseError::fail(format!("delta failed: {e}")))?;
    prop_assert!(report.exclusive);
    prop_assert!(
        matches!(check, fwharden::nft::Check::Holds { .. }),
        "{:?}",
        check
    );
    prop_assert_eq!(back.as_ref(), Some(&b), "read-back after the delta");
    let all: Vec<Item> = old.iter().chain(new).cloned().collect();
    kernel_agrees(ns, &b, new, &all)
}

/// A list and a changed copy of it: some items dropped, some added, some
/// hosts next to kept ones.
fn list_and_change() -> impl Strategy<Value = (Vec<Item>, Vec<Item>)> {
    (list(), prop::collection::vec(any::<bool>(), 24..48), list()).prop_map(|(old, keep, extra)| {
        let mut new: Vec<Item> = old
            .iter()
            .zip(keep.iter().cycle())
            .filter(|(_, k)| **k)
            .map(|(i, _)| i.clone())
            .collect();
        new.extend(extra.into_iter().take(6));
        if new.is_empty() {
            new.push(old[0].clone());
        }
        (old, new)
    })
}

#[test]
#[ignore = "needs root"]
fn element_deltas_reach_exactly_the_new_set() {
    needs_root("element_deltas_reach_exactly_the_new_set");
    let ns = Netns::create("setdelta").unwrap();
    let cases = std::env::var("FWHARDEN_SET_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&list_and_change(), |(old, new)| {
            check_delta(&ns, &old, &new)
        })
        .unwrap();
}

/// The table's handle: a replacement makes a new table, a delta keeps it.
fn table_handle(host: &Host) -> String {
    let text = host.sh(&["nft", "-a", "list", "table", "inet", "fwharden"]);
    let line = text.lines().next().unwrap_or_default();
    line.split("# handle")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A profile of one group read from `hosts.txt`, allowed to HTTPS.
const LIST_PROFILE: &str = "description = \"list\"\n[groups]\nbig = { file = \"hosts.txt\" }\n\n[[rule]]\nallow = \"https\"\nfrom = \"big\"\n";

/// A test host with a profile directory of its own: profile `list`
/// ([`LIST_PROFILE`] and `extra`) beside its `hosts.txt`.
struct ListHost {
    host: Host,
    profiles: std::path::PathBuf,
}

impl ListHost {
    fn new(tag: &str, extra: &str) -> ListHost {
        let host = Host::new(tag);
        let profiles = host.dir().join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(profiles.join("list.toml"), format!("{LIST_PROFILE}{extra}")).unwrap();
        ListHost { host, profiles }
    }

    fn write_list(&self, text: &str) {
        std::fs::write(self.profiles.join("hosts.txt"), text).unwrap();
    }

    fn write_hosts(&self, hosts: &[IpNet]) {
        let text: String = hosts.iter().map(|h| format!("{}\n", h.addr())).collect();
        self.write_list(&text);
    }

    /// fwharden ARGS with this host's profile directory; exits with `code`.
    fn fw(&self, code: i32, args: &[&str]) -> std::process::Output {
        self.host.expect_in(&self.profiles, code, args)
    }
}

#[test]
#[ignore = "needs root"]
fn a_changed_list_goes_in_as_a_delta_and_rolls_back_exactly() {
    needs_root("a_changed_list_goes_in_as_a_delta_and_rolls_back_exactly");
    let list = ListHost::new("setdelcli", "\n[[rule]]\nallow = \"ssh\"\n");
    let host = &list.host;
    let hosts = spaced_hosts(300, 0);
    list.write_hosts(&hosts);
    list.fw(0, &["apply", "list", "--auto-confirm"]);
    let (first, handle) = (host.table_text(), table_handle(host));

    // Ten hosts gone, ten new ones, and one next to a kept host (they merge
    // into a /31).
    let mut changed: Vec<IpNet> = hosts[10..].to_vec();
    changed.extend(spaced_hosts(10, 1_000));
    changed.push("10.0.0.21/32".parse().unwrap());
    list.write_hosts(&changed);
    list.fw(0, &["apply", "list", "--timeout", "30"]);
    let second = host.table_text();
    assert_eq!(
        table_handle(host),
        handle,
        "an element delta, not a new table"
    );
    assert!(
        !second.contains("10.0.0.0,") && second.contains("10.0.3.232"),
        "{second}"
    );
    assert!(second.contains("10.0.0.20/31"), "{second}");

    host.expect(0, &["rollback"]);
    assert_eq!(
        host.table_text(),
        first,
        "rollback restores the exact previous set"
    );
}

#[test]
#[ignore = "needs root"]
fn a_malformed_list_line_is_located_and_changes_nothing() {
    needs_root("a_malformed_list_line_is_located_and_changes_nothing");
    let list = ListHost::new("setbadline", "");
    list.write_list("192.0.2.1\n192.0.2.2\n");
    list.fw(0, &["apply", "list", "--auto-confirm"]);
    let before = list.host.table_text();
    list.write_list("192.0.2.1\n# fine\n  10.0.0.1/8\n");
    let out = list.fw(3, &["apply", "list", "--auto-confirm"]);
    let err = stderr(&out);
    assert!(err.contains("hosts.txt:3:3"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(list.host.table_text(), before);
}

#[test]
#[ignore = "needs root"]
fn status_checks_a_big_set_by_sample_and_lists_it_with_verify() {
    needs_root("status_checks_a_big_set_by_sample_and_lists_it_with_verify");
    let list = ListHost::new("setstatus", "");
    let host = &list.host;
    list.write_hosts(&spaced_hosts(fwharden::nft::FULL_READ_MAX as u32 + 100, 0));
    list.fw(0, &["apply", "list", "--auto-confirm", "--no-probe"]);
    let status = |args: &[&str]| -> serde_json::Value {
        let out = host.expect(0, &[&["--json", "status"][..], args].concat());
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let sampled = status(&[]);
    assert_eq!(sampled["kernel"], "confirmed", "{sampled}");
    assert!(
        sampled["elements"].as_str().unwrap().contains("big_v4"),
        "{sampled}"
    );
    let full = status(&["--verify"]);
    assert_eq!(full["kernel"], "confirmed", "{full}");
    assert_eq!(full["elements"], "every element read");

    // A hand edit of the set's first prefix is drift, both ways.
    host.sh(&[
        "nft",
        "delete",
        "element",
        "inet",
        "fwharden",
        "big_v4",
        "{ 10.0.0.0 }",
    ]);
    assert_eq!(status(&[])["kernel"], "drift");
    assert_eq!(status(&["--verify"])["kernel"], "drift");
}

#[test]
#[ignore = "needs root"]
fn a_million_prefixes_apply_and_verify() {
    needs_root("a_million_prefixes_apply_and_verify");
    let list = ListHost::new("setmillion", "");
    let host = &list.host;
    list.write_hosts(&spaced_hosts(1_000_000, 0));
    let out = list.fw(0, &["--json", "apply", "list", "--auto-confirm"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["state"], "confirmed", "{v}");
    assert_eq!(v["probed"], true, "{v}");
    // The kernel's own lookup finds the first, a middle and the last host,
    // and not the addresses between them. (Never `nft list` or `nft get
    // element` here: nft lists the whole set into its cache first, and
    // listing a million elements costs the kernel O(n²), minutes.)
    for (addr, held) in [
        ("10.0.0.0", true),
        ("10.0.0.1", false),
        ("10.15.66.64", true),
        ("10.30.132.126", true),
        ("10.30.132.127", false),
    ] {
        let found = host
            .ns
            .run_in(|| fwharden::nft::set_holds("big_v4", addr.parse().unwrap()))
            .unwrap()
            .unwrap();
        assert_eq!(found, held, "{addr}");
    }
    let status = host.expect(0, &["--json", "status"]);
    let s: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(s["kernel"], "confirmed", "{s}");
}

/// A changed prefix the spread sample does not reach is still caught when
/// the commit names it in its focus (an element delta's changed prefixes):
/// its edges are looked up, every one of them.
#[test]
#[ignore = "needs root"]
fn a_changed_prefix_outside_the_sample_is_looked_up_by_focus() {
    needs_root("a_changed_prefix_outside_the_sample_is_looked_up_by_focus");
    let n = fwharden::nft::FULL_READ_MAX as u32 * 3;
    let want = with_big_set(spaced_hosts(n, 0));
    // The kernel lacks one prefix near the start, where no sampled prefix
    // (nor its neighbours) lies.
    let mut held = want.clone();
    let SetKind::Prefixes(nets) = &mut held.sets[0].kind else {
        panic!("a prefix set")
    };
    let missing = nets.remove(5);
    let ns = Netns::create("setfocus").unwrap();
    let (plain, focused) = ns
        .run_in(|| {
            let mut report = fwharden::nft::apply(&held).unwrap();
            let plain = fwharden::nft::verify(&want, &report).unwrap();
            report.focus = [(want.sets[0].name.clone(), vec![missing])].into();
            (plain, fwharden::nft::verify(&want, &report).unwrap())
        })
        .unwrap();
    assert!(
        matches!(plain, fwharden::nft::Check::Holds { .. }),
        "the spread sample alone reached the missing prefix: {plain:?}"
    );
    match focused {
        fwharden::nft::Check::Differs {
            lookup: Some(why), ..
        } => assert!(why.contains(&missing.addr().to_string()), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// A list file over a megabyte is parsed once and remembered while its
/// bytes stay the same (the memo of parsed lists under the state
/// directory): a changed byte, a malformed line or a damaged entry is
/// never answered from the memo.
#[test]
#[ignore = "needs root"]
fn a_big_list_is_remembered_and_any_change_is_read_afresh() {
    needs_root("a_big_list_is_remembered_and_any_change_is_read_afresh");
    let list = ListHost::new("setmemo", "");
    let host = &list.host;
    let hosts = spaced_hosts(120_000, 0);
    list.write_hosts(&hosts);
    let text = std::fs::read_to_string(list.profiles.join("hosts.txt")).unwrap();
    assert!(
        text.len() > fwharden::profile::memo::WORTH_ABOVE,
        "big enough"
    );
    let memo = host.state_dir().join("parsed");
    let entries = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&memo)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let holds = |addr: &str| {
        host.ns
            .run_in(|| fwharden::nft::set_holds("big_v4", addr.parse().unwrap()))
            .unwrap()
            .unwrap()
    };
    list.fw(
        0,
        &["apply", "list", "--auto-confirm", "--no-probe", "--dry-run"],
    );
    assert!(entries().is_empty(), "a dry run writes no memo");
    list.fw(0, &["apply", "list", "--auto-confirm", "--no-probe"]);
    let first = entries();
    assert_eq!(first.len(), 1, "{first:?}");

    // One host changed: a byte differs, so the list is read again.
    let last = hosts.last().unwrap().addr().to_string();
    let moved = "10.200.0.1";
    list.write_list(&text.replace(&format!("\n{last}\n"), &format!("\n{moved}\n")));
    list.fw(0, &["apply", "list", "--auto-confirm", "--no-probe"]);
    assert!(holds(moved) && !holds(&last));
    assert_eq!(entries().len(), 2);

    // A malformed line is reported where it is, memo or not.
    list.write_list(&text.replacen("10.0.0.2\n", "10.0.0.2/33\n", 1));
    let out = list.fw(3, &["apply", "list", "--auto-confirm", "--no-probe"]);
    assert!(stderr(&out).contains("hosts.txt:2:"), "{}", stderr(&out));
    assert!(holds(moved), "nothing was changed");

    // Back to the first list, whose entry is now damaged: a miss, read
    // afresh, and the kernel holds the first list again.
    let mut bytes = std::fs::read(&first[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&first[0], &bytes).unwrap();
    list.write_list(&text);
    list.fw(0, &["apply", "list", "--auto-confirm", "--no-probe"]);
    assert!(holds(&last) && !holds(moved));
    assert!(holds("10.0.0.2") && holds("10.0.0.0") && !holds("10.0.0.1"));
}
