//! Exit codes. Scripts and Ansible can tell a bad profile from a broken
//! host. The command line re-exports them; library errors map themselves
//! onto them (`RollbackError::exit_code`) without importing the CLI.

/// Success (warnings included, unless `--deny-warnings`).
pub const OK: i32 = 0;
/// A runtime failure: the system or kernel refused, a file could not be
/// written, a state record is damaged. Nothing was left half-done.
pub const FAILURE: i32 = 1;
/// The command line is wrong.
pub const USAGE: i32 = 2;
/// The profile is invalid (or has warnings under `--deny-warnings`).
/// Nothing was changed.
pub const INVALID_PROFILE: i32 = 3;
/// Refused for safety: the lockout guard, the ban guard, another apply
/// running, or a timed apply with nothing it could roll back to. Nothing
/// was changed.
pub const REFUSED: i32 = 4;
/// Applied, then verification failed and the previous ruleset was
/// restored.
pub const ROLLED_BACK: i32 = 5;
/// The probe ran, and a probe saw something the profile does not say, or
/// could not tell (inconclusive). `apply` then changed nothing.
pub const PROBE_FAILED: i32 = 6;
/// `audit` found a port reachable from anywhere (or a published container
/// port the ruleset does not filter) that the profile does not name: let
/// in by a policy, by a rule that names no port, or by no ruleset at all.
pub const EXPOSED: i32 = 7;

/// An error that knows its exit code. Each library error implements it
/// beside its variants; the command line asks one function
/// (`cli::codes::of`) which walks an error's chain for the first that
/// knows, so no command chooses a code for an error by hand.
pub trait Coded {
    fn exit_code(&self) -> i32;
}

/// Every exit code with its name, in order: the README's table of exit
/// codes is checked against it (see the test below).
pub const ALL: [(i32, &str); 8] = [
    (OK, "OK"),
    (FAILURE, "FAILURE"),
    (USAGE, "USAGE"),
    (INVALID_PROFILE, "INVALID_PROFILE"),
    (REFUSED, "REFUSED"),
    (ROLLED_BACK, "ROLLED_BACK"),
    (PROBE_FAILED, "PROBE_FAILED"),
    (EXPOSED, "EXPOSED"),
];

#[cfg(test)]
mod tests {
    use super::ALL;

    /// The README's "Exit codes" table names each code once, in order,
    /// and no other: a code added here and not documented fails.
    #[test]
    fn the_readme_documents_every_exit_code_and_no_other() {
        let readme = include_str!("../README.md");
        let table = readme
            .split("### Exit codes")
            .nth(1)
            .expect("README has an Exit codes section");
        let codes: Vec<i32> = table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.trim_matches('|').split('|').next()?.trim().parse().ok())
            .collect();
        let ours: Vec<i32> = ALL.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, ours);
    }
}
