//! `send RELAYHOST:RELAYPORT FILE`: offer a file through the relay and send it, end-to-end
//! encrypted, to whoever presents the code printed on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use filexfer::{Offered, Source};
use filexfer_cli::{Side, StderrProgress};
use relay_bin::{init_logging, parse_duration, parse_relay, shutdown_on_signal};

/// Send a file through a relay. Prints the code for `receive` on stdout (one line, nothing
/// else); everything for people goes to stderr.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    /// The relay's control address: HOST:PORT or [V6]:PORT.
    #[arg(value_parser = parse_relay)]
    relay: String,

    /// The file to send.
    file: PathBuf,

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
    relay_bin::run("send", 0, async {
        // The error line must not land in the middle of a progress bar.
        run(&args, &progress)
            .await
            .inspect_err(|_| progress.clear())
    })
}

async fn run(args: &Args, progress: &StderrProgress) -> filexfer::Result<()> {
    let cancel = shutdown_on_signal();
    // Everything that can be checked locally is checked before a code exists.
    let source = Source::open(&args.file)?;
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
