//! Ctrl-C (SIGINT) and SIGTERM while the xtask has what it must give back: the arm64 VM it
//! brought up, its lease, its tunnel. By default either signal ends the process where it stands,
//! and the VM stays up. Inside `Deferred`, a signal is recorded instead: the commands running
//! get SIGINT (a Ctrl-C at a terminal reaches them anyway; a SIGTERM sent to the xtask alone,
//! as `docker stop` or a rehearsal's timeout sends it, is passed on to its process group), so
//! the work fails promptly, nothing new starts, and the way out runs as on any failure. A
//! SIGTERM is passed on only when the xtask leads its process group (the job a shell started,
//! a container's first process, a rehearsed step): a group it does not lead is someone else's.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether a Ctrl-C or SIGTERM came while signals were deferred.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

extern "C" fn on_signal(signal: libc::c_int) {
    let first = !REQUESTED.swap(true, Ordering::SeqCst);
    // SAFETY: getpgrp, getpid and kill take no pointers and are async-signal-safe. Our own
    // SIGINT comes back here and is only recorded.
    unsafe {
        if first && signal == libc::SIGTERM && libc::getpgrp() == libc::getpid() {
            libc::kill(0, libc::SIGINT);
        }
    }
}

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Signals recorded instead of ending the process, until it is dropped.
pub struct Deferred {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Deferred {
    pub fn start() -> Deferred {
        let mut previous = Vec::new();
        for signal in SIGNALS {
            // SAFETY: an all-zero sigaction is a valid value, filled in here: its handler,
            // `on_signal`, does only what is async-signal-safe (an atomic, getpgrp, getpid,
            // kill). sigaction reads `action` and writes `old`, both locals; the old action is
            // kept to be put back.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) == 0 {
                    previous.push((signal, old));
                }
            }
        }
        Deferred { previous }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: putting back the action sigaction gave us.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}
