//! The replica's UDP answers: one thread echoes every datagram that
//! reaches a listening socket of the target or of the container.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Answers every datagram on the replica's UDP sockets with its own bytes,
/// on a thread of its own until dropped.
pub(super) struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub(super) fn start(sockets: Vec<UdpSocket>) -> UdpEcho {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                let mut fds: Vec<PollFd> = sockets
                    .iter()
                    .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                    .collect();
                // Short, so a drop is never kept waiting.
                if poll(&mut fds, PollTimeout::from(20u8)).is_err() {
                    continue;
                }
                let ready: Vec<usize> = (0..fds.len())
                    .filter(|&i| fds[i].revents().is_some_and(|r| !r.is_empty()))
                    .collect();
                drop(fds);
                for i in ready {
                    if let Ok((n, from)) = sockets[i].recv_from(&mut buf) {
                        let _ = sockets[i].send_to(&buf[..n], from);
                    }
                }
            }
        });
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
