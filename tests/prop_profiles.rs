//! Property tests of the loader and compiler: random valid profiles are
//! accepted and their rulesets pass the real `nft -c`; random and mutated
//! bytes never make the loader panic, and every refusal is located.

mod common;

use std::fs;

use common::*;
use fwharden::profile::{load, SearchPath};
use fwharden::{render, ruleset};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn search(dir: &std::path::Path) -> SearchPath {
    SearchPath {
        dirs: vec![dir.to_path_buf()],
        builtin: true,
    }
}

fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u32>(), 8u8..=32).prop_map(|(a, len)| {
            let net = ipnet::Ipv4Net::new(a.into(), len).unwrap().trunc();
            net.to_string()
        }),
        (any::<u128>(), 16u8..=128).prop_map(|(a, len)| {
            let net = ipnet::Ipv6Net::new(a.into(), len).unwrap().trunc();
            net.to_string()
        }),
    ]
}

const SERVICES: &[&str] = &[
    "ssh",
    "http",
    "https",
    "dns",
    "wireguard",
    "redis",
    "postgres",
    "ntp",
];

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(SERVICES).prop_map(|s| format!("\"{s}\"")),
        (1u16..=65535).prop_map(|p| p.to_string()),
        (
            1u16..=60000,
            0u16..=500,
            prop::sample::select(&["tcp", "udp", "both"][..])
        )
            .prop_map(|(a, n, p)| format!("\"{a}-{}/{p}\"", a + n)),
    ]
}

/// A random valid profile: groups (referring only to earlier groups, so no
/// cycles), services, rules of every kind.
fn profile() -> impl Strategy<Value = String> {
    let groups = prop::collection::vec(prop::collection::vec(prefix(), 1..5), 1..4);
    let rules = prop::collection::vec(
        (
            0u8..3,                                 // action
            prop::collection::vec(target(), 1..4),  // targets
            prop::collection::vec(0usize..4, 0..3), // groups in from
            prop::option::of(prefix()),             // a literal source
            prop::option::of(prop::sample::select(&["wg0", "eth*", "ens3"][..])),
            prop::option::of((
                1u32..100,
                prop::sample::select(&["second", "minute", "hour"][..]),
                1u32..20,
            )),
            any::<bool>(), // log
            any::<bool>(), // "all"
        ),
        1..6,
    );
    (groups, rules, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(groups, rules, extends, output_drop, no_ping)| {
            let mut t = String::from("description = \"generated\"\n");
            if extends {
                t.push_str("extends = \"base\"\n");
            }
            t.push_str("[defaults]\n");
            if output_drop {
                t.push_str("output = \"drop\"\nforward = \"drop\"\n");
            }
            if no_ping {
                t.push_str("ping = false\nlog_drops = false\n");
            }
            t.push_str("[groups]\n");
            for (i, members) in groups.iter().enumerate() {
                let mut items: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
                if i > 0 {
                    items.push(format!("\"g{}\"", i - 1));
                }
                t.push_str(&format!("g{i} = [{}]\n", items.join(", ")));
            }
            for (action, targets, from, literal, iface, limit, log, all) in rules {
                let action = ["allow", "deny", "reject"][action as usize];
                t.push_str("[[rule]]\n");
                if all && action != "allow" {
                    t.push_str(&format!("{action} = \"all\"\n"));
                } else {
                    t.push_str(&format!("{action} = [{}]\n", targets.join(", ")));
                }
                let mut sources: Vec<String> = from
                    .iter()
                    .filter(|g| **g < groups.len())
                    .map(|g| format!("\"g{g}\""))
                    .collect();
                if let Some(l) = literal {
                    sources.push(format!("\"{l}\""));
                }
                if !sources.is_empty() {
                    t.push_str(&format!("from = [{}]\n", sources.join(", ")));
                }
                if let Some(i) = iface {
                    t.push_str(&format!("interface = \"{i}\"\n"));
                }
                if let (Some((n, unit, burst)), "allow") = (limit, action) {
                    t.push_str(&format!("limit = \"{n}/{unit}\"\nburst = {burst}\n"));
                }
                if log {
                    t.push_str("log = true\n");
                }
            }
            t
        },
    )
}

#[test]
fn random_valid_profiles_compile_to_rulesets_nft_accepts() {
    if !have_nft("random_valid_profiles_compile_to_rulesets_nft_accepts") {
        return;
    }
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    runner
        .run(&profile(), |text| {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("gen.toml"), &text).unwrap();
            let loaded = load("gen", &search(dir.path()));
            let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
            prop_assert!(errors.is_empty(), "{text}\n{errors:?}");
            let rules = ruleset::compile(loaded.profile.as_ref().unwrap());
            let nft = render::nft_text(&rules);
            if let Err(e) = nft_check(&nft) {
                return Err(TestCaseError::fail(format!(
                    "nft -c refused:\n{e}\nprofile:\n{text}\nruleset:\n{nft}"
                )));
            }
            Ok(())
        })
        .unwrap();
}

/// Loads bytes as a profile file; never panics, and a refusal says where.
fn load_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("fuzz.toml"), bytes).unwrap();
    let loaded = load("fuzz", &search(dir.path()));
    if let Some(profile) = &loaded.profile {
        // Whatever was accepted must compile and render without panicking.
        let _ = render::nft_text(&ruleset::compile(profile));
        return Ok(());
    }
    let errors: Vec<_> = loaded.errors().collect();
    prop_assert!(!errors.is_empty(), "refused without an error");
    for e in errors {
        prop_assert!(!e.message.is_empty());
        // Only a file that cannot be read at all has no line to name.
        prop_assert!(
            e.line > 0 || e.message.starts_with("cannot read"),
            "unlocated: {e}"
        );
    }
    Ok(())
}

#[test]
fn random_bytes_never_panic_the_loader() {
    let mut runner = TestRunner::new(Config {
        cases: 500,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..400), |bytes| {
            load_bytes(&bytes)
        })
        .unwrap();
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Replace(usize, u8),
    SwapLines(usize, usize),
    DuplicateLine(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let tokens: Vec<&[u8]> = vec![
        b"[",
        b"]",
        b"\"",
        b"=",
        b"\n",
        b"[[rule]]\n",
        b"{",
        b",",
        b"/",
        b"-",
        b"0",
        b"999999",
        b"::",
        b"all",
        b"extends = \"base\"\n",
        b"#",
    ];
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), prop::sample::select(tokens))
            .prop_map(|(a, t)| Edit::Insert(a, t.to_vec())),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Replace(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut t = text.to_vec();
    for e in edits {
        let len = t.len().max(1);
        match e {
            Edit::Delete(a, n) => {
                let a = a % len;
                let end = (a + n).min(t.len());
                if a < end {
                    t.drain(a..end);
                }
            }
            Edit::Insert(a, bytes) => {
                let a = a % (t.len() + 1);
                t.splice(a..a, bytes.iter().copied());
            }
            Edit::Replace(a, b) => {
                if !t.is_empty() {
                    let a = a % t.len();
                    t[a] = *b;
                }
            }
            Edit::SwapLines(a, b) | Edit::DuplicateLine(a @ b) => {
                let mut lines: Vec<Vec<u8>> =
                    t.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len();
                let (a, b) = (a % n, b % n);
                if matches!(e, Edit::DuplicateLine(_)) {
                    let l = lines[a].clone();
                    lines.insert(a, l);
                } else {
                    lines.swap(a, b);
                }
                t = lines.join(&b'\n');
            }
            Edit::Truncate(a) => t.truncate(a % len),
        }
    }
    t
}

#[test]
fn mutated_shipped_profiles_never_panic_the_loader() {
    let mut texts = Vec::new();
    for entry in fs::read_dir(root().join("profiles")).unwrap() {
        texts.push(fs::read(entry.unwrap().path()).unwrap());
    }
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    runner
        .run(
            &(0..texts.len(), prop::collection::vec(edit(), 1..6)),
            |(i, edits)| load_bytes(&apply(&texts[i], &edits)),
        )
        .unwrap();
}
