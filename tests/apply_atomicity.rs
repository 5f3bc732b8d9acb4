//! Atomicity of `fwharden apply` against a real kernel, inside a throwaway
//! namespace: applies are SIGKILLed at random moments, before, during and
//! after their one netlink transaction, and the kernel must then hold
//! exactly the old ruleset or exactly the new one, never a mix, an empty
//! table or no table.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const ITERATIONS: usize = 200;

/// xorshift64: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// B: vps-profile plus a deny rule over a list of 2,000 prefixes, so the
/// transaction is large enough for kills to land inside it.
fn big_profile(dir: &std::path::Path) -> String {
    // 2,000 /26 networks with a gap after each, so none merge.
    let list: String = (0..2000u32)
        .map(|i| {
            let off = i * 128;
            format!(
                "100.{}.{}.{}/26\n",
                64 + off / 65536,
                off / 256 % 256,
                off % 256
            )
        })
        .collect();
    std::fs::write(dir.join("blocked.txt"), list).unwrap();
    std::fs::write(
        dir.join("big.toml"),
        "description = \"vps-profile and a large blocklist\"\n\
         extends = \"vps-profile\"\n\
         [groups]\n\
         blocked = { file = \"blocked.txt\" }\n\
         [[rule]]\n\
         deny = \"all\"\n\
         from = \"blocked\"\n",
    )
    .unwrap();
    dir.join("big.toml").to_string_lossy().into_owned()
}

fn spawn_apply(host: &Host, profile: &str) -> Child {
    // A long timeout: no watcher fires during the loop. No probe: what is
    // killed here is the commit (tests/probe.rs proves the probe), and a
    // replica killed with its apply would outlive the test.
    host.fw()
        .args(["apply", profile, "--timeout", "3600", "--no-probe"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fwharden apply")
}

#[test]
#[ignore = "needs root"]
fn a_killed_apply_leaves_the_old_ruleset_or_the_new_one_never_a_mix() {
    needs_root("a_killed_apply_leaves_the_old_ruleset_or_the_new_one_never_a_mix");
    let host_before = host_tables();
    let profiles = tempfile::tempdir().unwrap();
    let a = "web-server".to_string();
    let b = big_profile(profiles.path());
    let host = Host::new("atomic");

    // The two texts, captured once after clean applies; A stays confirmed.
    let text_b = host.confirm_profile(&b);
    let text_a = host.confirm_profile(&a);
    assert_ne!(text_a, text_b);
    assert!(text_b.contains("blocked_v4"), "{text_b}");

    // How long an apply takes here, now, from spawn to exit: kills are
    // spread over twice that, so they land before the transaction (still
    // loading the profile), around it, and after the process has exited.
    let mut longest = Duration::ZERO;
    for profile in [&b, &a, &b, &a] {
        let start = Instant::now();
        let status = spawn_apply(&host, profile).wait().unwrap();
        assert!(status.success(), "{profile}: {status}");
        longest = longest.max(start.elapsed());
    }
    let mut window_ms = (2 * longest.as_millis() as u64).max(20);
    let seed = now_ms() ^ u64::from(std::process::id());
    let mut rng = Rng(seed | 1);
    eprintln!("atomicity: apply takes up to {longest:?}; kills within {window_ms} ms; seed {seed}");

    let started = Instant::now();
    let mut kernel = text_a.clone();
    let (mut before_commit, mut after_commit) = (0, 0);
    for i in 0..ITERATIONS {
        let (profile, want) = if i % 2 == 0 {
            (&b, &text_b)
        } else {
            (&a, &text_a)
        };
        let mut child = spawn_apply(&host, profile);
        let delay = rng.below(window_ms + 1);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        child.wait().unwrap();

        let now = host.table();
        let now = now.unwrap_or_else(|| panic!("iteration {i} (kill after {delay} ms): no table"));
        assert!(
            now == text_a || now == text_b,
            "iteration {i} (kill after {delay} ms): the kernel holds neither A nor B:\n{now}"
        );
        // Every record on disk stays readable whenever the kill came.
        let _ = host.pending();
        if kernel != *want {
            if now == *want {
                after_commit += 1;
            } else {
                before_commit += 1;
            }
        }
        kernel = now;
        // Should the machine have slowed down since the measurement, widen
        // the window until some kills land after the commit.
        if i % 50 == 49 && after_commit == 0 {
            window_ms *= 2;
        }
    }
    eprintln!(
        "atomicity: {ITERATIONS} kills in {:?}: {before_commit} left the old ruleset, {after_commit} the new one",
        started.elapsed()
    );
    assert!(before_commit > 0, "no kill landed before a commit");
    assert!(after_commit > 0, "no kill landed after a commit");

    // The state is whole: restore goes back to the confirmed A, stops the
    // last watcher, and nothing is left running.
    let out = host.expect(0, &["restore"]);
    assert!(
        stdout(&out).contains("restored the confirmed profile web-server"),
        "{}",
        stdout(&out)
    );
    assert_eq!(host.table_text(), text_a);
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert!(s["pending"].is_null(), "{s}");
    host.wait_quiet();
    drop(host);
    assert_eq!(
        host_tables(),
        host_before,
        "the machine's own ruleset changed"
    );
}
