//! Starting the watcher straight inside its own cgroup: clone3(2) with
//! `CLONE_INTO_CGROUP`.
//!
//! Moving a running process, by writing to `cgroup.procs`, takes the
//! kernel's cgroup threadgroup lock for writing, and that waits for an RCU
//! grace period: 10-25 ms measured here on a cgroup2 mount without
//! `favordynmods`, on the apply's path before its commit. A process born
//! in the group takes that lock only for reading. Linux 5.7 and later;
//! where clone3 is refused, the caller moves the process as before.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

/// `CLONE_INTO_CGROUP` (linux/sched.h); libc does not name it.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
}

/// Starts `argv` (`argv[0]` an absolute path) in a session of its own
/// (setsid), born in the cgroup whose directory is `group`, with stdin
/// from /dev/null and stdout and stderr appended to `log`; returns its
/// pid once it has exec'd. The child is not waited for: it outlives us.
pub fn spawn(group: &File, argv: &[OsString], log: &File) -> io::Result<u32> {
    // Everything the child touches is made here: between clone and exec it
    // may only make async-signal-safe system calls, no allocation.
    let args: Vec<CString> = argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv)
        })
        .collect::<io::Result<_>>()?;
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let null = File::open("/dev/null")?;
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (null_fd, log_fd, report_fd) =
        (null.as_raw_fd(), log.as_raw_fd(), report_write.as_raw_fd());
    let clone_args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: group.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with no CLONE_VM and no stack behaves as fork(2): the
    // child gets a copy of this address space, so every pointer above
    // stays valid in it. In the child only async-signal-safe calls run
    // (sigprocmask, setsid, dup2, execve, write, _exit) on values made
    // before the clone; it never returns from this block.
    let pid = unsafe {
        let pid = libc::syscall(
            libc::SYS_clone3,
            &clone_args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        );
        if pid == 0 {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let onto = |fd: libc::c_int, target: libc::c_int| {
                if fd == target {
                    libc::fcntl(fd, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, target) == target
                }
            };
            let ok = libc::setsid() >= 0 && onto(null_fd, 0) && onto(log_fd, 1) && onto(log_fd, 2);
            if ok {
                libc::execve(arg_ptrs[0], arg_ptrs.as_ptr(), env_ptrs.as_ptr());
            }
            let errno = *libc::__errno_location();
            libc::write(report_fd, (&errno as *const libc::c_int).cast(), 4);
            libc::_exit(127);
        }
        pid
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let pid = pid as u32;
    drop(report_write);
    // The report pipe closes on exec (O_CLOEXEC): nothing read means the
    // watcher runs; four bytes are the errno of what failed before.
    let mut report = File::from(report_read);
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match io::Read::read(&mut report, &mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    // It never ran: reap it rather than leave a zombie.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_args_has_the_kernels_second_size() {
        assert_eq!(std::mem::size_of::<CloneArgs>(), 88);
    }

    #[test]
    fn a_program_that_cannot_run_is_an_error_not_a_pid() {
        // The root group of a cgroup2 mount, if this test may create
        // processes in it: otherwise clone3 refuses, which is an error too.
        let Some(root) = super::super::placement::cgroup2_mount() else {
            return;
        };
        let group = File::open(&root).unwrap();
        let log = File::open("/dev/null").unwrap();
        let argv = [OsString::from("/nonexistent/fwharden")];
        assert!(spawn(&group, &argv, &log).is_err());
    }
}
