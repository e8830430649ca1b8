//! Crash points, for tests of what survives a crash at an exact place: with
//! `ATTESTOR_FAILPOINT=NAME` in its environment, the process aborts (as SIGKILL would:
//! nothing flushed, no destructors run) the first time it passes the point `NAME`.
//! Without the variable a point costs one comparison; the variable is read once.

use std::sync::OnceLock;

/// Aborts the process here if `ATTESTOR_FAILPOINT` names this point.
pub fn crash_point(name: &str) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var("ATTESTOR_FAILPOINT").ok());
    if chosen.as_deref() == Some(name) {
        std::process::abort();
    }
}
