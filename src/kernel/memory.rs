//! An nf_tables held in memory: table `inet fwharden` as a model, the
//! generation counter, and a script of faults to answer with, so that the
//! safety net can be driven down every path a real kernel can take, as a
//! normal user, in microseconds.
//!
//! It keeps the kernel's contract (see [`super`]): a commit moves the
//! generation by one, a commit at a stale generation is refused with
//! [`NftError::Raced`], a refused commit changes nothing.

use std::cell::RefCell;

use ipnet::IpNet;

use super::Kernel;
use crate::nft::{next_generation, ApplyReport, BanState, Check, NftError};
use crate::ruleset::openings::{Opening, Port};
use crate::ruleset::Ruleset;

/// The kernel calls, as a fault script names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    Generation,
    ReadTable,
    ReadTableAt,
    ApplyAt,
    ApplyDelta,
    Verify,
    RemoveTable,
    BanState,
    Openings,
    ChangeOpenings,
}

impl Call {
    pub const ALL: [Call; 10] = [
        Call::Generation,
        Call::ReadTable,
        Call::ReadTableAt,
        Call::ApplyAt,
        Call::ApplyDelta,
        Call::Verify,
        Call::RemoveTable,
        Call::BanState,
        Call::Openings,
        Call::ChangeOpenings,
    ];

    /// Whether the call commits a transaction.
    pub fn commits(self) -> bool {
        matches!(
            self,
            Call::ApplyAt | Call::ApplyDelta | Call::RemoveTable | Call::ChangeOpenings
        )
    }
}

/// An error the netlink layer can report, made fresh for each use
/// (`NftError` carries an `io::Error`, which cannot be cloned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Another program committed first: the batch was refused.
    Raced,
    /// The kernel refused the batch (EINVAL, say).
    Rejected,
    /// No CAP_NET_ADMIN.
    Permission,
    /// A dump ran out of buffer space (ENOBUFS) or the kernel was busy.
    Busy,
    /// An older kernel without DESTROYTABLE (EOPNOTSUPP) and no fallback.
    Unsupported,
    /// The table holds something fwharden did not write.
    Foreign,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Raced,
        Failure::Rejected,
        Failure::Permission,
        Failure::Busy,
        Failure::Unsupported,
        Failure::Foreign,
    ];

    pub fn error(self) -> NftError {
        use std::io::Error;
        match self {
            Failure::Raced => NftError::Raced,
            Failure::Rejected => NftError::Rejected {
                what: "the batch (injected)".into(),
                message: None,
                source: Error::from_raw_os_error(libc::EINVAL),
            },
            Failure::Permission => NftError::Permission {
                what: "the batch (injected)".into(),
                source: Error::from_raw_os_error(libc::EPERM),
            },
            Failure::Busy => NftError::Io {
                op: "recvmsg (injected)",
                source: Error::from_raw_os_error(libc::ENOBUFS),
            },
            Failure::Unsupported => NftError::Unsupported {
                what: "the request (injected)".into(),
                why: "this kernel does not know it".into(),
            },
            Failure::Foreign => NftError::Foreign {
                table: crate::ruleset::TABLE_NAME.into(),
                what: "a rule (injected)".into(),
                why: "written by another tool".into(),
            },
        }
    }
}

/// What happens at one scripted call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The call fails; nothing changes.
    Fail(Failure),
    /// Another program commits (a ban, say) just before the call: the
    /// generation moves, table `inet fwharden` stays.
    OtherCommit,
    /// Someone replaces table `inet fwharden` just before the call (a hand
    /// edit, another tool): the generation moves.
    Edited(Option<Ruleset>),
    /// A commit goes in, but its answer is lost: the caller gets
    /// [`NftError::OutcomeUnknown`].
    LostAnswer { committed: bool },
    /// A read (or a verify) answers with this table instead of the one
    /// held: a read-back that differs.
    ReadsAs(Option<Ruleset>),
}

#[derive(Debug, Default)]
struct Inner {
    generation: u32,
    table: Option<Ruleset>,
    bans: Option<BanState>,
    /// The opening sets' elements; `None`: there are no opening sets (no
    /// table, or one fwharden did not write). An apply keeps them, as the
    /// real one carries them over; time does not pass here.
    openings: Option<Vec<Opening>>,
    /// Faults still to happen, in order, each at the next call it names.
    script: Vec<(Call, Fault)>,
    calls: Vec<Call>,
    forbidden: bool,
}

/// The in-memory kernel. Interior mutability: the port's methods take
/// `&self`, as netlink sockets opened per call do.
#[derive(Debug, Default)]
pub struct Memory {
    inner: RefCell<Inner>,
}

impl Memory {
    /// An empty kernel at generation 1.
    pub fn new() -> Memory {
        let m = Memory::default();
        m.inner.borrow_mut().generation = 1;
        m
    }

    /// A kernel already holding `table`.
    pub fn holding(table: Option<Ruleset>) -> Memory {
        let m = Memory::new();
        m.inner.borrow_mut().table = table;
        m
    }

    /// Acts as the kernel the interlock protects: every change refused.
    pub fn forbid(&self) {
        self.inner.borrow_mut().forbidden = true;
    }

    /// Adds `fault` at the next `call` not already given one.
    pub fn inject(&self, call: Call, fault: Fault) {
        self.inner.borrow_mut().script.push((call, fault));
    }

    /// Drops the faults not reached.
    pub fn clear_faults(&self) {
        self.inner.borrow_mut().script.clear();
    }

    /// Sets the ban table.
    pub fn set_bans(&self, bans: Option<BanState>) {
        self.inner.borrow_mut().bans = bans;
    }

    /// The openings held, `None` for no opening sets.
    pub fn held_openings(&self) -> Option<Vec<Opening>> {
        self.inner.borrow().openings.clone()
    }

    /// What table `inet fwharden` holds now.
    pub fn table(&self) -> Option<Ruleset> {
        self.inner.borrow().table.clone()
    }

    pub fn current_generation(&self) -> u32 {
        self.inner.borrow().generation
    }

    /// Every call made, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.borrow().calls.clone()
    }

    /// Faults scripted but not reached.
    pub fn unused_faults(&self) -> Vec<(Call, Fault)> {
        self.inner.borrow().script.clone()
    }

    /// Records the call and takes its scripted fault, if any. Faults that
    /// act before the call (another commit, an edit) are applied here.
    fn enter(&self, call: Call) -> Option<Fault> {
        let mut inner = self.inner.borrow_mut();
        inner.calls.push(call);
        let at = inner.script.iter().position(|(c, _)| *c == call)?;
        let (_, fault) = inner.script.remove(at);
        match fault {
            Fault::OtherCommit => {
                inner.generation = next_generation(inner.generation);
                None
            }
            Fault::Edited(table) => {
                inner.table = table;
                inner.openings = None;
                inner.generation = next_generation(inner.generation);
                None
            }
            f => Some(f),
        }
    }

    fn read(&self, call: Call) -> Result<(u32, Option<Ruleset>), NftError> {
        let fault = self.enter(call);
        let inner = self.inner.borrow();
        match fault {
            Some(Fault::Fail(f)) => Err(f.error()),
            Some(Fault::ReadsAs(t)) => Ok((inner.generation, t)),
            _ => Ok((inner.generation, inner.table.clone())),
        }
    }

    /// One transaction that puts `table` in place, at `generation` if given.
    fn commit(
        &self,
        call: Call,
        table: Option<Ruleset>,
        generation: Option<u32>,
    ) -> Result<ApplyReport, NftError> {
        let fault = self.enter(call);
        let mut inner = self.inner.borrow_mut();
        if inner.forbidden {
            return Err(Failure::Permission.error());
        }
        let lost = match fault {
            Some(Fault::Fail(f)) => return Err(f.error()),
            Some(Fault::LostAnswer { committed }) => Some(committed),
            _ => None,
        };
        if generation.is_some_and(|g| g != inner.generation) {
            return Err(NftError::Raced);
        }
        if lost == Some(false) {
            return Err(unknown());
        }
        let before = inner.generation;
        inner.openings = match table {
            Some(_) => Some(inner.openings.take().unwrap_or_default()),
            None => None,
        };
        inner.table = table;
        inner.generation = next_generation(before);
        if lost == Some(true) {
            return Err(unknown());
        }
        Ok(ApplyReport {
            generation: inner.generation,
            exclusive: true,
            messages: 0,
            bytes: 0,
            focus: Default::default(),
        })
    }
}

fn unknown() -> NftError {
    NftError::OutcomeUnknown {
        detail: "the kernel's answer was lost (injected)".into(),
    }
}

impl Kernel for Memory {
    fn forbidden(&self) -> bool {
        self.inner.borrow().forbidden
    }

    fn generation(&self) -> Result<u32, NftError> {
        self.read(Call::Generation).map(|(g, _)| g)
    }

    fn read_table(&self) -> Result<Option<Ruleset>, NftError> {
        self.read(Call::ReadTable).map(|(_, t)| t)
    }

    fn read_table_at(&self) -> Result<(u32, Option<Ruleset>), NftError> {
        self.read(Call::ReadTableAt)
    }

    fn apply_at(
        &self,
        ruleset: &Ruleset,
        generation: Option<u32>,
    ) -> Result<ApplyReport, NftError> {
        self.commit(Call::ApplyAt, Some(ruleset.clone()), generation)
    }

    fn apply_delta(
        &self,
        old: &Ruleset,
        new: &Ruleset,
        generation: u32,
    ) -> Result<ApplyReport, NftError> {
        if !old.differs_only_in_elements(new) {
            return Err(NftError::Unsupported {
                what: "an element delta".into(),
                why: "the rulesets differ in more than set elements".into(),
            });
        }
        // The real delta deletes and adds elements against what the kernel
        // holds; if that is not `old`, the result is neither.
        let held = self.inner.borrow().table.clone();
        let result = if held.as_ref() == Some(old) {
            Some(new.clone())
        } else {
            held
        };
        self.commit(Call::ApplyDelta, result, Some(generation))
    }

    fn verify(&self, expected: &Ruleset, _report: &ApplyReport) -> Result<Check, NftError> {
        let (generation, got) = self.read(Call::Verify)?;
        if got.as_ref() == Some(expected) {
            Ok(Check::Holds {
                generation,
                sampled: vec![],
            })
        } else {
            Ok(Check::Differs {
                generation,
                want: Box::new(expected.clone()),
                got,
                lookup: None,
            })
        }
    }

    fn remove_table(&self) -> Result<(), NftError> {
        self.commit(Call::RemoveTable, None, None).map(|_| ())
    }

    fn ban_state(&self) -> Result<Option<BanState>, NftError> {
        let fault = self.enter(Call::BanState);
        match fault {
            Some(Fault::Fail(f)) => Err(f.error()),
            _ => Ok(self.inner.borrow().bans.clone()),
        }
    }

    fn hold_bans(&self) -> Option<crate::nft::BanGate> {
        None
    }

    fn openings(&self) -> Result<Option<Vec<Opening>>, NftError> {
        match self.enter(Call::Openings) {
            Some(Fault::Fail(f)) => Err(f.error()),
            _ => Ok(self.inner.borrow().openings.clone()),
        }
    }

    /// As the kernel does: a delete of an opening not held fails (ENOENT),
    /// an add that overlaps one held fails (EEXIST), and either refuses
    /// the whole transaction.
    fn change_openings(
        &self,
        delete: &[(IpNet, Port)],
        add: &[(IpNet, Port, u64)],
    ) -> Result<(), NftError> {
        let fault = self.enter(Call::ChangeOpenings);
        let mut inner = self.inner.borrow_mut();
        if inner.forbidden {
            return Err(Failure::Permission.error());
        }
        if let Some(Fault::Fail(f)) = fault {
            return Err(f.error());
        }
        let refused = |errno: i32| NftError::Rejected {
            what: "an opening element".into(),
            message: None,
            source: std::io::Error::from_raw_os_error(errno),
        };
        let mut held = inner
            .openings
            .clone()
            .ok_or_else(|| refused(libc::ENOENT))?;
        for (from, port) in delete {
            let at = held
                .iter()
                .position(|o| o.from == *from && o.port == *port)
                .ok_or_else(|| refused(libc::ENOENT))?;
            held.remove(at);
        }
        for (from, port, ms) in add {
            let overlaps = |o: &Opening| {
                o.port == *port
                    && (o.from.contains(&from.network()) || from.contains(&o.from.network()))
            };
            if held.iter().any(overlaps) {
                return Err(refused(libc::EEXIST));
            }
            held.push(Opening {
                from: *from,
                port: *port,
                timeout_ms: *ms,
                left_ms: *ms,
            });
        }
        inner.openings = Some(held);
        inner.generation = next_generation(inner.generation);
        Ok(())
    }

    fn backoff(&self, _attempt: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(profile: &str) -> Ruleset {
        Ruleset {
            profile: profile.into(),
            table: crate::ruleset::TABLE_NAME.into(),
            sets: vec![],
            chains: vec![],
            bans: None,
        }
    }

    #[test]
    fn a_commit_moves_the_generation_by_one_and_a_stale_one_is_refused() {
        let k = Memory::new();
        let g = k.generation().unwrap();
        let r = k.apply_at(&table("a"), Some(g)).unwrap();
        assert_eq!(r.generation, g + 1);
        assert_eq!(k.table(), Some(table("a")));
        assert!(matches!(
            k.apply_at(&table("b"), Some(g)),
            Err(NftError::Raced)
        ));
        assert_eq!(
            k.table(),
            Some(table("a")),
            "a refused commit changes nothing"
        );
        assert_eq!(k.current_generation(), g + 1);
    }

    #[test]
    fn faults_fire_once_at_the_call_they_name() {
        let k = Memory::holding(Some(table("a")));
        k.inject(Call::ApplyAt, Fault::OtherCommit);
        k.inject(Call::ReadTable, Fault::Fail(Failure::Busy));
        let g = k.generation().unwrap();
        assert!(matches!(
            k.apply_at(&table("b"), Some(g)),
            Err(NftError::Raced)
        ));
        assert!(k.read_table().is_err());
        assert_eq!(k.read_table().unwrap(), Some(table("a")));
        assert!(k.unused_faults().is_empty());
    }

    #[test]
    fn a_lost_answer_may_or_may_not_have_committed() {
        let k = Memory::new();
        k.inject(Call::ApplyAt, Fault::LostAnswer { committed: true });
        k.inject(Call::ApplyAt, Fault::LostAnswer { committed: false });
        assert!(matches!(
            k.apply_at(&table("a"), None),
            Err(NftError::OutcomeUnknown { .. })
        ));
        assert_eq!(k.table(), Some(table("a")));
        assert!(matches!(
            k.apply_at(&table("b"), None),
            Err(NftError::OutcomeUnknown { .. })
        ));
        assert_eq!(k.table(), Some(table("a")));
    }

    #[test]
    fn a_read_back_that_differs_is_a_difference_not_an_error() {
        let k = Memory::new();
        let r = k.apply_at(&table("a"), None).unwrap();
        k.inject(Call::Verify, Fault::ReadsAs(Some(table("x"))));
        assert!(matches!(
            k.verify(&table("a"), &r).unwrap(),
            Check::Differs { .. }
        ));
        assert!(matches!(
            k.verify(&table("a"), &r).unwrap(),
            Check::Holds { .. }
        ));
    }

    #[test]
    fn the_forbidden_kernel_refuses_every_change() {
        let k = Memory::new();
        k.forbid();
        assert!(k.forbidden());
        assert!(k.apply_at(&table("a"), None).is_err());
        assert!(k.remove_table().is_err());
        assert_eq!(k.table(), None);
    }
}
