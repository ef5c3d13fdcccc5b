//! Exit codes: the one place where what happened becomes the number a script sees. Library code
//! returns typed results; the CLI maps them here.

use crate::base::interrupt::Interrupt;
use crate::formats::ImportError;

/// Everything asked for is done.
pub const EXIT_OK: i32 = 0;
/// Some node (or task, or write) failed; what finished is saved.
pub const EXIT_FAILED: i32 = 1;
/// The input or the usage is wrong (a sandbox this machine cannot provide included).
pub const EXIT_INVALID: i32 = 2;
/// Stopped by Ctrl-C when no signal number was recorded.
pub const EXIT_INTERRUPTED: i32 = 130;

/// An interrupted run exits with 128 + the signal's number (130, 143, 129).
pub fn interrupted(interrupt: &Interrupt) -> i32 {
    interrupt.signal().map_or(EXIT_INTERRUPTED, |n| 128 + n)
}

/// An import's error: unreadable or wrong input is invalid (2), a failed write failed (1).
pub fn import(e: &ImportError) -> i32 {
    match e {
        ImportError::Input(_) => EXIT_INVALID,
        ImportError::Write { .. } | ImportError::Outside(_) => EXIT_FAILED,
    }
}
