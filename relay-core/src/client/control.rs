//! The client's end of a session's control stream: heartbeats, tunnels that stop accepting,
//! and visitor resets.

use tokio::sync::watch;
use tracing::debug;

use super::resets::Inbox;
use crate::codec::CodecError;
use crate::ending::SessionEnd;
use crate::frame::FramedConn;
use crate::liveness::{Beat, Liveness};
use crate::mux::Substream;
use crate::protocol::{ClientControl, RelayControl};

/// Sends a ping every interval and watches for the relay's pongs, tells the relay about
/// tunnels that stop accepting (`told` is what it was told so far), and passes visitor resets
/// both ways; returns why the session ended. Cancel-safe between frames.
pub(super) async fn heartbeats(
    control: &mut FramedConn<Substream>,
    liveness: &mut Liveness,
    (accepting, told): (&mut watch::Receiver<Vec<bool>>, &mut [bool]),
    resets: &mut Inbox,
) -> SessionEnd {
    let mut seq = 0u64;
    // Until every listener and handle is gone (streams may stay): nothing changes after that.
    let mut watching = true;
    loop {
        let stopped: Vec<u16> = {
            let now = accepting.borrow_and_update();
            told.iter_mut()
                .zip(now.iter())
                .enumerate()
                .filter(|(_, (told, now))| **told && !**now)
                .map(|(i, (told, _))| {
                    *told = false;
                    i as u16
                })
                .collect()
        };
        for tunnel in stopped {
            debug!(tunnel, "telling the relay to stop handing over visitors");
            let stop = ClientControl::StopAccepting { tunnel };
            if let Err(e) = control.write_frame(&stop).await {
                return SessionEnd::ConnectionLost(e.to_string());
            }
        }
        let frame = tokio::select! {
            reset = resets.next() => match control.write_frame(&reset).await {
                Ok(()) => continue,
                Err(e) => Err(e),
            },
            changed = accepting.changed(), if watching => {
                watching = changed.is_ok();
                continue;
            }
            beat = liveness.beat() => match beat {
                Beat::Ping => {
                    seq += 1;
                    match control.write_frame(&ClientControl::Ping(seq)).await {
                        Ok(()) => continue,
                        Err(e) => Err(e),
                    }
                }
                Beat::Gone { silent_for } => return SessionEnd::PeerSilent { silent_for },
            },
            frame = control.read_frame::<RelayControl>() => frame,
        };
        match frame {
            Ok(RelayControl::Pong(_)) => liveness.heard(),
            Ok(RelayControl::Shutdown { reason }) => return SessionEnd::RelayShutdown(reason),
            Ok(RelayControl::Revoked { reason }) => return SessionEnd::Revoked(reason),
            Ok(RelayControl::Reset { visitor_id }) => resets.reset_by_relay(visitor_id),
            Err(CodecError::Closed) => return SessionEnd::PeerClosed,
            Err(CodecError::Io(e)) => return SessionEnd::ConnectionLost(e.to_string()),
            Err(e) => return SessionEnd::Protocol(format!("control stream: {e}")),
        }
    }
}
