//! The relay's end of a session's control stream: heartbeats, tunnels that stop accepting,
//! visitor resets both ways, and the relay's shutdown notice.

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::resets::Resets;
use crate::codec::CodecError;
use crate::ending::SessionEnd;
use crate::frame::FramedConn;
use crate::liveness::{Beat, Liveness};
use crate::mux::Substream;
use crate::protocol::{ClientControl, RelayControl};

/// Answers the client's heartbeats, closes the tunnels it no longer accepts on, and passes
/// visitor resets both ways; ends when the client falls silent, says goodbye, the stream ends,
/// or the relay shuts down (after telling the client).
pub(super) async fn heartbeats(
    control: &mut FramedConn<Substream>,
    liveness: &mut Liveness,
    relay_shutdown: &CancellationToken,
    closed: &[CancellationToken],
    resets: &Resets,
) -> SessionEnd {
    loop {
        let frame = tokio::select! {
            // In this order, so that the tests' ping round trips also show that a pending reset
            // was sent (resets are bounded by the visitors, so they starve nothing).
            biased;
            () = relay_shutdown.cancelled() => {
                let reason = "relay is shutting down".to_string();
                let bye = RelayControl::Shutdown { reason: reason.clone() };
                let _ = tokio::time::timeout(liveness.silence_limit(), control.write_frame(&bye)).await;
                return SessionEnd::RelayShutdown(reason);
            }
            reset = resets.next_for_client() => match control.write_frame(&reset).await {
                Ok(()) => continue,
                Err(e) => Err(e),
            },
            beat = liveness.beat() => match beat {
                Beat::Ping => continue,
                Beat::Gone { silent_for } => return SessionEnd::PeerSilent { silent_for },
            },
            frame = control.read_frame::<ClientControl>() => {
                liveness.heard();
                frame
            }
        };
        let result = match frame {
            Ok(ClientControl::Ping(seq)) => control.write_frame(&RelayControl::Pong(seq)).await,
            Ok(ClientControl::Goodbye) => return SessionEnd::PeerLeft,
            Ok(ClientControl::StopAccepting { tunnel }) => {
                debug!(tunnel, "client stopped accepting on a tunnel");
                if let Some(closed) = closed.get(usize::from(tunnel)) {
                    closed.cancel();
                }
                Ok(())
            }
            Ok(ClientControl::Reset { visitor_id }) => {
                resets.reset_by_client(visitor_id);
                Ok(())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(CodecError::Closed) => return SessionEnd::PeerClosed,
            Err(CodecError::Io(e)) => return SessionEnd::ConnectionLost(e.to_string()),
            Err(e) => return SessionEnd::Protocol(format!("control stream: {e}")),
        }
    }
}
