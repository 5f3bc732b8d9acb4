//! The command line: argument definitions, one file per subcommand, and the
//! exit codes. Library errors become `anyhow` errors only here, at the edge.

mod check;
mod list;
mod show;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::profile::{self, Loaded, SearchPath};

/// Exit codes. Scripts and Ansible can tell a bad profile from a broken host.
pub mod exit {
    /// Success (warnings included, unless `--deny-warnings`).
    pub const OK: i32 = 0;
    /// A runtime failure: the system or kernel refused, a file could not be
    /// written. Nothing was left half-done.
    pub const FAILURE: i32 = 1;
    /// The command line is wrong.
    pub const USAGE: i32 = 2;
    /// The profile is invalid (or has warnings under `--deny-warnings`).
    /// Nothing was changed.
    pub const INVALID_PROFILE: i32 = 3;
    /// Refused for safety (reserved for apply: lockout guard, another apply
    /// running). Nothing was changed.
    pub const REFUSED: i32 = 4;
    /// Applied, then verification failed and the previous ruleset was
    /// restored (reserved for apply).
    pub const ROLLED_BACK: i32 = 5;
}

const EXAMPLES: &str = "\
Examples:
  fwharden list                          profiles there are, and where they are
  fwharden check vps-profile             validate a profile, print warnings
  fwharden show vps-profile              the nftables ruleset it compiles to
  fwharden show vps-profile --json       the same, as the ruleset model in JSON
  fwharden --profile-dir ./profiles check ./profiles/mine.toml

Profiles are looked up in /etc/fwharden/profiles, then
/usr/share/fwharden/profiles, then among the profiles built into fwharden.

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 invalid profile,
4 refused for safety, 5 applied but verification failed and rolled back.";

#[derive(Debug, Parser)]
#[command(name = "fwharden", version, about = "Host firewall hardening: named profiles compiled to one atomic nftables transaction", after_help = EXAMPLES)]
pub struct Cli {
    /// Look profiles up only in DIR (repeatable), instead of /etc, /usr/share
    /// and the built-in ones.
    #[arg(long, global = true, value_name = "DIR")]
    pub profile_dir: Vec<PathBuf>,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the available profiles, where each was found and what it is for.
    List,
    /// Validate a profile and print its warnings.
    Check {
        /// Profile name (e.g. vps-profile) or path to a .toml file.
        profile: String,
        /// Treat warnings as errors (exit code 3).
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print the nftables ruleset a profile compiles to, as `nft -f` text.
    Show {
        /// Profile name (e.g. vps-profile) or path to a .toml file.
        profile: String,
    },
    /// Reserved: load a profile atomically with a rollback timer.
    #[command(hide = true)]
    Apply(Reserved),
    /// Reserved: confirm a pending apply.
    #[command(hide = true)]
    Confirm(Reserved),
    /// Reserved: restore the previous ruleset now.
    #[command(hide = true)]
    Rollback(Reserved),
    /// Reserved: show what is loaded and whether it is confirmed.
    #[command(hide = true)]
    Status(Reserved),
    /// Reserved: load the last confirmed ruleset (at boot).
    #[command(hide = true)]
    Restore(Reserved),
    /// Reserved: verify a ruleset with real packets.
    #[command(hide = true)]
    Probe(Reserved),
    /// Reserved: scan a host's exposure.
    #[command(hide = true)]
    Scan(Reserved),
    /// Reserved: write iptables-restore and ufw equivalents.
    #[command(hide = true)]
    Emit(Reserved),
}

#[derive(Debug, clap::Args)]
pub struct Reserved {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

/// What a command ended with: its exit code. Errors that are not about a
/// profile travel as `anyhow::Error` and exit with [`exit::FAILURE`].
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let search = if cli.profile_dir.is_empty() {
        SearchPath::default()
    } else {
        SearchPath::only(cli.profile_dir.clone())
    };
    match &cli.command {
        Command::List => list::run(&search, cli.json),
        Command::Check {
            profile,
            deny_warnings,
        } => check::run(&search, profile, *deny_warnings, cli.json),
        Command::Show { profile } => show::run(&search, profile, cli.json),
        Command::Apply(_) => reserved("apply"),
        Command::Confirm(_) => reserved("confirm"),
        Command::Rollback(_) => reserved("rollback"),
        Command::Status(_) => reserved("status"),
        Command::Restore(_) => reserved("restore"),
        Command::Probe(_) => reserved("probe"),
        Command::Scan(_) => reserved("scan"),
        Command::Emit(_) => reserved("emit"),
    }
}

/// The names later issues fill in answer honestly, and change nothing.
fn reserved(name: &str) -> anyhow::Result<i32> {
    anyhow::bail!("`fwharden {name}` is not available in this version yet; nothing was changed")
}

/// Loads a profile and prints its diagnostics to stderr (in JSON mode the
/// caller prints them). Returns the profile when it is valid.
fn load_reporting(
    search: &SearchPath,
    spec: &str,
    json: bool,
) -> (Loaded, Option<profile::Profile>) {
    let loaded = profile::load(spec, search);
    if !json {
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
    }
    let p = loaded.profile.clone();
    (loaded, p)
}
