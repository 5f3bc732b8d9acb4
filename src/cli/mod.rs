//! The command line: argument definitions, one file per subcommand, and the
//! exit codes. Library errors become `anyhow` errors only here, at the edge.

mod apply;
mod audit;
mod bans;
mod check;
pub mod codes;
mod disable;
mod edit;
mod emit;
mod generate;
mod history;
mod list;
mod log;
mod metrics;
mod open;
mod probe;
mod safety;
mod scan;
mod show;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::duration;
use crate::profile::{self, Loaded, SearchPath};
use crate::rollback::ApplyOptions;
use crate::state::Dirs;

/// Exit codes; they live in [`crate::exit`] so lower layers can name them
/// without reaching up into the command line.
pub use crate::exit;

const EXAMPLES: &str = "\
Examples:
  fwharden list                          profiles there are, and where they are
  fwharden check vps-profile             validate a profile, print warnings
  fwharden show vps-profile              the nftables ruleset it compiles to
  fwharden show                          the ruleset the kernel holds now
  fwharden show --source base            a profile's TOML, to copy and edit
  fwharden init mine --from vps-profile  an editable copy in /etc/fwharden/profiles
  fwharden edit mine                     $EDITOR on it; saved only once it checks
  fwharden emit vps-profile --format iptables --output DIR   iptables-restore + ipset files
  fwharden emit web-server --format ufw --output DIR          ufw.sh (commands) or reload.sh (rules files)
  fwharden probe vps-profile             prove it with real packets in a replica
  fwharden scan HOST --profile vps-profile --from admin   check a live host from outside
  fwharden scan HOST --profile vps-profile --from any --ports all   and every other TCP port
  fwharden apply vps-profile --dry-run   who gains or loses access; changes nothing
  fwharden apply vps-profile --diff      the same, and the nft text that changes
  fwharden apply vps-profile             load it; rolled back in 60 s unless confirmed
  fwharden confirm                       (from a NEW ssh connection) keep it
  fwharden history                       the last confirmed rulesets, newest first
  fwharden rollback --to previous        undo the last confirm, with the rollback timer
  fwharden disable                       remove fwharden's table, with the rollback timer
  fwharden enable                        load the confirmed ruleset again, with the timer
  fwharden apply vps-profile --auto-confirm --json     from Ansible or a postinst
  fwharden status                        confirmed, pending, drift, other tables
  fwharden audit                         every listening port, and who can reach it
  fwharden audit vps-profile             the same, judged by a profile before applying it
  fwharden ban 203.0.113.5 --timeout 1h  drop a source (needs [bans] enabled)
  fwharden open 8080/tcp --from admin --for 10m   a port opened; the kernel closes it on time
  fwharden metrics --output /var/lib/prometheus/node-exporter/fwharden.prom   counters for Prometheus
  fwharden log --follow --port 22        logged packets and the profile line that decided each
  fwharden log --summary --since 1h      the last hour's top sources, ports, rules (from the journal)

Profiles are looked up in /etc/fwharden/profiles, then
/usr/share/fwharden/profiles, then among the profiles built into fwharden.

Environment: FWHARDEN_MAX_INPUT_MIB=N, the largest group list file read,
in MiB (default 256; profiles: 32 MiB; state files: twice N). Group files
must be regular files with lines of at most 4096 bytes.

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 invalid profile,
4 refused for safety, 5 applied but verification failed and rolled back,
6 a probe did not match (or could not tell); nothing was applied,
7 audit: a port reachable from anywhere that the profile does not name.";

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

    /// Where the confirmed and pending rulesets are kept.
    #[arg(long, global = true, value_name = "DIR", env = "FWHARDEN_STATE_DIR", default_value = crate::state::STATE_DIR)]
    pub state_dir: PathBuf,

    /// Where the apply lock and the watcher's log are kept.
    #[arg(long, global = true, value_name = "DIR", env = "FWHARDEN_RUN_DIR", default_value = crate::state::RUN_DIR)]
    pub run_dir: PathBuf,

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
    /// Print the nftables ruleset a profile compiles to, as `nft -f` text
    /// (with no profile, the one the kernel holds).
    Show {
        /// Profile name (e.g. vps-profile) or path to a .toml file; with
        /// none, the ruleset the kernel holds now (table inet fwharden).
        #[arg(conflicts_with_all = ["pending", "source"])]
        profile: Option<String>,
        /// Print profile NAME's TOML as written (built-in ones too), to
        /// copy it: `fwharden show --source base > mine.toml`.
        #[arg(long, value_name = "NAME", conflicts_with = "pending")]
        source: Option<String>,
        /// Print the pending apply's ruleset instead, as loaded: with its
        /// escape hatch.
        #[arg(long)]
        pending: bool,
    },
    /// Write an editable copy of a profile (a built-in one too) to the
    /// first profile directory (/etc/fwharden/profiles), its placeholder
    /// addresses marked.
    Init {
        /// The new profile's name (NAME.toml).
        name: String,
        /// The profile to copy; by default NAME itself if there is one,
        /// else `base`.
        #[arg(long, value_name = "PROFILE")]
        from: Option<String>,
        /// Replace NAME.toml if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Edit a profile in $VISUAL or $EDITOR: saved only once it checks
    /// (back into the editor on errors, as visudo does), then the probe
    /// and the apply are offered.
    Edit {
        /// The profile's name (a file in a profile directory).
        name: String,
    },
    /// Load a profile in one atomic transaction, with a rollback timer.
    Apply {
        /// Profile name (e.g. vps-profile) or path to a .toml file.
        profile: String,
        /// How long until the previous ruleset is restored unless confirmed
        /// (600, 90s, 10m, 1h; at most 1d):
        /// the confirmed one, or with no confirmed record the table the
        /// kernel holds now (refused, exit 4, if it cannot be put back).
        #[arg(long, default_value = "60", value_name = "DURATION", value_parser = duration::arg(1, 86400))]
        timeout: u64,
        /// Confirm at once when the kernel reads back what was applied
        /// (automation: Ansible, postinst).
        #[arg(long)]
        auto_confirm: bool,
        /// Apply even if it would refuse new connections from your SSH client.
        #[arg(long)]
        force: bool,
        /// Say what would change in who can connect to what, against
        /// what the kernel holds; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// As --dry-run, and print the difference as nft text too.
        #[arg(long)]
        diff: bool,
        /// Emergencies only: do not prove the ruleset with real packets in
        /// a replica first (the read-back after the commit still runs).
        #[arg(long, conflicts_with = "require_probe")]
        no_probe: bool,
        /// Refuse to apply when the probe replica cannot be built here
        /// (instead of going on with the read-back alone).
        #[arg(long)]
        require_probe: bool,
        /// Test suite only: the replica is loaded without the input rules
        /// whose comment contains TEXT, so the probe must fail. Honoured
        /// only under the test interlock (FWHARDEN_FORBID_NETNS set).
        #[arg(long, hide = true, value_name = "TEXT")]
        test_break_probe: Option<String>,
    },
    /// Keep the pending ruleset: cancel its rollback, load it at boot.
    Confirm {
        /// Confirm only the apply that printed this token.
        #[arg(long)]
        token: Option<String>,
    },
    /// Restore the previous ruleset now, without waiting for the deadline;
    /// with --to, load a ruleset confirmed earlier (`fwharden history`)
    /// with the rollback timer, as an apply does.
    Rollback {
        #[command(flatten)]
        to: history::RollbackTo,
    },
    /// The last confirmed rulesets, newest first, with the number
    /// `rollback --to` takes; exit 1 when an entry is damaged.
    History,
    /// Remove fwharden's table (no fwharden firewall), with the rollback
    /// timer: unconfirmed, the confirmed ruleset comes back. Confirmed,
    /// `restore` at boot loads nothing until `enable` or the next apply.
    Disable {
        /// How long until the confirmed ruleset comes back unless
        /// confirmed (600, 90s, 10m, 1h; at most 1d).
        #[arg(long, default_value = "60", value_name = "DURATION", value_parser = duration::arg(1, 86400))]
        timeout: u64,
    },
    /// Undo `disable`: load the confirmed ruleset again, with the rollback
    /// timer, as an apply does (an unconfirmed disable is rolled back).
    Enable {
        /// How long until there is no table again unless confirmed (600,
        /// 90s, 10m, 1h; at most 1d).
        #[arg(long, default_value = "60", value_name = "DURATION", value_parser = duration::arg(1, 86400))]
        timeout: u64,
        /// Emergencies only: do not prove it with real packets in a
        /// replica first.
        #[arg(long)]
        no_probe: bool,
    },
    /// What is loaded, whether it is confirmed, and other tables on our hooks.
    /// Exits 1 when a state record is damaged. Rolls back an apply whose
    /// deadline passed with its watcher gone, or 5 s after it whatever the
    /// watcher is doing (stopped, frozen).
    Status {
        /// List every element of every set (big sets are otherwise checked
        /// by sampled lookups): O(n²) in the kernel, about a second for
        /// 100,000 prefixes and a minute for a million.
        #[arg(long)]
        verify: bool,
    },
    /// Load the last confirmed ruleset (at boot); never a pending one. A
    /// damaged record (checked by its SHA-256) loads ssh-only instead, exit 1.
    Restore,
    /// Every listening socket and published container port, and who can
    /// reach it under the loaded ruleset (or under PROFILE, before applying
    /// it); exit 7 when a port is reachable from anywhere without the
    /// profile naming it.
    Audit {
        /// Judge by this profile instead of the loaded ruleset.
        profile: Option<String>,
    },
    /// The rollback watcher an apply starts (internal).
    #[command(hide = true)]
    Watch {
        #[arg(long)]
        token: String,
    },
    /// Prove a profile with real packets: in a replica of network
    /// namespaces holding its ruleset, every rule is probed from inside and
    /// outside its sources; exit 6 when a probe does not match.
    Probe {
        /// Profile name (e.g. vps-profile) or path to a .toml file.
        profile: String,
        /// Milliseconds a probe waits for an answer before it counts as
        /// filtered.
        #[arg(long, default_value_t = 400, value_name = "MS", value_parser = clap::value_parser!(u64).range(20..=10000))]
        wait_ms: u64,
    },
    /// Check a live host from this machine: every port the profile names
    /// must be reachable or not, as the profile says for a source in GROUP
    /// (this machine's address must be in GROUP); exit 6 on a mismatch.
    Scan {
        /// The host to scan (address or name).
        host: String,
        /// The profile the host is meant to hold.
        #[arg(long)]
        profile: String,
        /// The group this machine scans from (`any`: a source in no group).
        #[arg(long, value_name = "GROUP")]
        from: String,
        /// Milliseconds a probe waits for an answer.
        #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(20..=30000))]
        wait_ms: u64,
        /// Extra rounds for probes that saw no answer.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=5))]
        retries: u32,
        /// The host's interface the scan arrives on, for rules that name
        /// one (default: an interface no rule names).
        #[arg(long, value_name = "IFACE")]
        via: Option<String>,
        /// Ports the host publishes for containers (`6379/tcp`, `53/udp`;
        /// a bare number is TCP), comma-separated: their rows carry the
        /// containers chain's verdict.
        #[arg(long, value_name = "PORTS", value_delimiter = ',', value_parser = scan::published_port)]
        published: Vec<crate::probe::Service>,
        /// Also check ports the profile does not name, each closed or
        /// filtered as it says: `all` (TCP 1-65535), `top` (the 1,000 TCP
        /// and 1,000 UDP ports scanners try first, from nmap's list), or a
        /// list (`1-1024,8080,53/udp`; a bare port is TCP).
        #[arg(long, value_name = "PORTS")]
        ports: Option<String>,
        /// At most this many probes a second.
        #[arg(long, default_value_t = 10000, value_name = "PPS", value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
        rate: u32,
    },
    /// Write the man pages or the shell completions into DIR (packaging).
    #[command(hide = true)]
    Generate {
        what: generate::Artifact,
        dir: PathBuf,
    },
    /// Ban a source address: every packet from it is dropped until the
    /// timeout (or the `[bans]` default) runs out. Needs `[bans]` enabled.
    /// Refused (exit 4): your own SSH client, this host's addresses,
    /// loopback, unspecified, multicast, broadcast, exempt groups. An
    /// IPv4-mapped IPv6 address (::ffff:a.b.c.d) is banned as IPv4.
    /// While an apply is in progress it waits for it (at most 50 s).
    Ban {
        addr: std::net::IpAddr,
        /// 600, 90s, 10m, 1h or 7d.
        #[arg(long, value_name = "DURATION", value_parser = duration::arg(1, duration::YEAR))]
        timeout: Option<u64>,
        /// Ban it even if it is your SSH client, this host's, multicast,
        /// broadcast or exempt (never loopback or unspecified).
        #[arg(long)]
        force: bool,
    },
    /// Lift the ban of a source address.
    Unban { addr: std::net::IpAddr },
    /// Open a port to a source for a while: an element with a timeout in
    /// table inet fwharden, which the kernel removes on time even if every
    /// fwharden process dies; an apply keeps it with the time it has left.
    /// Refused (exit 4): longer than 7 days, `--from any` without
    /// `--yes-any`, a port the profile denies explicitly without `--force`,
    /// no table applied by fwharden.
    Open {
        /// PORT/PROTOCOL: 8080/tcp or 53/udp.
        port: crate::ruleset::openings::Port,
        /// A group of the applied profile, an address, a prefix, or `any`.
        #[arg(long, value_name = "GROUP|ADDR")]
        from: crate::ruleset::openings::OpenFrom,
        /// How long: 600, 90s, 10m, 1h or 7d (at most 7 days).
        #[arg(long = "for", value_name = "DURATION", value_parser = duration::arg(1, duration::YEAR))]
        for_: u64,
        /// `--from any` means the whole internet: say so twice.
        #[arg(long)]
        yes_any: bool,
        /// Open a port the profile denies explicitly.
        #[arg(long)]
        force: bool,
    },
    /// Close temporary openings of a port before their time: those from
    /// within GROUP|ADDR, or every one of the port.
    Close {
        /// PORT/PROTOCOL: 8080/tcp or 53/udp.
        port: crate::ruleset::openings::Port,
        /// Only the openings from within this group, address or prefix
        /// (`any`: all of them).
        #[arg(long, value_name = "GROUP|ADDR")]
        from: Option<crate::ruleset::openings::OpenFrom>,
    },
    /// List the bans, with the time each has left.
    Bans,
    /// The firewall's counters in Prometheus text format: packets and
    /// bytes per rule, named by the profile line it comes from; policy
    /// drops per chain; ban set sizes; the pending deadline; the last
    /// apply; drift. On stdout, into FILE (atomically, for
    /// node_exporter's textfile collector), or served over HTTP.
    Metrics {
        /// Write to FILE (a temporary file renamed over it) instead of stdout.
        #[arg(long, value_name = "FILE", conflicts_with = "listen")]
        output: Option<PathBuf>,
        /// Serve GET /metrics on ADDR:PORT (e.g. 127.0.0.1:9798), one
        /// request at a time, until stopped.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
    },
    /// The packets the loaded ruleset logs (rules with `log`, and
    /// `log_drops`), one line each: time, verdict, source, destination,
    /// protocol, port, interface, and the profile line that decided it.
    /// With `[defaults] nflog_group` they are read from NFLOG as they
    /// arrive; without it the ruleset logs to the kernel log, and they are
    /// read from the journal (`journalctl -k`), which keeps their history
    /// (--since).
    Log {
        /// Read until stopped, instead of for --seconds.
        #[arg(long)]
        follow: bool,
        /// Without --follow or --since, how long to read what arrives (10,
        /// 90s, 10m; at most 1d).
        #[arg(long, default_value = "10", value_name = "DURATION", value_parser = duration::arg(1, 86400))]
        seconds: u64,
        /// Stop after this many packets.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Only packets from this address or prefix.
        #[arg(long, value_name = "ADDR[/LEN]", value_parser = log_source)]
        from: Option<ipnet::IpNet>,
        /// Only packets to this port (TCP, UDP).
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
        /// Only packets of this rule: `vps-profile.toml:15`, a line number,
        /// or words of the rule.
        #[arg(long, value_name = "RULE")]
        rule: Option<String>,
        /// Instead of each packet, print at the end the top sources, ports
        /// and rules of the packets read; with --since, of the last
        /// DURATION (following: a sliding window, printed every 10
        /// seconds).
        #[arg(long)]
        summary: bool,
        /// The packets of the last DURATION (10m, 1h; at most 7d, and
        /// the newest 100,000 for --summary). Kernel log: read from the
        /// journal, then (--follow) what arrives. NFLOG keeps no history:
        /// only with --follow --summary, the window filling from when the
        /// command starts.
        #[arg(long, value_name = "DURATION", value_parser = duration::arg(1, 7 * 86400))]
        since: Option<u64>,
        /// Kernel log: read the journal in DIR (journalctl -D) instead of
        /// the system's.
        #[arg(long, value_name = "DIR")]
        journal_dir: Option<PathBuf>,
    },
    /// Write the profile in another firewall's format: nft text,
    /// iptables-restore files with ipset sets, or ufw commands and rules
    /// files (exit 4 when the format cannot express a rule exactly).
    Emit {
        /// Profile name (e.g. vps-profile) or path to a .toml file.
        profile: String,
        #[arg(long, value_enum)]
        format: emit::Format,
        /// Directory to write the files to (stdout when the format is one
        /// file and this is not given).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// Where the format cannot express a rule exactly, write the
        /// closest rule that lets no more through, with a warning, instead
        /// of refusing.
        #[arg(long)]
        approximate: bool,
    },
}

/// What a command ended with: its exit code. Errors that are not about a
/// profile travel as `anyhow::Error` and exit with [`exit::FAILURE`].
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let search = if cli.profile_dir.is_empty() {
        SearchPath::default()
    } else {
        SearchPath::only(cli.profile_dir.clone())
    };
    let dirs = Dirs {
        state: cli.state_dir.clone(),
        run: cli.run_dir.clone(),
    };
    match &cli.command {
        Command::List => list::run(&search, cli.json),
        Command::Check {
            profile,
            deny_warnings,
        } => check::run(&search, profile, *deny_warnings, cli.json),
        Command::Init { name, from, force } => edit::init(&search, name, from.as_deref(), *force),
        Command::Edit { name } => edit::edit(&search, &dirs, name),
        Command::Show {
            profile: Some(profile),
            ..
        } => show::run(&search, profile, cli.json),
        Command::Show {
            source: Some(name), ..
        } => show::source(&search, name, cli.json),
        Command::Show { pending: true, .. } => show::pending(&dirs, cli.json),
        Command::Show { .. } => show::loaded(cli.json),
        Command::Apply {
            profile,
            timeout,
            auto_confirm,
            force,
            dry_run,
            diff,
            no_probe,
            require_probe,
            test_break_probe,
        } => {
            // The operator's SSH client is looked for (the kernel's TCP
            // sockets, a walk up /proc: 3 ms) while the profile loads.
            let finding = std::thread::spawn(crate::sshclient::find);
            let opts = || ApplyOptions {
                timeout: *timeout,
                auto_confirm: *auto_confirm,
                force: *force,
                dry_run: *dry_run || *diff,
                operator: finding
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                proven: false,
            };
            let probe = match (*no_probe, *require_probe) {
                (true, _) => apply::ProbeMode::Skip,
                (false, true) => apply::ProbeMode::Require,
                (false, false) => apply::ProbeMode::WhereAvailable,
            };
            let probe = apply::Probing {
                mode: probe,
                break_for_test: test_break_probe.clone(),
            };
            let dry_run = *dry_run || *diff;
            apply::run(
                &search, &dirs, profile, dry_run, opts, &probe, *diff, cli.json,
            )
        }
        Command::Confirm { token } => safety::confirm(&dirs, token.as_deref(), cli.json),
        Command::Rollback { to } => match to.to {
            Some(pick) => history::rollback_to(&dirs, pick, to, cli.json),
            None => safety::rollback(&dirs, cli.json),
        },
        Command::History => history::list(&dirs, cli.json),
        Command::Disable { timeout } => disable::disable(&dirs, *timeout, cli.json),
        Command::Enable { timeout, no_probe } => {
            disable::enable(&dirs, *timeout, *no_probe, cli.json)
        }
        Command::Ban {
            addr,
            timeout,
            force,
        } => bans::ban(*addr, *timeout, *force, cli.json),
        Command::Unban { addr } => bans::unban(*addr, cli.json),
        Command::Open {
            port,
            from,
            for_,
            yes_any,
            force,
        } => open::open(
            &search,
            *port,
            from.clone(),
            *for_,
            *yes_any,
            *force,
            cli.json,
        ),
        Command::Close { port, from } => open::close(&search, *port, from.clone(), cli.json),
        Command::Bans => bans::list(cli.json),
        Command::Status { verify } => safety::status(&dirs, *verify, cli.json),
        Command::Restore => safety::restore(&dirs, cli.json),
        Command::Audit { profile } => audit::run(&search, profile.as_deref(), cli.json),
        Command::Watch { token } => safety::watch(&dirs, token),
        Command::Probe { profile, wait_ms } => probe::run(
            &search,
            profile,
            std::time::Duration::from_millis(*wait_ms),
            cli.json,
        ),
        Command::Scan {
            host,
            profile,
            from,
            wait_ms,
            retries,
            via,
            published,
            ports,
            rate,
        } => {
            let sweep = match ports.as_deref().map(scan::sweep).transpose() {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => {
                    eprintln!("fwharden: --ports: {e}");
                    return Ok(exit::USAGE);
                }
            };
            let opts = crate::probe::scan::ScanOptions {
                wait: std::time::Duration::from_millis(*wait_ms),
                retries: *retries,
                interface: via.clone(),
                published: published.clone(),
                sweep,
                rate: *rate,
            };
            scan::run(&search, host, profile, from, &opts, cli.json)
        }
        Command::Log {
            follow,
            seconds,
            count,
            from,
            port,
            rule,
            summary,
            since,
            journal_dir,
        } => {
            let filter = crate::observe::log::Filter {
                from: *from,
                port: *port,
                rule: rule.clone(),
            };
            let until = log::Until {
                follow: *follow,
                seconds: *seconds,
                count: *count,
                since: *since,
                journal_dir: journal_dir.clone(),
            };
            let output = match (summary, since) {
                (true, Some(secs)) => log::Output::Window(*secs),
                (true, None) if *follow => {
                    eprintln!("fwharden: log --follow --summary needs --since DURATION (the window to rank, e.g. 1h): following never ends to print a summary of everything");
                    return Ok(exit::USAGE);
                }
                (true, None) => log::Output::Summary,
                (false, _) => log::Output::Packets,
            };
            log::run(&dirs, &filter, &until, output, cli.json)
        }
        Command::Metrics { .. } if cli.json => {
            eprintln!(
                "fwharden: metrics prints Prometheus text, which has no JSON form; drop --json"
            );
            Ok(exit::USAGE)
        }
        Command::Metrics { output, listen } => metrics::run(&dirs, output.as_deref(), *listen),
        Command::Generate { what, dir } => generate::run(*what, dir),
        Command::Emit {
            profile,
            format,
            output,
            approximate,
        } => {
            let approx = if *approximate {
                crate::emit::Approximation::Stricter
            } else {
                crate::emit::Approximation::Refuse
            };
            emit::run(
                &search,
                profile,
                *format,
                output.as_deref(),
                approx,
                cli.json,
            )
        }
    }
}

/// `--from`: an address (a prefix of its full length) or a prefix.
fn log_source(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or prefix (192.0.2.7, 2001:db8::/32)"))
}

/// Loads a profile and prints its diagnostics to stderr (in JSON mode the
/// caller prints them). `profile` of the result is set when it is valid.
fn load_reporting(search: &SearchPath, spec: &str, json: bool) -> Loaded {
    load_reporting_with_memo(search, spec, json, None)
}

/// [`load_reporting`], with big list files remembered in `memo` once
/// parsed ([`profile::load_with_memo`]).
fn load_reporting_with_memo(
    search: &SearchPath,
    spec: &str,
    json: bool,
    memo: Option<&std::path::Path>,
) -> Loaded {
    let loaded = profile::load_with_memo(spec, search, memo);
    if !json {
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fwharden").chain(args.iter().copied()))
    }

    #[test]
    fn every_duration_option_takes_the_same_syntax() {
        match parse(&["apply", "p", "--timeout", "10m"]).unwrap().command {
            Command::Apply { timeout, .. } => assert_eq!(timeout, 600),
            _ => unreachable!(),
        }
        match parse(&["apply", "p"]).unwrap().command {
            Command::Apply { timeout, .. } => assert_eq!(timeout, 60, "the default"),
            _ => unreachable!(),
        }
        match parse(&["ban", "192.0.2.1", "--timeout", "7d"])
            .unwrap()
            .command
        {
            Command::Ban { timeout, .. } => assert_eq!(timeout, Some(604_800)),
            _ => unreachable!(),
        }
        match parse(&["log", "--seconds", "90s"]).unwrap().command {
            Command::Log { seconds, .. } => assert_eq!(seconds, 90),
            _ => unreachable!(),
        }
        for args in [
            &["apply", "p", "--timeout", "2d"][..],
            &["ban", "192.0.2.1", "--timeout", "10x"],
            &["log", "--seconds", "0"],
        ] {
            let err = parse(args).err().unwrap().to_string();
            assert!(err.contains("is not a duration from 1 second to"), "{err}");
            assert!(err.contains(duration::SYNTAX), "{err}");
        }
    }
}
