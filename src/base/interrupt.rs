//! Stopping on a signal. SIGINT (Ctrl-C), SIGTERM (`kill`, `timeout`, a service manager or a CI
//! runner cancelling a job) and SIGHUP (the terminal closed) all do the same: they cancel the
//! run's token, so running jobs are stopped (processes killed, containers removed) and finished
//! work is saved. The CLI exits with 128 + the signal's number (130, 143, 129).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Which stopping signal arrived, if any.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    signal: Arc<AtomicI32>,
}

impl Interrupt {
    /// Installs the handlers now (a signal arriving from here on is caught) and cancels `cancel`
    /// on the first of them. Must be called inside the runtime.
    pub fn listen(cancel: CancellationToken) -> Self {
        let this = Self::default();
        let mut streams: Vec<(i32, Signal)> = Vec::new();
        for (number, kind) in [
            (libc::SIGINT, SignalKind::interrupt()),
            (libc::SIGTERM, SignalKind::terminate()),
            (libc::SIGHUP, SignalKind::hangup()),
        ] {
            match signal(kind) {
                Ok(s) => streams.push((number, s)),
                Err(e) => eprintln!("warning: cannot handle {}: {e}", name(number)),
            }
        }
        if streams.is_empty() {
            return this;
        }
        let seen = this.signal.clone();
        tokio::spawn(async move {
            let received = futures_util::future::select_all(
                streams
                    .iter_mut()
                    .map(|(number, s)| Box::pin(async move { s.recv().await.map(|()| *number) })),
            )
            .await
            .0;
            let Some(number) = received else { return };
            if number == libc::SIGHUP {
                detach_from_terminal();
            }
            seen.store(number, Ordering::SeqCst);
            cancel.cancel();
            // The handlers stay installed: a second signal does not kill the run mid-save; the
            // executor's deadline bounds how long stopping takes.
            std::future::pending::<()>().await;
        });
        this
    }

    /// The signal that stopped the run.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }

    /// `SIGTERM`, or `interrupt` when no signal was recorded.
    pub fn describe(&self) -> &'static str {
        self.signal().map_or("interrupt", name)
    }
}

fn name(number: i32) -> &'static str {
    match number {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// After a hangup the terminal is gone and writing to it fails: stdout and stderr that were the
/// terminal now go to /dev/null, so the messages of a clean stop cannot fail it.
fn detach_from_terminal() {
    use std::os::fd::AsRawFd;
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: isatty and dup2 on descriptors this process owns; dup2 replaces the descriptor
        // atomically, so a concurrent write goes to either the old terminal or /dev/null.
        unsafe {
            if libc::isatty(fd) == 1 {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}
