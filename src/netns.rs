//! Network namespaces that fwharden creates and owns: the test harness's
//! throwaway hosts today, the replica namespace of self-probes later.
//!
//! The rule this module exists to enforce: firewall changes happen only in
//! a namespace this process created. A [`Netns`] is removed on drop, panic
//! included, and commands run "inside" one are checked to really be inside.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("creating network namespace {name} failed: {detail} (it needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN, and the `ip` command from iproute2)")]
    Create { name: String, detail: String },
    #[error("running `{command}` failed: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` in namespace {name} exited with {status}: {stderr}")]
    Failed {
        name: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("refusing to act: namespace {name} is not one this process created, or it is the machine's own network namespace")]
    NotOwned { name: String },
    #[error(
        "entering network namespace {name} failed: {source} (setns needs root or CAP_SYS_ADMIN)"
    )]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// A uniquely named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Creates `fwh-{tag}-{pid}-{n}` with its loopback up. `tag` is cut to
    /// keep the name short and plain.
    pub fn create(tag: &str) -> Result<Netns, NetnsError> {
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("fwh-{tag}-{}-{n}", std::process::id());
        // In process; what `add` could not do, `ip` may (or says why not).
        if add(&name).is_err() {
            let out = Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .map_err(|e| NetnsError::Create {
                    name: name.clone(),
                    detail: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(NetnsError::Create {
                    name,
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        // From here on, drop removes it whatever happens next.
        let ns = Netns { name };
        // In process, on a thread inside: another `ip` process (through
        // `ip netns exec`, which also remounts /sys) cost a probe several
        // milliseconds a namespace.
        ns.run_in(loopback_up)?
            .map_err(|source| NetnsError::Spawn {
                command: format!("setting lo up in {}", ns.name),
                source,
            })?;
        Ok(ns)
    }

    /// Deletes namespaces named by [`Netns::create`] with one of `tags`
    /// whose creating process is gone, and which are older than `age`: a
    /// process killed with SIGKILL never ran its drops. Both conditions
    /// must hold, so a namespace of a live process (or of another pid
    /// namespace, where the pid in the name means nothing here, but which
    /// is young while in use) is never touched.
    pub fn remove_stale(tags: &[&str], age: std::time::Duration) {
        let Ok(entries) = fs::read_dir("/run/netns") else {
            return;
        };
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let mut parts = name.split('-');
            let (Some("fwh"), Some(tag), Some(pid), Some(_), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            let gone = !PathBuf::from(format!("/proc/{pid}")).exists();
            if tags.contains(&tag) && gone && old {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Checks that the namespace is still ours and is not the one this
    /// process runs in (the machine's own, for a test or the CLI): the file
    /// `ip netns add` bind-mounted must name another network namespace.
    /// (PID 1's namespace is not always readable in a container, so this
    /// process's own is the reference.)
    pub fn verify(&self) -> Result<(), NetnsError> {
        let ino = |p: PathBuf| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        match (ino(self.path()), ino(PathBuf::from("/proc/self/ns/net"))) {
            (Some(ours), Some(own)) if ours != own => Ok(()),
            _ => Err(NetnsError::NotOwned {
                name: self.name.clone(),
            }),
        }
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and
    /// returns its result. This is how in-process netlink code is tested:
    /// the calling thread, and so the test runner, never changes namespace.
    ///
    /// Before `f` runs, the thread checks that its own network namespace
    /// (`/proc/thread-self/ns/net`) is this one and is neither the machine's
    /// (`/proc/1/ns/net`, when readable) nor the process's main namespace
    /// (`/proc/self/ns/net`, the thread-group leader's). If any check
    /// fails, `f` is not called. A panic in `f` is passed on to the caller.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        self.verify()?;
        let path = self.path();
        let name = self.name.clone();
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || -> Result<T, NetnsError> {
                let enter = |source| NetnsError::Enter {
                    name: name.clone(),
                    source,
                };
                let file = fs::File::open(&path).map_err(enter)?;
                // Only this thread moves: setns(2) changes the calling
                // thread's namespace, and the thread ends with `f`, so no
                // other code ever runs in the wrong namespace. CLONE_NEWNET
                // (unlike CLONE_NEWUSER or CLONE_NEWNS) is allowed from a
                // multithreaded process.
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| enter(e.into()))?;
                let ino = |p: &str| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
                let here = ino("/proc/thread-self/ns/net");
                let ours = fs::metadata(&path).map(|m| (m.dev(), m.ino())).ok();
                let machine = ino("/proc/1/ns/net");
                let process = ino("/proc/self/ns/net");
                let inside = here.is_some()
                    && here == ours
                    && here != process
                    && (machine.is_none() || here != machine);
                if !inside {
                    return Err(NetnsError::NotOwned { name: name.clone() });
                }
                Ok(f())
            });
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A command that runs `program` inside the namespace. Check
    /// [`Netns::verify`] first when the command changes a firewall;
    /// [`Netns::run`] does.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside, after checking the namespace is ours, and
    /// fails with its stderr unless it succeeds.
    pub fn run(&self, argv: &[&str]) -> Result<Output, NetnsError> {
        self.verify()?;
        let (program, args) = argv.split_first().expect("a command");
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|source| NetnsError::Spawn {
                command: argv.join(" "),
                source,
            })?;
        if !out.status.success() {
            return Err(NetnsError::Failed {
                name: self.name.clone(),
                command: argv.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out)
    }

    /// Runs `ip` commands inside, one per line without the leading `ip`
    /// (`link set lo up`), in one `ip -batch` process: a replica needs a few
    /// dozen and each process costs milliseconds. `ip -n` enters the
    /// namespace itself (setns), without remounting /sys as `ip netns exec`
    /// does. Stops at the first command that fails. `options` go before
    /// `-batch` (`-6` for `rule` commands of IPv6).
    pub fn ip_batch(&self, options: &[&str], lines: &[String]) -> Result<(), NetnsError> {
        use std::process::Stdio;
        self.verify()?;
        let command = format!("ip -n {} {} -batch -", self.name, options.join(" "));
        let spawn = |source| NetnsError::Spawn {
            command: command.clone(),
            source,
        };
        let mut child = Command::new("ip")
            .args(["-n", &self.name])
            .args(options)
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // `ip` exits at the first bad line: EPIPE, then its own message below.
        let written = crate::sigpipe::write_all(&mut stdin, (lines.join("\n") + "\n").as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(spawn)?;
        written.map_err(spawn)?;
        if !out.status.success() {
            return Err(NetnsError::Failed {
                name: self.name.clone(),
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Links two harness namespaces with a veth pair, addresses on both
    /// ends (`a_addr`/`b_addr` with prefix, e.g. "10.99.0.1/24"). Nothing
    /// is linked to the machine's own namespace: the pair is created inside
    /// `self` and one end moved straight into `other`.
    pub fn link(
        &self,
        other: &Netns,
        a_addrs: &[&str],
        b_addrs: &[&str],
    ) -> Result<(), NetnsError> {
        other.verify()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (format!("fwa{n}"), format!("fwb{n}"));
        self.run(&[
            "ip",
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &other.name,
        ])?;
        for (ns, dev, addrs) in [(self, &a, a_addrs), (other, &b, b_addrs)] {
            for addr in addrs {
                let mut argv = vec!["ip", "addr", "add", addr, "dev", dev];
                if addr.contains(':') {
                    // No duplicate address detection: the address is usable
                    // at once, and the test waits for nothing.
                    argv.push("nodad");
                }
                ns.run(&argv)?;
            }
            ns.run(&["ip", "link", "set", dev, "up"])?;
        }
        Ok(())
    }
}

/// Adds network namespace `name` as `ip netns add` does (iproute2's
/// netns_add), in process: a process for each of a probe's namespaces
/// cost it milliseconds. /run/netns is made a shared mount (bound onto
/// itself first when it is none), so that the namespace's mount reaches
/// other mount namespaces; the file is made, and a fresh thread unshares
/// its network namespace and bind-mounts it onto the file, then ends (it
/// runs nothing else in there). On failure nothing is left behind.
fn add(name: &str) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = std::path::Path::new("/run/netns");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if let Err(nix::errno::Errno::EINVAL) =
        mount(None::<&str>, dir, Some("none"), shared, None::<&str>)
    {
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(dir), dir, Some("none"), bind, None::<&str>)?;
        mount(None::<&str>, dir, Some("none"), shared, None::<&str>)?;
    }
    let path = dir.join(name);
    // (`create_new` wants write access; the file is never written.)
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)?;
    let bound = std::thread::scope(|scope| {
        scope
            .spawn(|| -> std::io::Result<()> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
                let own = "/proc/thread-self/ns/net";
                mount(
                    Some(own),
                    &path,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread panicked")))
    });
    if bound.is_err() {
        let _ = fs::remove_file(&path);
    }
    bound
}

/// Sets the loopback interface of the calling thread's network namespace
/// up, as `ip link set lo up` does (SIOCSIFFLAGS with IFF_UP added).
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) takes no pointers; a descriptor it returns is owned
    // by `sock` alone and closed with it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns (above).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data (a name and a union of integers and
    // addresses): all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name of `req`, which
    // lives across the call, and writes its ifru_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled ifru_flags just above; reading and setting
    // that member of the union is what SIOCSIFFLAGS reads back.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as for SIOCGIFFLAGS; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its interfaces (veth peers too)
        // and its firewall. Processes still inside keep it alive, so
        // callers end theirs first. In process, what `ip netns del` does
        // (iproute2's delete_namespace: a lazy unmount of the file, then
        // unlink), without a process for each namespace; `ip` is the way
        // left when that fails.
        let path = self.path();
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        if fs::remove_file(&path).is_err() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }
}
