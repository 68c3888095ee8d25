//! The shim's diagnostics. Its stderr is the shim log the daemon opened in the shim directory;
//! `eprintln!` panics when that write fails (a full disk), and a panicking shim would leave its
//! container without a reader of its output and without an exit record. [`note!`] writes the
//! line the same way and drops it when stderr cannot take it.
//!
//! Invariant: no code of the shim writes to stderr through `eprint!`/`eprintln!`.

/// `eprintln!` that never panics: a line stderr refuses is dropped.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
