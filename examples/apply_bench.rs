//! Latency of [`fwharden::nft::apply`]: loads a ruleset model (the JSON of
//! `fwharden show --json PROFILE`) and applies it RUNS times in one process,
//! printing the wall time of each call and their median. `scripts/bench-apply`
//! runs it inside a throwaway network namespace.
//!
//! ```sh
//! apply_bench RULESET.json [RUNS]     # RUNS defaults to 1
//! ```
//!
//! Each call replaces table `inet fwharden` of the network namespace it runs
//! in, so it runs only inside one made with `ip netns add`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apply_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        bail!("usage: apply_bench RULESET.json [RUNS]");
    };
    let runs: usize = match args.next() {
        Some(n) => n.parse().with_context(|| format!("RUNS {n:?}"))?,
        None => 1,
    };
    refuse_host_namespace()?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ruleset: fwharden::ruleset::Ruleset =
        serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;

    let mut times = Vec::with_capacity(runs);
    for i in 1..=runs {
        let start = Instant::now();
        let report = fwharden::nft::apply(&ruleset).context("apply")?;
        let took = start.elapsed();
        println!(
            "apply {i}: {:.3} ms ({} messages, {} bytes, generation {})",
            ms(took),
            report.messages,
            report.bytes,
            report.generation
        );
        times.push(took);
    }
    times.sort();
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        println!(
            "median {:.3} ms, min {:.3} ms, max {:.3} ms over {runs} calls",
            ms(times[runs / 2]),
            ms(*min),
            ms(*max)
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A benchmark must never change the firewall of the machine itself: it
/// runs only in a namespace made by `ip netns add` (one under /run/netns),
/// and never in that of PID 1 when that one can be read.
fn refuse_host_namespace() -> anyhow::Result<()> {
    let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let here = id(Path::new("/proc/self/ns/net")).context("reading /proc/self/ns/net")?;
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| id(&e.path()) == Some(here));
    if !named || id(Path::new("/proc/1/ns/net")) == Some(here) {
        bail!("refusing to run outside a network namespace made with `ip netns add`: run it as `ip netns exec NAME apply_bench ...`");
    }
    Ok(())
}
