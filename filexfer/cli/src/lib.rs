//! What `send` and `receive` share beyond `relay-bin`'s process plumbing: how a transfer's
//! progress looks on stderr ([`StderrProgress`]), and the runner that ends the process without
//! waiting for a thread stuck in a blocking read ([`run`]). The transfer itself is the
//! `filexfer` library's; this package only presents it.

mod progress;

use std::fmt::Display;
use std::process::ExitCode;

pub use progress::{Side, StderrProgress};

/// Runs `main` on a multi-threaded runtime and returns the exit status: 0, or 1 after one line
/// `PROGRAM: ERROR` on stderr. Unlike dropping the runtime, this never waits for blocking
/// threads: one still reading stdin or a stalled file must not keep an interrupted program
/// alive.
pub fn run<F, E>(program: &str, main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return relay_bin::fail(program, format_args!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(main);
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => relay_bin::fail(program, e),
    }
}
