//! Process plumbing shared by every relay binary (`relay`, `expose`, `echoserver`, `send`,
//! `receive`): logging to stderr, signals, argument parsers, the allocator choice, and the
//! one-line error exit. Protocol and networking live in `relay-core`; nothing here knows about
//! them beyond types, except [`local`], the local server `expose` forwards to, and
//! [`visitors`], what tunnel clients log about their visitors, and [`tokens`], the relay's
//! tokens file.

use std::fmt::Display;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub mod expose_config;
pub mod local;
pub mod metrics_http;
pub mod proxy_header;
pub mod purge;
pub mod tls;
pub mod tokens;
pub mod tunnel_args;
pub mod visitors;

use tracing_subscriber::EnvFilter;
pub use tunnel_args::{ClientOptions, RelayArgs, announce, follow_address};

/// Makes mimalloc the allocator of the binary that invokes it (at the top level of its main
/// file). A macro, not a `#[global_allocator]` here, so that each binary still chooses its
/// allocator and those that gain nothing from it (`send`, `receive`) keep the system one.
///
/// Why mimalloc: the data path allocates and frees a 64 KiB frame per yamux frame; glibc's
/// allocator returns that memory to the kernel and faults it back in on the next frame.
/// mimalloc keeps it: about a quarter less CPU per byte through a tunnel (docs/benchmark.md).
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static ALLOC: $crate::MiMalloc = $crate::MiMalloc;
    };
}

/// The allocator [`use_mimalloc!`] installs (re-exported so binaries need no dependency of
/// their own on it).
#[doc(hidden)]
pub use mimalloc::MiMalloc;

/// Runs a binary's async main; an error becomes one line on stderr and a failing exit code.
///
/// `threads` is the number of runtime worker threads: 0 for one per CPU, 1 for a
/// single-threaded runtime. A tunnel client's traffic all passes through one multiplexer task,
/// so one thread serves it best: no hand-offs between threads on every frame.
pub fn run<F, E>(program: &str, threads: usize, main: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: Display,
{
    raise_fd_limit();
    let built = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => return fail(program, format_args!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(program, e),
    }
}

/// Every visitor costs a socket (two for `expose`), and the common default soft limit of 1024
/// descriptors would cap a tunnel far below its visitor limit: raise the soft limit to the hard
/// one, as servers conventionally do.
fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "could not raise the open-file limit");
    }
}

/// Sends tracing output to stderr, honouring `RUST_LOG` (default: `default_level`).
pub fn init_logging(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// A token cancelled on the first SIGINT or SIGTERM (Ctrl-C elsewhere). A second signal ends the
/// process at once, so an impatient user is never stuck behind a drain.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down (again to quit at once)");
        cancel.cancel();
        wait_for_signal().await;
        std::process::exit(130);
    });
    token
}

/// How long a tunnel client waits, when it stops, for visitors still being served.
pub const CLIENT_DRAIN: Duration = Duration::from_secs(5);

/// Waits (at most [`CLIENT_DRAIN`]) for the visitor tasks in `visitors` to finish.
pub async fn drain_visitors(visitors: &tokio_util::task::TaskTracker) {
    visitors.close();
    if !visitors.is_empty() {
        tracing::info!(open = visitors.len(), "waiting for visitors to finish");
        if tokio::time::timeout(CLIENT_DRAIN, visitors.wait())
            .await
            .is_err()
        {
            tracing::warn!(open = visitors.len(), "visitors still open; closing them");
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the defaults (terminate) still apply.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Prints `PROGRAM: error` on one line to stderr and returns a failing exit code.
pub fn fail(program: &str, error: impl Display) -> ExitCode {
    eprintln!("{program}: {error}");
    ExitCode::FAILURE
}

/// Formats an anyhow-style error chain on one line: `outer: inner: root`.
pub fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}")
}

/// Parses a duration: `500ms`, `10s`, `5m`, `2h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 500ms, 10s, 5m, 2h)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{s}' is out of range"))
}

/// A socket buffer size from the command line: bytes, or `None` for the kernel's auto-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSize(pub Option<usize>);

/// Parses a byte size, `auto` (left to the kernel) or a number with an optional unit:
/// `262144`, `256KiB`, `4MiB` (also `K`/`KB`, `M`/`MB`, `G`/`GB`, all meaning powers of 1024).
pub fn parse_buffer_size(s: &str) -> Result<BufferSize, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(BufferSize(None));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 262144, 256KiB, 4MiB, auto)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (use KiB, MiB or GiB)"
            ));
        }
    };
    value
        .checked_mul(scale)
        .map(|n| BufferSize(Some(n)))
        .ok_or_else(|| format!("'{s}' is out of range"))
}

/// Parses a token given on the command line or in the environment (the secret is never shown
/// again, not even by `Debug`).
pub fn parse_token(s: &str) -> Result<relay_core::auth::Token, String> {
    relay_core::auth::Token::new(s)
}

/// Checks the shape of a relay's control address, `HOST:PORT` or `[V6]:PORT` (for `clap`'s
/// `value_parser`), so a typo fails before anything connects.
pub fn parse_relay(s: &str) -> Result<String, String> {
    relay_core::net::split_host_port(s)?;
    Ok(s.to_string())
}

/// Parses a port range `LOW-HIGH` (or a single port).
pub fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (low, high) = s.split_once('-').unwrap_or((s, s));
    let low = relay_core::net::parse_port(low.trim())?;
    let high = relay_core::net::parse_port(high.trim())?;
    if low > high {
        return Err(format!("'{s}': the range is empty (low > high)"));
    }
    Ok(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_sizes() {
        assert_eq!(parse_buffer_size("auto"), Ok(BufferSize(None)));
        assert_eq!(parse_buffer_size("262144"), Ok(BufferSize(Some(262_144))));
        assert_eq!(parse_buffer_size("256KiB"), Ok(BufferSize(Some(262_144))));
        assert_eq!(parse_buffer_size("4M"), Ok(BufferSize(Some(4 << 20))));
        assert!(parse_buffer_size("4 parsecs").unwrap_err().contains("unit"));
        assert!(parse_buffer_size("-1").unwrap_err().contains("not a size"));
        assert!(parse_buffer_size("").is_err());
        assert!(parse_buffer_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("8081-9080"), Ok(8081..=9080));
        assert_eq!(parse_port_range("9000"), Ok(9000..=9000));
        assert!(parse_port_range("9080-8081").is_err());
        assert!(parse_port_range("0-10").is_err());
    }
}
