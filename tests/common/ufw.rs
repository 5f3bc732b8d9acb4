//! ufw over a configuration of its own, for the tests of `emit --format
//! ufw` (tests/emit_ufw.rs, tests/prop_profiles.rs): the machine's own ufw
//! files are never written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fwharden::profile::{load, SearchPath};

use super::cannot_run;
use fwharden::ruleset::Ruleset;

use super::{root, stderr, stdout};

/// Checksums of every file of the machine's own ufw configuration.
pub fn host_ufw_files() -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("cd / && find etc/ufw etc/default/ufw lib/ufw -type f 2>/dev/null | sort | xargs -r sha256sum")
        .output()
        .expect("sha256sum");
    stdout(&out)
}

/// Whether ufw is installed; its absence is a skip, with the CI rule of
/// [`cannot_run`].
pub fn have_ufw(test: &str) -> bool {
    if Path::new("/usr/sbin/ufw").exists() && Path::new("/lib/ufw/ufw-init").exists() {
        return true;
    }
    cannot_run(test, "ufw is missing; run scripts/deps");
    false
}

/// ufw with a configuration of its own: copies of the machine's ufw files
/// in a temporary directory, which every [`UfwSandbox::run`] bind-mounts
/// over the real paths in a private mount namespace. ufw's sysctl file is
/// an empty one (some of the settings it makes are not per network
/// namespace), and /run is an empty tmpfs (ufw's lock, xtables' lock).
/// The directory is removed when the sandbox is dropped; the mounts end
/// with the process that made them.
pub struct UfwSandbox {
    dir: tempfile::TempDir,
}

impl UfwSandbox {
    pub fn new() -> UfwSandbox {
        let dir = tempfile::Builder::new()
            .prefix("fwharden-ufw-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for (from, to) in [("/etc/ufw", "etc"), ("/lib/ufw", "lib")] {
            std::fs::create_dir(d.join(to)).unwrap();
            let cp = Command::new("cp")
                .args(["-a", &format!("{from}/."), d.join(to).to_str().unwrap()])
                .output()
                .unwrap();
            assert!(cp.status.success(), "cp {from}: {}", stderr(&cp));
        }
        std::fs::write(d.join("no-sysctl.conf"), "").unwrap();
        let default = std::fs::read_to_string("/etc/default/ufw").unwrap();
        let default: String = default
            .lines()
            .map(|l| {
                if l.starts_with("IPT_SYSCTL=") {
                    format!("IPT_SYSCTL={}\n", d.join("no-sysctl.conf").display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(d.join("default"), default).unwrap();
        UfwSandbox { dir }
    }

    /// Routed packets that pass ufw's before and user chains accepted, as
    /// on a Docker host, where Docker's own FORWARD rules (which run ahead
    /// of ufw's) accept a published port that DOCKER-USER let through. A
    /// probe replica has the DNAT of a published port but not Docker's
    /// accept: ufw's routed policy stands in for it.
    pub fn routed_like_docker(&self) {
        let path = self.default_file();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("DEFAULT_FORWARD_POLICY="), "{text}");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("DEFAULT_FORWARD_POLICY=") {
                    "DEFAULT_FORWARD_POLICY=\"ACCEPT\"\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(path, text).unwrap();
    }

    /// This sandbox's /etc/ufw.
    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// This sandbox's /etc/default/ufw.
    pub fn default_file(&self) -> PathBuf {
        self.dir.path().join("default")
    }

    /// `sh -c SCRIPT` with the sandbox's files in place, in the calling
    /// thread's network namespace (a thread inside a test namespace).
    pub fn run(&self, script: &str) -> Output {
        let d = self.dir.path().display();
        let inner = format!(
            "set -eu\n\
             mount --bind '{d}/etc' /etc/ufw\n\
             mount --bind '{d}/default' /etc/default/ufw\n\
             mount --bind '{d}/lib' /lib/ufw\n\
             mount -t tmpfs fwharden-ufw-run /run\n\
             {script}\n"
        );
        Command::new("timeout")
            .args(["120", "unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", &inner])
            .output()
            .expect("unshare")
    }

    /// Runs a script the emitter wrote, with no rollback timer; its error
    /// says what failed.
    pub fn load(&self, script: &Path) -> Result<(), String> {
        let out = self.run(&format!("sh '{}' --no-rollback", script.display()));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} exited with {}: {}{}",
                script.display(),
                out.status,
                stdout(&out),
                stderr(&out)
            ))
        }
    }
}

/// The profile's ruleset for a host without containers, as
/// `containers = "ignore"` would have it (ufw refuses the containers
/// chain: `a_profile_filtering_container_ports_is_refused`).
pub fn compiled(dir: &Path, name: &str) -> Ruleset {
    let mut r = with_containers(dir, name);
    r.chains.retain(|c| c.name != "containers");
    r
}

pub fn with_containers(dir: &Path, name: &str) -> Ruleset {
    let search = SearchPath::only(vec![dir.to_path_buf()]);
    let loaded = load(name, &search);
    let diags: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    fwharden::compile::compile(
        &loaded
            .profile
            .unwrap_or_else(|| panic!("{name} is not valid: {diags:?}")),
    )
}

pub fn shipped_ruleset(name: &str) -> Ruleset {
    compiled(&root().join("profiles"), name)
}
