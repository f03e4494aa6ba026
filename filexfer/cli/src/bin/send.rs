//! `send RELAYHOST:RELAYPORT PATH...`: offer files and directories (or stdin, or a text)
//! through the relay and send them, end-to-end encrypted, to whoever presents the code printed
//! on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use filexfer::{Offered, Source};
use filexfer_cli::{Side, StderrProgress};
use relay_bin::{init_logging, parse_duration, parse_relay, shutdown_on_signal};

/// Send files and directories through a relay. Prints the code for `receive` on stdout (one
/// line, nothing else); everything for people goes to stderr.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    /// The relay's control address: HOST:PORT or [V6]:PORT.
    #[arg(value_parser = parse_relay)]
    relay: String,

    /// Files and directories to send (directories with everything in them); `-` sends stdin.
    #[arg(required_unless_present = "text", conflicts_with = "text")]
    paths: Vec<PathBuf>,

    /// Send this text instead of files; `receive` prints it on its stdout.
    #[arg(long)]
    text: Option<String>,

    /// The name the receiver stores stdin under (with `-`).
    #[arg(long, default_value = "stdin")]
    name: String,

    /// Print nothing on stderr but errors.
    #[arg(long, short)]
    quiet: bool,

    /// Give up if no receiver comes within this time (e.g. 30s, 10m) [default: wait until the
    /// relay expires the offer].
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,

    #[command(flatten)]
    tls: relay_bin::tls::ClientTlsArgs,

    /// Secret the relay requires, if it requires one.
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true, value_parser = relay_bin::parse_token)]
    token: Option<relay_core::auth::Token>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // With --quiet the one error line we print ourselves is all that reaches stderr, even
    // when RUST_LOG is set.
    if !args.quiet {
        init_logging("warn");
    }
    let progress = StderrProgress::new(Side::Send, args.quiet);
    filexfer_cli::run("send", async {
        // The error line must not land in the middle of a progress bar.
        run(&args, &progress)
            .await
            .inspect_err(|_| progress.clear())
    })
}

async fn run(args: &Args, progress: &StderrProgress) -> filexfer::Result<()> {
    let cancel = shutdown_on_signal();
    // Everything that can be checked locally is checked before a code exists.
    let source = if let Some(text) = &args.text {
        Source::text(text)?
    } else if args.paths.len() == 1 && args.paths[0].as_os_str() == "-" {
        Source::stdin(&args.name)?
    } else {
        let paths = args.paths.clone();
        // Walking a big tree takes a while and touches the disk: off the runtime, and
        // interruptible.
        let walk = tokio::task::spawn_blocking(move || Source::paths(&paths));
        tokio::select! {
            s = walk => s.map_err(|e| filexfer::Error::LocalThread {
                thread: "the directory walk",
                cause: e.to_string(),
            })??,
            () = cancel.cancelled() => return Err(filexfer::Error::Cancelled("while listing the files")),
        }
    };
    for warning in source.warnings() {
        progress.line(warning);
    }
    let connect = relay_core::client::ConnectConfig {
        tls: args.tls.client_tls().map_err(filexfer::Error::from_relay)?,
        token: args.token.clone(),
        ..Default::default()
    };
    let offered = tokio::select! {
        o = Offered::register_with(&args.relay, &connect, source) => o?,
        () = cancel.cancelled() => return Err(filexfer::Error::Cancelled("while contacting the relay")),
    };
    print_code(offered.code());
    progress.line(format_args!(
        "waiting for the receiver; on the other machine run: receive {} {} OUTDIR",
        args.relay,
        offered.code()
    ));
    offered.run(args.timeout, progress, &cancel).await?;
    Ok(())
}

/// The one line on stdout, flushed at once so a script can read it while we wait.
fn print_code(code: &filexfer::Code) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{code}");
    let _ = out.flush();
}
