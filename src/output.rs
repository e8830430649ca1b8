//! The commands' standard output (binary only). A reader that goes away early
//! (`attestor query … | head`) ends the output, not the command: what is left is dropped
//! quietly and the command finishes with its own exit status, instead of the panic
//! `println!` gives on a closed pipe.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Writing the output failed for another reason than a closed pipe (a full disk).
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout: {0}")]
pub struct OutputError(std::io::Error);

impl From<OutputError> for String {
    fn from(e: OutputError) -> String {
        e.to_string()
    }
}

/// Whether the reader of stdout has gone away.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout; see the module's documentation. Use it through [`out!`] and
/// [`outln!`].
pub(crate) fn write_stdout(text: std::fmt::Arguments<'_>) -> Result<(), OutputError> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other.map_err(OutputError),
    }
}

/// `print!` that survives a closed pipe: `out!(...)?`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that survives a closed pipe: `outln!(...)?`.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}
