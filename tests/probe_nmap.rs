//! The probe's TCP verdicts agree with an independent scanner: an nmap SYN
//! scan from the peer namespace, from the same source address, on the same
//! interface, against the same replica.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::*;
use fwharden::probe::plan::{self, Outcome, Service};
use fwharden::probe::replica::Replica;
use fwharden::probe::send::Got;
use fwharden::profile::{load, SearchPath};

fn have_nmap(test: &str) -> bool {
    if std::process::Command::new("nmap")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    cannot_run(test, "nmap is missing; run scripts/deps");
    false
}

/// nmap's state of each port of a grepable (`-oG -`) report; ports nmap
/// folds into "Ignored State: filtered (N)" get that state.
fn nmap_states(text: &str, ports: &[u16]) -> BTreeMap<u16, String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("Host:") && l.contains("Ports:"))
        .unwrap_or_else(|| panic!("no Ports line in nmap's report:\n{text}"));
    let mut states = BTreeMap::new();
    let listed = line
        .split("Ports: ")
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap();
    for entry in listed.split(", ") {
        let mut f = entry.split('/');
        let port: u16 = f.next().unwrap().trim().parse().unwrap();
        states.insert(port, f.next().unwrap().to_string());
    }
    let ignored = line
        .split("Ignored State: ")
        .nth(1)
        .and_then(|s| s.split(' ').next());
    for p in ports {
        if let (false, Some(state)) = (states.contains_key(p), ignored) {
            states.insert(*p, state.to_string());
        }
    }
    states
}

fn outcome_of_nmap(state: &str) -> Outcome {
    match state {
        "open" => Outcome::Open,
        "closed" => Outcome::Rejected,
        "filtered" => Outcome::Filtered,
        other => panic!("nmap state {other}"),
    }
}

#[test]
#[ignore = "needs root"]
fn tcp_verdicts_agree_with_an_nmap_syn_scan() {
    needs_root("tcp_verdicts_agree_with_an_nmap_syn_scan");
    if !have_nmap("tcp_verdicts_agree_with_an_nmap_syn_scan") {
        return;
    }
    std::env::set_var(fwharden::rollback::FORBID_ENV, own_netns());
    let search = SearchPath::only(vec![root().join("profiles")]);
    let ruleset = fwharden::compile::compile(&load("vps-profile", &search).profile.unwrap());
    let plan = plan::build(&ruleset);
    let replica = Replica::build(&plan, &ruleset).unwrap();
    let observed = replica.run(&plan, fwharden::probe::TIMEOUT).unwrap();
    // The probes spent per-source meter tokens; nmap starts afresh.
    replica.load().unwrap();

    // TCP probes by (interface, source): one nmap run each.
    let mut groups: BTreeMap<(String, IpAddr), Vec<(u16, Got)>> = BTreeMap::new();
    for (p, got) in plan.probes.iter().zip(&observed.probes) {
        if let Service::Tcp(port) = p.service {
            groups
                .entry((p.interface.clone(), p.source))
                .or_default()
                .push((port, got.clone()));
        }
    }
    assert!(groups.len() >= 8, "{groups:?}");
    let open = groups.values().flatten();
    let open = open.filter(|(_, g)| *g == Got::Seen(Outcome::Open)).count();
    assert!(open >= 8, "the comparison needs open ports too: {groups:?}");
    let compared = std::thread::scope(|scope| {
        let runs: Vec<_> = groups
            .iter()
            .map(|((iface, source), probes)| {
                let replica = &replica;
                scope.spawn(move || {
                    let link = replica.link(iface).unwrap();
                    let ports: Vec<u16> = probes.iter().map(|(p, _)| *p).collect();
                    let list = ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    let target = link.target(source).to_string();
                    let source = source.to_string();
                    link.peer.verify().unwrap();
                    let mut cmd = link.peer.command("nmap");
                    cmd.args(["-sS", "-S", &source, "-e", &link.peer_device, "-Pn", "-n"]);
                    if source.contains(':') {
                        cmd.arg("-6");
                    }
                    cmd.args(["--max-retries", "1", "--max-rtt-timeout", "300ms"])
                        .args(["-p", &list, "-oG", "-", &target]);
                    let out = cmd.output().unwrap();
                    assert!(out.status.success(), "nmap: {}", stderr(&out));
                    let states = nmap_states(&stdout(&out), &ports);
                    let mut disagree = Vec::new();
                    for (port, got) in probes {
                        let nmap = outcome_of_nmap(&states[port]);
                        if *got != Got::Seen(nmap) {
                            disagree.push(format!(
                                "{source} {iface} {port}/tcp: probe {got:?}, nmap {nmap:?}"
                            ));
                        }
                    }
                    (probes.len(), disagree)
                })
            })
            .collect();
        runs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let total: usize = compared.iter().map(|(n, _)| n).sum();
    let disagree: Vec<String> = compared.into_iter().flat_map(|(_, d)| d).collect();
    assert!(
        disagree.is_empty(),
        "probe and nmap disagree:\n{}",
        disagree.join("\n")
    );
    assert!(total >= 30, "only {total} TCP probes compared");
}
