//! Progress of a long apply, for a person watching a terminal.
//!
//! Most applies take a few tens of milliseconds and print nothing here. One
//! that runs past [`QUIET_FOR`] (a million-prefix list, a slow probe)
//! shows one line on stderr that it keeps rewriting: the phase it is in
//! and the time so far; at the end, the time each phase took. Nothing is shown
//! when stderr is not a terminal (Ansible, a postinst, a pipe) or with
//! `--json`: [`start`] is only called by the command line, after it has
//! checked both. Lower layers only name their phases ([`phase`]), which
//! costs nothing when no one watches.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an apply runs before its progress is shown.
pub const QUIET_FOR: Duration = Duration::from_secs(1);

/// For the test suite: show progress after this many milliseconds instead.
pub const QUIET_ENV: &str = "FWHARDEN_PROGRESS_AFTER_MS";

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(200);

struct State {
    started: Instant,
    /// The current phase and when it began.
    current: Option<(&'static str, Instant)>,
    /// Phases done, with how long each took.
    done: Vec<(&'static str, Duration)>,
    shown: bool,
}

static ACTIVE: Mutex<Option<Arc<Mutex<State>>>> = Mutex::new(None);
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether progress may be shown: stderr is a terminal and the output is
/// not JSON.
pub fn wanted(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// Starts watching; the returned guard ends it (and clears the line).
pub fn start() -> Guard {
    let quiet = std::env::var(QUIET_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(QUIET_FOR, Duration::from_millis);
    let state = Arc::new(Mutex::new(State {
        started: Instant::now(),
        current: None,
        done: Vec::new(),
        // A threshold of zero shows the line from the first phase on, not
        // from the first tick, which a short apply may never see.
        shown: quiet.is_zero(),
    }));
    *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
    STOP.store(false, Ordering::SeqCst);
    let ticker = std::thread::spawn(move || {
        while !STOP.load(Ordering::SeqCst) {
            // Parked, not asleep: the guard's drop unparks it, so an apply
            // does not wait up to a tick for its ticker to end.
            std::thread::park_timeout(TICK);
            if STOP.load(Ordering::SeqCst) {
                break;
            }
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if s.started.elapsed() >= quiet {
                s.shown = true;
                draw(&s);
            }
        }
    });
    Guard {
        ticker: Some(ticker),
    }
}

/// Enters phase `name` ("compiling", "transaction", ...). Without a watch
/// running, does nothing.
pub fn phase(name: &'static str) {
    let Some(state) = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    if let Some((prev, since)) = s.current.take() {
        s.done.push((prev, now - since));
    }
    s.current = Some((name, now));
    if s.shown {
        draw(&s);
    }
}

/// "compiling 0.4 s, transaction 2.6 s".
fn times(done: &[(&str, Duration)]) -> String {
    let parts: Vec<String> = done
        .iter()
        .map(|(name, d)| format!("{name} {:.1} s", d.as_secs_f64()))
        .collect();
    parts.join(", ")
}

/// Erases the line, if one is shown, so that output can follow; it is
/// drawn again at the next tick.
pub fn clear() {
    let Some(state) = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    if state.lock().unwrap_or_else(|e| e.into_inner()).shown {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

/// One short line, so that it never wraps (a wrapped line cannot be
/// rewritten in place): the phase and the time so far.
fn draw(s: &State) {
    let current = s.current.map_or("", |(name, _)| name);
    let _ = write!(
        std::io::stderr(),
        "\rfwharden: {current}... {:.1} s\x1b[K",
        s.started.elapsed().as_secs_f64()
    );
}

/// Ends the watch when dropped: the ticker stops and, if a line was shown,
/// it is replaced by the phases' times.
pub struct Guard {
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        STOP.store(true, Ordering::SeqCst);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let Some(state) = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.shown {
            return;
        }
        if let Some((prev, since)) = s.current.take() {
            s.done.push((prev, since.elapsed()));
        }
        let _ = writeln!(
            std::io::stderr(),
            "\rfwharden: done in {:.1} s: {}\x1b[K",
            s.started.elapsed().as_secs_f64(),
            times(&s.done)
        );
    }
}
