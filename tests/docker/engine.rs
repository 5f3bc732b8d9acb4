//! A real Docker daemon (Debian's `docker.io`) inside a test namespace.
//!
//! containerd and dockerd run in the test's network namespace, entered with
//! `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the
//! cgroups from dockerd), and in a private mount namespace: a tmpfs over
//! /run and a temporary directory over /etc/docker take what dockerd writes
//! outside its `--exec-root` and `--data-root` (its plugin directory, its
//! key.json), and every mount the daemons make dies with them. Their roots,
//! state, sockets and pid files are under one temporary directory, and the
//! containers' cgroups under one parent named after it.
//!
//! [`Engine`]'s drop removes the containers, stops the daemons by their own
//! pids (then whatever process still names the directory: the shims), and
//! removes the cgroups and the directory, panic included.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fwharden::netns::Netns;

use crate::common::{cannot_run, kill_all_naming, wait_until};

const DOCKERD: &str = "/usr/sbin/dockerd";
const CONTAINERD: &str = "/usr/bin/containerd";
/// Debian's client, of the daemon's version (another `docker` may come
/// first in PATH).
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/usr/bin/busybox";
/// The image every test container runs: busybox-static and its applets.
pub const IMAGE: &str = "fwh-busybox:1";

/// Whether Docker can run here; a missing Docker is a skip, with the CI
/// rule of [`cannot_run`].
pub fn have_docker(test: &str) -> bool {
    let missing: Vec<&str> = [DOCKERD, CONTAINERD, DOCKER, BUSYBOX]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} missing; run scripts/deps (docker.io, busybox-static)",
        missing.join(", ")
    );
    cannot_run(test, &why);
    false
}

pub struct Engine {
    dir: tempfile::TempDir,
    netns: PathBuf,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    /// More dockerd flags, kept for a restart.
    flags: Vec<String>,
}

/// The flags that make Debian's docker.io 20.10 publish ports over IPv6 by
/// ip6tables DNAT, as it does over IPv4: `--ipv6` with a subnet for the
/// default bridge gives containers IPv6 addresses, and `--ip6tables`
/// (experimental in 20.10, hence `--experimental`) writes the ip6tables
/// NAT and filter chains; without it an IPv6 published port would be left
/// to the userland proxy, which `--userland-proxy=false` turns off.
#[allow(dead_code)]
pub const IPV6_FLAGS: &[&str] = &[
    "--ipv6",
    "--fixed-cidr-v6=fd00:d0c::/64",
    "--experimental",
    "--ip6tables",
];

impl Engine {
    /// Starts containerd and dockerd inside `ns` and imports [`IMAGE`].
    /// (tests/docker_ipv6.rs starts with flags only.)
    #[allow(dead_code)]
    pub fn start(ns: &Netns) -> Engine {
        Engine::start_with(ns, &[])
    }

    /// Like [`Engine::start`], with more dockerd flags (e.g. [`IPV6_FLAGS`]),
    /// which a restart keeps.
    pub fn start_with(ns: &Netns, flags: &[&str]) -> Engine {
        ns.verify().expect("a namespace this test created");
        let dir = tempfile::Builder::new()
            .prefix("fwh-docker-")
            .tempdir()
            .expect("tempdir");
        let mut e = Engine {
            dir,
            netns: PathBuf::from("/run/netns").join(ns.name()),
            containerd: None,
            dockerd: None,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        e.start_containerd();
        e.start_dockerd();
        e.import_image();
        e
    }

    /// The daemon's API socket (for a client other than `docker`).
    /// tests/docker.rs does not ask it, tests/audit_docker.rs does.
    #[allow(dead_code)]
    pub fn socket(&self) -> PathBuf {
        self.path("docker.sock")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn needle(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    /// The cgroup parent of the containers, one per engine.
    fn cgroup(&self) -> String {
        self.dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn log(&self, name: &str) -> Stdio {
        fs::File::create(self.path(name)).expect("log file").into()
    }

    fn start_containerd(&mut self) {
        fs::create_dir_all(self.path("etc-docker")).unwrap();
        // No CRI (Kubernetes), and the `opt` plugin's directory here, not
        // under /var/lib/containerd.
        fs::write(
            self.path("containerd.toml"),
            format!(
                "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\npath = \"{}\"\n",
                self.path("opt").display()
            ),
        )
        .unwrap();
        let script = format!(
            "set -e; mount -t tmpfs fwh-run /run; mount --bind {etc} /etc/docker; \
             exec {CONTAINERD} --config {cfg} --root {root} --state {state} --address {sock} --log-level warn",
            etc = self.path("etc-docker").display(),
            cfg = self.path("containerd.toml").display(),
            root = self.path("containerd-root").display(),
            state = self.path("containerd-state").display(),
            sock = self.path("containerd.sock").display(),
        );
        // nsenter, unshare and sh each exec the next: the child's pid is
        // containerd's.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(self.log("containerd.log"))
            .stderr(self.log("containerd.log"))
            .spawn()
            .expect("start containerd");
        self.containerd = Some(child);
        let sock = self.path("containerd.sock");
        assert!(
            wait_until(Duration::from_secs(20), || sock.exists()),
            "containerd did not start: {}",
            self.read("containerd.log")
        );
        self.assert_inside(self.containerd.as_ref().unwrap().id());
    }

    /// (Re)starts dockerd in containerd's namespaces, so it sees the same
    /// private mounts.
    pub fn start_dockerd(&mut self) {
        let cpid = self.containerd.as_ref().unwrap().id();
        let _ = fs::remove_file(self.path("docker.sock"));
        let child = Command::new("nsenter")
            .args(["-t", &cpid.to_string(), "--net", "--mount", DOCKERD])
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("dockerd.pid"))
            .arg(format!(
                "--host=unix://{}",
                self.path("docker.sock").display()
            ))
            .arg(format!(
                "--containerd={}",
                self.path("containerd.sock").display()
            ))
            .arg(format!("--cgroup-parent=/{}", self.cgroup()))
            // --iptables=true writes Docker's DNAT and filter chains (as
            // nf_tables tables, through iptables-nft); no userland proxy, so
            // a published port is reachable only through the DNAT.
            .args([
                "--iptables=true",
                "--userland-proxy=false",
                "--storage-driver=vfs",
            ])
            .args(&self.flags)
            .args(["--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(self.log("dockerd.log"))
            .stderr(self.log("dockerd.log"))
            .spawn()
            .expect("start dockerd");
        self.dockerd = Some(child);
        assert!(
            wait_until(Duration::from_secs(60), || self
                .docker(&["info", "--format", "{{.ServerVersion}}"])
                .status
                .success()),
            "dockerd did not start: {}",
            self.read("dockerd.log")
        );
        self.assert_inside(self.dockerd.as_ref().unwrap().id());
    }

    /// Stops dockerd by its pid (SIGTERM, as an init system would) and waits
    /// for it; containers stop with it and come back with `--restart always`.
    pub fn stop_dockerd(&mut self) {
        if let Some(child) = self.dockerd.take() {
            stop(child, Duration::from_secs(30));
        }
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The daemon must be in the test's namespace, never the machine's.
    fn assert_inside(&self, pid: u32) {
        let ino = |p: PathBuf| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        let theirs = ino(PathBuf::from(format!("/proc/{pid}/ns/net")));
        assert!(
            theirs.is_some() && theirs == ino(self.netns.clone()),
            "daemon {pid} is not in the test namespace"
        );
    }

    /// Runs the Docker client against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("120")
            .arg(DOCKER)
            .arg(format!(
                "--host=unix://{}",
                self.path("docker.sock").display()
            ))
            .args(args)
            .output()
            .expect("run docker")
    }

    /// Like [`Engine::docker`]; fails the test unless it succeeds.
    pub fn expect(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\ndockerd: {}",
            String::from_utf8_lossy(&out.stderr),
            self.read("dockerd.log")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// No registry is reachable: the image is a tar of busybox-static as
    /// /bin/busybox plus the applets the tests use, through `docker import`.
    fn import_image(&self) {
        let root = self.path("image");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "nc", "echo", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.path("image.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.expect(&["import", &tar.to_string_lossy(), IMAGE]);
    }

    /// Runs a container that answers `hello` on TCP `port` inside it, with
    /// `publish` as its `-p` arguments (`HOST:CONTAINER`).
    pub fn run_listener(&self, name: &str, port: u16, publish: &[&str]) {
        let port = port.to_string();
        let mut args = vec!["run", "-d", "--restart=always", "--name", name];
        for p in publish {
            args.extend(["-p", p]);
        }
        args.extend([
            IMAGE,
            "/bin/busybox",
            "nc",
            "-ll",
            "-p",
            &port,
            "-e",
            "/bin/echo",
            "hello",
        ]);
        self.expect(&args);
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
fn stop(mut child: Child, grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let exited = wait_until(grace, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.dockerd.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop_dockerd();
        if let Some(child) = self.containerd.take() {
            stop(child, Duration::from_secs(10));
        }
        // The shims and anything else started with the directory's paths.
        kill_all_naming(&self.needle());
        // Deepest first: a cgroup directory goes only when empty.
        let cgroup = self.cgroup();
        if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
            for c in controllers.flatten() {
                remove_cgroup_tree(&c.path().join(&cgroup));
            }
        }
        remove_cgroup_tree(&PathBuf::from("/sys/fs/cgroup").join(&cgroup));
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
}
