//! The escape hatch in the kernel, inside throwaway namespaces: the set
//! with its timed element and the inverted lookup encode as nft itself
//! encodes them (`nft --debug=netlink`), read back into the model (the
//! element's configured timeout, not its countdown), render as text the
//! real `nft -f` loads, and read back as expired once the kernel dropped
//! the element.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use fwharden::netns::Netns;
use fwharden::nft;
use fwharden::ruleset::hatch::{self, Hatch};
use fwharden::ruleset::Ruleset;

fn profile(name: &str) -> Ruleset {
    let search = fwharden::profile::SearchPath {
        dirs: vec![],
        builtin: true,
    };
    fwharden::compile::compile(
        &fwharden::profile::load(name, &search)
            .profile
            .expect("a shipped profile"),
    )
}

fn with_hatch(operator: &str, timeout_secs: u64) -> Ruleset {
    hatch::with_hatch(
        &profile("vps-profile"),
        &Hatch {
            operator: operator.parse::<IpAddr>().unwrap(),
            port: 22,
            timeout_secs,
        },
    )
}

/// `nft list` shows how long the element has left (`expires 29s992ms`),
/// which differs from one listing to the next: cut it.
fn without_countdown(text: &str) -> String {
    text.lines()
        .map(|l| match l.find(" expires ") {
            Some(at) => {
                let rest = &l[at + " expires ".len()..];
                let end = rest.find([' ', ',', '}']).unwrap_or(rest.len());
                format!("{}{}", &l[..at], &rest[end..])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn list(ns: &Netns, debug: bool) -> String {
    let mut argv = vec!["nft"];
    if debug {
        argv.push("--debug=netlink");
    }
    argv.extend(["list", "table", "inet", "fwharden"]);
    without_countdown(&stdout(&ns.run(&argv).unwrap()))
}

fn load_text(ns: &Netns, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.nft");
    std::fs::write(&file, text).unwrap();
    ns.run(&["nft", "-f", file.to_str().unwrap()]).unwrap();
}

#[test]
#[ignore = "needs root"]
fn the_rendered_hatch_passes_nft_check() {
    needs_root("the_rendered_hatch_passes_nft_check");
    let nft = NftCheck::new();
    for op in ["192.0.2.7", "2001:db8::7"] {
        let text = fwharden::render::nft_text(&with_hatch(op, 60));
        assert!(text.contains("saddr != @hatch_v"), "{text}");
        nft.text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let open = fwharden::render::nft_text(&hatch::expired(&with_hatch(op, 60)));
        nft.text(&open).unwrap_or_else(|e| panic!("{e}\n{open}"));
    }
}

#[test]
#[ignore = "needs root"]
fn the_hatch_applies_as_nft_loads_it_and_reads_back_until_and_after_expiry() {
    needs_root("the_hatch_applies_as_nft_loads_it_and_reads_back_until_and_after_expiry");
    let host_before = host_tables();
    for (op, tag) in [("192.0.2.7", "h4"), ("2001:db8::7", "h6")] {
        let r = with_hatch(op, 30);
        let ours = Netns::create(&format!("{tag}nl")).unwrap();
        let theirs = Netns::create(&format!("{tag}text")).unwrap();
        ours.run_in(|| nft::apply(&r)).unwrap().unwrap();
        let back = ours.run_in(nft::read_table).unwrap().unwrap();
        assert_eq!(back.as_ref(), Some(&r));
        load_text(&theirs, &fwharden::render::nft_text(&r));
        assert_eq!(list(&ours, false), list(&theirs, false));
        // Expression by expression: the inverted lookup is `... 0x1`.
        let debug = list(&ours, true);
        assert!(debug.contains("lookup reg 1 set hatch_v"), "{debug}");
        assert!(debug.contains(" 0x1 ]"), "{debug}");
        assert_eq!(debug, list(&theirs, true));
        let from_text = theirs.run_in(nft::read_table).unwrap().unwrap();
        assert_eq!(
            from_text,
            Some(Ruleset {
                profile: String::new(),
                ..r.clone()
            })
        );
    }

    // A short window: once it expired, the set is empty and the read-back
    // says so.
    let r = with_hatch("192.0.2.7", 1);
    let ns = Netns::create("hexpire").unwrap();
    ns.run_in(|| nft::apply(&r)).unwrap().unwrap();
    assert_eq!(
        ns.run_in(nft::read_table).unwrap().unwrap(),
        Some(r.clone())
    );
    std::thread::sleep(Duration::from_millis(1300));
    let back = ns.run_in(nft::read_table).unwrap().unwrap().unwrap();
    assert_eq!(back, hatch::expired(&r));
    assert!(hatch::find(&back).unwrap().element.is_none());
    assert_eq!(
        host_tables(),
        host_before,
        "the machine's own ruleset changed"
    );
}
