//! `receive RELAYHOST:RELAYPORT CODE OUTDIR`: receive what was offered under CODE into OUTDIR
//! (or, with `-`, a single file or text to stdout), verified end to end before anything gets
//! its final name.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use filexfer::{Code, ReceiveOptions, receive_with};
use filexfer_cli::{Side, StderrProgress};
use relay_bin::{init_logging, parse_relay, shutdown_on_signal};

/// Receive files, directories or a text sent with `send`, into OUTDIR under the sender's names.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    /// The relay's control address: HOST:PORT or [V6]:PORT.
    #[arg(value_parser = parse_relay)]
    relay: String,

    /// The code `send` printed, e.g. 42-apple-river-stone.
    #[arg(value_parser = parse_code)]
    code: Code,

    /// Directory to write into (created if missing); `-` writes a single file or text to
    /// stdout. A text always goes to stdout.
    outdir: PathBuf,

    /// Replace existing files of the same names (directories are merged, never replaced).
    #[arg(long, short)]
    force: bool,

    /// Print nothing on stderr but errors.
    #[arg(long, short)]
    quiet: bool,

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
    let progress = StderrProgress::new(Side::Receive, args.quiet);
    let options = ReceiveOptions {
        force: args.force,
        stdout: args.outdir.as_os_str() == "-",
    };
    filexfer_cli::run("receive", async {
        let cancel = shutdown_on_signal();
        let connect = relay_core::client::ConnectConfig {
            tls: args.tls.client_tls().map_err(filexfer::Error::from_relay)?,
            token: args.token.clone(),
            ..Default::default()
        };
        let received = receive_with(
            &args.relay,
            &connect,
            &args.code,
            &args.outdir,
            options,
            &progress,
            &cancel,
        )
        .await;
        // The error line must not land in the middle of a progress bar.
        let received = received.inspect_err(|_| progress.clear())?;
        if let Some(text) = received.text {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        Ok::<(), filexfer::Error>(())
    })
}

fn parse_code(s: &str) -> Result<Code, String> {
    Code::parse(s).map_err(|e| e.to_string())
}
