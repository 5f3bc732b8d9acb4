//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod journald;
pub mod prom;
pub mod readme;
pub mod sshd;
pub mod ufw;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The inode of the network namespace the tests run in: the machine's own.
pub fn own_netns() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino().to_string())
        .expect("/proc/self/ns/net")
}

/// The fwharden binary built for these tests. It carries the interlock:
/// fwharden refuses to change the firewall of the namespace the tests run
/// in, so only a command run inside a test namespace can change one.
pub fn fwharden() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fwharden"));
    c.current_dir(root());
    c.env(fwharden::rollback::FORBID_ENV, own_netns());
    c
}

/// Runs fwharden with `--profile-dir profiles` (the shipped profiles only).
pub fn shipped(args: &[&str]) -> Output {
    fwharden()
        .args(["--profile-dir", "profiles"])
        .args(args)
        .output()
        .expect("run fwharden")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The one CI rule of the tests: `test` cannot run here because of `why`.
/// Under CI=true that is a failure (a skipped test there would hide one);
/// elsewhere the skip is said loudly. Callers return false after it, so
/// a check reads `if !have_x(test) { return; }`.
pub fn cannot_run(test: &str, why: &str) {
    if under_ci() {
        panic!("{test}: {why} (CI=true: a skip is a failure)");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: {why} !!!!!!!!\n");
}

/// What a test needing root lacks here: `None` when it is root and has
/// `ip` and `nft` (network namespaces and nf_tables inside them).
fn missing_for_root() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("`ip` (iproute2) is missing; run scripts/deps")
    } else if Command::new("nft").arg("--version").output().is_err() {
        Some("`nft` is missing; run scripts/deps")
    } else {
        None
    }
}

/// The first line of every test needing root and network namespaces,
/// which is marked `#[ignore = "needs root"]`: a plain `cargo test` counts
/// it as ignored, and scripts/test runs it as root with
/// `--include-ignored`. Run without root all the same, it fails here with
/// the reason rather than passing without having run.
pub fn needs_root(test: &str) {
    if let Some(why) = missing_for_root() {
        panic!(
            "{test}: needs root, network namespaces and nft, but {why}; \
             run it as root (scripts/test), or leave out --include-ignored"
        );
    }
}

/// Whether every file of `paths` (the programs a test runs) is there;
/// same CI rule as [`privileged`].
pub fn have_files(test: &str, paths: &[&str]) -> bool {
    let missing: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    cannot_run(test, &format!("{missing:?} missing; run scripts/deps"));
    false
}

/// A child process killed (by its own pid) when dropped, panic included.
pub struct Killed(pub std::process::Child);

impl Killed {
    /// SIGKILLs it now and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The check of tests written before `#[ignore = "needs root"]`: whether
/// a test needing root and network namespaces can run here, with the CI
/// rule of [`cannot_run`]. New tests use `#[ignore = "needs root"]` and
/// [`needs_root`] instead, so that a skip is counted as one.
pub fn privileged(test: &str) -> bool {
    match missing_for_root() {
        None => true,
        Some(why) => {
            cannot_run(
                test,
                &format!("needs root, network namespaces and nft; {why}"),
            );
            false
        }
    }
}

/// Whether `nft -c` can run here: it needs CAP_NET_ADMIN (nft reads the
/// kernel's ruleset to evaluate a file) and, by the tests' safety rules,
/// a namespace of the test's own, so it needs what [`privileged`] checks.
/// New tests are root tests instead (see [`needs_root`]).
pub fn have_nft(test: &str) -> bool {
    privileged(test)
}

/// `nft -c -f`, which parses and evaluates a ruleset without loading it,
/// run inside a namespace of its own: never in the machine's own one, not
/// even to check. Needs root (see [`needs_root`]).
pub struct NftCheck {
    ns: Netns,
}

impl NftCheck {
    pub fn new() -> NftCheck {
        let ns = Netns::create("nftc").expect("create a namespace for nft -c");
        NftCheck { ns }
    }

    /// `nft -c` of `text`.
    pub fn text(&self, text: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ruleset.nft");
        std::fs::write(&path, text).expect("write ruleset");
        self.file(&path)
    }

    /// `nft -c` of the file at `path`.
    pub fn file(&self, path: &Path) -> Result<(), String> {
        self.ns.verify().map_err(|e| e.to_string())?;
        let out = self
            .ns
            .command("nft")
            .arg("-c")
            .arg("-f")
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// `argv` run in a network namespace of its own, made for this one
/// command and gone when it exits (`unshare --net`; as a user without
/// root, inside a user namespace of its own too). nft's dry run (`nft -c`)
/// still talks to nf_tables: the kernel inserts the table for the length
/// of the transaction, where every reader of that namespace sees it. In
/// the machine's own namespace that is a phantom table for monitoring
/// agents and for the tests' own before/after check of the host.
pub fn throwaway_netns(argv: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    if !nix::unistd::geteuid().is_root() {
        c.arg("--map-root-user");
    }
    c.arg("--net").arg("--").args(argv);
    c
}

/// `nft -c` of `text` in a namespace made for this one check (see
/// [`NftCheck`]; a loop checking many makes one and reuses it).
pub fn nft_check(text: &str) -> Result<(), String> {
    NftCheck::new().text(text)
}

/// `nft -c` of the file at `path`, like [`nft_check`].
pub fn nft_check_file(path: &Path) -> Result<(), String> {
    NftCheck::new().file(path)
}

/// The tables of the machine's own namespace, read only, to prove tests
/// leave them alone.
pub fn host_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft list tables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------
// fwharden inside a harness namespace: apply, confirm, rollback, restore.
// ---------------------------------------------------------------------

use std::ffi::OsString;
use std::time::{Duration, Instant};

use fwharden::netns::Netns;

/// fwharden's own arguments for a host whose state is under `dir`
/// (`dir/state`, `dir/run`, never the system's), with the shipped profiles
/// only.
pub fn fw_args(dir: &Path) -> Vec<OsString> {
    vec![
        "--state-dir".into(),
        dir.join("state").into(),
        "--run-dir".into(),
        dir.join("run").into(),
        "--profile-dir".into(),
        "profiles".into(),
    ]
}

/// The whole argv of [`fw_in`], for wrapping in another command (a shell,
/// setpriv): `ip netns exec NS fwharden ARGS`. `ip netns exec` execs
/// fwharden in place, so the pid of the spawned process is fwharden's.
pub fn fw_argv(ns: &Netns, dir: &Path) -> Vec<OsString> {
    ns.verify().expect("a namespace this test created");
    let mut argv: Vec<OsString> = ["ip", "netns", "exec", ns.name()]
        .iter()
        .map(OsString::from)
        .collect();
    argv.push(env!("CARGO_BIN_EXE_fwharden").into());
    argv.extend(fw_args(dir));
    argv
}

/// Sets what every fwharden a test starts must carry: the interlock (the
/// machine's own namespace is refused), the repository root as working
/// directory, and no SSH variables of whoever runs the tests (the lockout
/// guard would read them).
pub fn harness_env(c: &mut Command) -> &mut Command {
    c.current_dir(root())
        .env(fwharden::rollback::FORBID_ENV, own_netns())
        .env_remove("SSH_CONNECTION")
        .env_remove("SSH_CLIENT")
        .env_remove("FWHARDEN_STATE_DIR")
        .env_remove("FWHARDEN_RUN_DIR")
}

/// fwharden inside `ns`, state under `dir` (see [`fw_argv`]), with the
/// harness environment.
pub fn fw_in(ns: &Netns, dir: &Path) -> Command {
    ns.verify().expect("a namespace this test created");
    let mut c = ns.command(env!("CARGO_BIN_EXE_fwharden"));
    c.args(fw_args(dir));
    harness_env(&mut c);
    c
}

/// A TCP listener on `port` of every IPv4 address in `ns`, open until
/// dropped.
pub fn listen_in(ns: &Netns, port: u16) -> std::net::TcpListener {
    listen_at(ns, "0.0.0.0", port)
}

/// A TCP listener on `addr`:`port` in `ns`, open until dropped.
pub fn listen_at(ns: &Netns, addr: &str, port: u16) -> std::net::TcpListener {
    let addr: std::net::IpAddr = addr.parse().expect("an address");
    ns.run_in(|| std::net::TcpListener::bind((addr, port)))
        .expect("enter the namespace")
        .expect("bind the listener")
}

/// Whether a new TCP connection from `from` reaches `to`:`port` within
/// `wait` (a dropped SYN is only ever told by waiting).
pub fn connects_to(from: &Netns, to: &str, port: u16, wait: Duration) -> bool {
    let addr = std::net::SocketAddr::new(to.parse().expect("an address"), port);
    from.run_in(|| std::net::TcpStream::connect_timeout(&addr, wait).is_ok())
        .expect("enter a peer namespace")
}

/// Polls `f` every 20 ms until it is true or `limit` has passed.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of the processes whose command line contains `needle`.
pub fn pids_naming(needle: &str) -> Vec<i32> {
    let mut pids = vec![];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether process `pid` runs and its command line contains `needle` (a
/// zombie has an empty one): guards a kill against a recycled pid.
pub fn alive_naming(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
}

/// SIGKILLs every process naming `needle` and waits (bounded) until none is
/// left.
pub fn kill_all_naming(needle: &str) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    wait_until(Duration::from_secs(10), || {
        let pids = pids_naming(needle);
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        pids.is_empty()
    });
}

/// A throwaway host for fwharden: a harness namespace and temporary state
/// and run directories. Dropped, panic included, it first kills every
/// process whose command line names its directory (the applies a test
/// started and their detached watchers, which would outlive the namespace
/// and keep it alive), then deletes the namespace and the directories.
pub struct Host {
    pub ns: Netns,
    dir: tempfile::TempDir,
}

impl Host {
    pub fn new(tag: &str) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("fwharden-test-")
            .tempdir()
            .expect("tempdir");
        let ns = Netns::create(tag).expect("create a harness namespace");
        Host { ns, dir }
    }

    /// A namespace linked to this host by a veth pair only: `host_addrs`
    /// on the host's end, `peer_addrs` on the peer's (each with its prefix
    /// length). Deleted when dropped.
    pub fn peer(&self, tag: &str, host_addrs: &[&str], peer_addrs: &[&str]) -> Netns {
        let peer = Netns::create(tag).expect("create a peer namespace");
        self.ns
            .link(&peer, host_addrs, peer_addrs)
            .expect("link the peer to the host");
        peer
    }

    /// The directory holding `state/` and `run/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// A string every process of this host has on its command line.
    pub fn needle(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    /// fwharden inside this host.
    pub fn fw(&self) -> Command {
        fw_in(&self.ns, self.dir.path())
    }

    /// Holds the apply lock as another fwharden would, until dropped.
    pub fn hold_lock(&self) -> nix::fcntl::Flock<std::fs::File> {
        use std::io::Write;
        std::fs::create_dir_all(self.run_dir()).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.run_dir().join("apply.lock"))
            .unwrap();
        let mut lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        write!(lock, "{}", std::process::id()).unwrap();
        lock
    }

    /// Like [`Host::expect`], with profiles looked up only in `profiles`.
    pub fn expect_in(&self, profiles: &Path, code: i32, args: &[&str]) -> Output {
        let dir = ["--profile-dir", profiles.to_str().unwrap()];
        self.expect(code, &[&dir[..], args].concat())
    }

    /// Applies `profile` from the directory `profiles`, confirmed at once
    /// and without the probe: a set-up step, not what a test looks at.
    pub fn confirm_from(&self, profiles: &Path, profile: &str) {
        let args = ["apply", profile, "--auto-confirm", "--no-probe"];
        self.expect_in(profiles, 0, &args);
    }

    /// Emits `profile` from `profiles` for iptables and loads the files
    /// with their load.sh in this host (the directory lives as long as
    /// the returned guard).
    pub fn load_emitted(&self, profiles: &Path, profile: &str) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        let (pdir, odir) = (profiles.to_str().unwrap(), out.path().to_str().unwrap());
        self.expect(
            0,
            &[
                "--profile-dir",
                pdir,
                "emit",
                profile,
                "--format",
                "iptables",
                "--output",
                odir,
            ],
        );
        self.sh(&["sh", &format!("{odir}/load.sh"), "--no-rollback"]);
        out
    }

    /// The time left of `addr` in ipset `set`, if it is in it.
    pub fn ipset_timeout(&self, set: &str, addr: &str) -> Option<u64> {
        let listed = self.sh(&["ipset", "list", set]);
        listed.lines().find_map(|l| {
            l.strip_prefix(&format!("{addr} timeout "))
                .and_then(|t| t.trim().parse().ok())
        })
    }

    /// `bans --json`'s entry for `addr`, if it is banned.
    pub fn ban_of(&self, addr: &str) -> Option<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_slice(&self.expect(0, &["--json", "bans"]).stdout).unwrap();
        v["bans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["addr"] == addr)
            .cloned()
    }

    /// Runs fwharden inside this host to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.fw().args(args).output().expect("run fwharden")
    }

    /// Runs fwharden inside and fails the test unless it exits with `code`.
    pub fn expect(&self, code: i32, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "fwharden {args:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    /// Runs a command inside this host's namespace; fails the test unless
    /// it succeeds.
    pub fn sh(&self, argv: &[&str]) -> String {
        stdout(&self.ns.run(argv).expect("command inside the namespace"))
    }

    /// `nft list table inet fwharden` inside, or `None` without the table.
    pub fn table(&self) -> Option<String> {
        self.ns.verify().expect("our namespace");
        let out = self
            .ns
            .command("nft")
            .args(["list", "table", "inet", "fwharden"])
            .output()
            .expect("run nft");
        out.status.success().then(|| stdout(&out))
    }

    /// The table inside, failing the test when there is none.
    pub fn table_text(&self) -> String {
        self.table().expect("table inet fwharden exists")
    }

    /// A record fwharden wrote, out of its digest's envelope.
    fn record(&self, name: &str) -> Option<serde_json::Value> {
        let text = std::fs::read(self.state_dir().join(name)).ok()?;
        let file: serde_json::Value =
            serde_json::from_slice(&text).expect("a record fwharden wrote");
        Some(file.get("record").cloned().unwrap_or(file))
    }

    /// The pending record, if any.
    pub fn pending(&self) -> Option<serde_json::Value> {
        self.record("pending.json")
    }

    /// The confirmed record, if any.
    pub fn confirmed(&self) -> Option<serde_json::Value> {
        self.record("confirmed.json")
    }

    /// `status --json`, which must succeed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.expect(0, &["--json", "status"]);
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// Applies and confirms `profile`; returns the kernel's text of it.
    pub fn confirm_profile(&self, profile: &str) -> String {
        self.expect(0, &["apply", profile, "--auto-confirm"]);
        self.table_text()
    }

    /// Applies `profile` with a rollback timer of `timeout` seconds; returns
    /// the `--json` outcome (state "pending", deadline_ms, token, watcher).
    pub fn apply_pending(&self, profile: &str, timeout: u64) -> serde_json::Value {
        let t = timeout.to_string();
        let out = self.expect(0, &["--json", "apply", profile, "--timeout", &t]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("apply --json");
        assert_eq!(v["state"], "pending", "{v}");
        v
    }

    /// The pid of the pending apply's watcher, checked to be one of ours.
    pub fn watcher_pid(&self) -> i32 {
        let p = self.pending().expect("a pending apply");
        let pid = p["watcher"].as_i64().expect("a watcher pid") as i32;
        assert!(
            alive_naming(pid, &self.needle()),
            "watcher {pid} is not running"
        );
        pid
    }

    /// SIGKILLs the pending apply's watcher and waits until it is gone.
    /// Its cgroup, which it cannot remove now, is removed here.
    pub fn kill_watcher(&self) {
        let pid = self.watcher_pid();
        let groups = watcher_groups(&[pid]);
        let _remove = RemoveGroups(groups);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(
            wait_until(Duration::from_secs(10), || !alive_naming(
                pid,
                &self.needle()
            )),
            "watcher {pid} survived SIGKILL"
        );
    }

    /// Waits (bounded) until no process of this host runs: the watcher of
    /// an apply confirmed at once exits at its next look at the record.
    pub fn wait_quiet(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.processes().is_empty()),
            "processes of this host still run: {:?}",
            self.processes()
        );
    }

    /// Whether any process of this host (apply or watcher) still runs.
    pub fn processes(&self) -> Vec<i32> {
        pids_naming(&self.needle())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Watchers first: they survive the namespace's deletion and would
        // keep it alive; then the fields go, the namespace before the
        // directories. A watcher killed here cannot remove its own cgroup:
        // note the groups first, remove them once their processes are gone.
        let groups = watcher_groups(&self.processes());
        kill_all_naming(&self.needle());
        remove_groups(&groups);
    }
}

/// The cgroup v2 directories of the watchers among `pids` (their own
/// `fwharden-watch-*` groups).
pub fn watcher_groups(pids: &[i32]) -> Vec<PathBuf> {
    use fwharden::rollback::placement;
    let Some(mount) = placement::cgroup2_mount() else {
        return vec![];
    };
    pids.iter()
        .filter_map(|p| placement::v2_group_of(&p.to_string()))
        .filter(|g| g.starts_with("/fwharden-watch-"))
        .map(|g| mount.join(g.trim_start_matches('/')))
        .collect()
}

/// Removes the groups it holds when dropped (panic included).
struct RemoveGroups(Vec<PathBuf>);

impl Drop for RemoveGroups {
    fn drop(&mut self) {
        remove_groups(&self.0);
    }
}

/// Removes empty cgroups, waiting (bounded) for the kernel to let go of
/// processes just killed.
pub fn remove_groups(groups: &[PathBuf]) {
    for g in groups {
        wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(g).is_ok() || !g.exists()
        });
    }
}

/// What the real `nft -f` of `fwharden show PROFILE` leaves in a fresh
/// namespace, listed by `nft list table inet fwharden`: the reference an
/// apply must read back as.
pub fn reference_text(profile: &str) -> String {
    let shown = shipped(&["show", profile]);
    assert!(shown.status.success(), "show {profile}: {}", stderr(&shown));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{profile}.nft"));
    std::fs::write(&file, &shown.stdout).expect("write ruleset");
    let ns = Netns::create("ref").expect("create a reference namespace");
    ns.run(&["nft", "-f", file.to_str().expect("utf-8 path")])
        .expect("nft -f loads fwharden show");
    stdout(
        &ns.run(&["nft", "list", "table", "inet", "fwharden"])
            .expect("nft list"),
    )
}

/// The shipped profile names, sorted.
pub fn shipped_profiles() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("profiles"))
        .expect("profiles/")
        .map(|e| e.expect("profiles/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().expect("name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Milliseconds since the epoch, the clock of `deadline_ms`.
pub fn now_ms() -> u64 {
    fwharden::state::now_ms()
}
