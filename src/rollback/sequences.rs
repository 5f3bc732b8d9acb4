//! Random sequences of commands and kernel faults, on the in-memory
//! kernel. Whatever happens, three things hold after every step:
//! - no pending record without a watcher or an overdue handler: a pending
//!   apply names a watcher that runs, or one the test killed or stopped
//!   (which the next command past the deadline takes over), or one
//!   fwharden ended when it took the apply over past its deadline;
//! - the last confirmed ruleset is never lost: the record only changes
//!   through a confirm that succeeded, and never disappears;
//! - the kernel never holds a ruleset no record names (apart from the
//!   fail-closed fallback `restore` loads when the confirmed one fails);
//! - disabled (a confirmed `disable`) with nothing pending, the kernel
//!   holds no table.

use proptest::prelude::*;

use super::rig::{compiled, Life, Rig};
use super::{ApplyOptions, ApplyOutcome};
use crate::kernel::memory::{Call, Failure, Fault};
use crate::ruleset::Ruleset;

#[derive(Debug, Clone)]
enum Command {
    Apply {
        profile: usize,
        auto_confirm: bool,
    },
    Confirm,
    /// `disable`, with the rollback timer.
    Disable,
    Rollback,
    Restore,
    /// The watcher's deadline comes and it acts.
    Deadline,
    /// The watcher is killed (kill -9, a reboot).
    KillWatcher,
    /// The watcher is stopped (SIGSTOP, a frozen cgroup).
    StopWatcher,
    /// The deadline passes and nobody acts yet.
    Expire,
    /// `status`: takes over an overdue apply.
    Settle,
}

const PROFILES: [&str; 4] = ["web-server", "ssh-only", "base", "vps-profile"];

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (0..PROFILES.len(), any::<bool>())
            .prop_map(|(profile, auto_confirm)| Command::Apply { profile, auto_confirm }),
        2 => Just(Command::Confirm),
        1 => Just(Command::Disable),
        1 => Just(Command::Rollback),
        1 => Just(Command::Restore),
        2 => Just(Command::Deadline),
        1 => Just(Command::KillWatcher),
        1 => Just(Command::StopWatcher),
        1 => Just(Command::Expire),
        1 => Just(Command::Settle),
    ]
}

/// Faults a real kernel can show: no lies about what a read finds, no
/// edits of our table by others (those are tested one by one in
/// `faults`), but every error, every race and every lost answer.
fn fault() -> impl Strategy<Value = (Call, Fault)> {
    let call = proptest::sample::select(Call::ALL.to_vec());
    let failure = proptest::sample::select(
        Failure::ALL
            .into_iter()
            .filter(|f| *f != Failure::Foreign)
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        (call.clone(), failure).prop_map(|(c, f)| (c, Fault::Fail(f))),
        call.clone().prop_map(|c| (c, Fault::OtherCommit)),
        any::<bool>().prop_map(|committed| (Call::ApplyAt, Fault::LostAnswer { committed })),
        Just((Call::Verify, Fault::ReadsAs(None))),
    ]
}

fn step() -> impl Strategy<Value = (Command, Vec<(Call, Fault)>)> {
    (command(), proptest::collection::vec(fault(), 0..3))
}

struct Model {
    rulesets: Vec<Ruleset>,
    fallback: Ruleset,
}

/// Runs one command: whether it confirmed something, and whether restore
/// may have loaded the minimal fallback ruleset.
fn run(rig: &Rig, model: &Model, cmd: &Command) -> (bool, bool) {
    let ports = rig.ports();
    let mut confirmed = false;
    let mut fell_back = false;
    match cmd {
        Command::Apply {
            profile,
            auto_confirm,
        } => {
            let opts = ApplyOptions {
                timeout: 600,
                auto_confirm: *auto_confirm,
                force: false,
                dry_run: false,
                operator: super::rig::console(),
                proven: false,
            };
            let out = super::apply(ports, &rig.dirs, &model.rulesets[*profile], &opts);
            confirmed = matches!(out, Ok(ApplyOutcome::Confirmed { .. }));
        }
        Command::Confirm => {
            confirmed = matches!(
                super::confirm(ports, &rig.dirs, None),
                Ok(super::Kept::Ruleset { .. })
            )
        }
        Command::Disable => {
            let _ = super::disable(ports, &rig.dirs, 600);
        }
        Command::Rollback => {
            let _ = super::rollback(ports, &rig.dirs);
        }
        Command::Restore => {
            // Restore loads the fallback when the confirmed ruleset fails
            // to load; the fallback's own read-back may fail after it went
            // in, so whatever restore says, the fallback may be loaded.
            let _ = super::restore(ports, &rig.dirs, &model.fallback);
            fell_back = true;
        }
        Command::Deadline => {
            rig.expire();
            let _ = rig.deadline();
        }
        Command::KillWatcher => {
            if let Some(pid) = rig.pending().and_then(|p| p.watcher) {
                rig.watchers.kill(pid);
            }
        }
        Command::StopWatcher => {
            if let Some(pid) = rig.pending().and_then(|p| p.watcher) {
                rig.watchers.sigstop(pid);
            }
        }
        Command::Expire => rig.expire(),
        Command::Settle => {
            let _ = super::settle(ports, &rig.dirs, "status");
        }
    }
    (confirmed, fell_back)
}

fn check(rig: &Rig, before: Option<&Ruleset>, confirmed: bool, fallback: Option<&Ruleset>) {
    let pending = rig.pending();
    if let Some(p) = &pending {
        let pid = p.watcher.expect("a pending record names its watcher");
        // A watcher fwharden ended (a takeover whose rollback then failed)
        // leaves the apply to the overdue path, which only acts past the
        // deadline: it must have passed.
        let overdue = crate::state::now_ms() >= p.deadline_ms;
        assert!(
            match rig.watchers.life(pid) {
                Some(Life::Running | Life::Killed | Life::Stopped | Life::EndedStopped) => true,
                Some(Life::Ended) => overdue,
                None => false,
            },
            "pending apply {} has no watcher and no overdue handler",
            p.token
        );
    }
    let now = rig.confirmed();
    if before.is_some() {
        assert!(now.is_some(), "the confirmed record was lost");
    }
    if !confirmed {
        assert_eq!(
            now.as_ref(),
            before,
            "the confirmed record changed without a confirm"
        );
    }
    let disabled = rig.dirs.disabled().expect("a readable marker").is_some();
    let Some(table) = rig.kernel.table() else {
        return;
    };
    assert!(
        !(disabled && pending.is_none()),
        "disabled with nothing pending, the kernel holds profile {}",
        table.profile
    );
    let named = [
        now.as_ref(),
        pending.as_ref().and_then(|p| p.ruleset.as_ref()),
        pending.as_ref().and_then(|p| p.previous.as_ref()),
        fallback,
    ];
    assert!(
        named.contains(&Some(&table)),
        "the kernel holds profile {} that no record names",
        table.profile
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("FWHARDEN_SEQUENCES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000)
    ))]

    #[test]
    fn random_commands_and_faults_keep_the_safety_net(steps in proptest::collection::vec(step(), 1..14)) {
        let model = Model {
            rulesets: PROFILES.iter().map(|p| compiled(p)).collect(),
            fallback: compiled("ssh-only"),
        };
        let rig = Rig::new();
        // The fallback stays named while the kernel holds it.
        let mut fallback: Option<Ruleset> = None;
        for (cmd, faults) in &steps {
            let before = rig.confirmed();
            for (call, fault) in faults {
                rig.kernel.inject(*call, fault.clone());
            }
            let (confirmed, fell_back) = run(&rig, &model, cmd);
            rig.kernel.clear_faults();
            if fell_back {
                fallback = Some(model.fallback.clone());
            }
            check(&rig, before.as_ref(), confirmed, fallback.as_ref());
        }
    }
}
