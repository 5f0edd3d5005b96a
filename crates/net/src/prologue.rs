//! How every protocol's connection starts and turns to TLS, written once: the refusal of a
//! connection over a limit, the implicit-TLS handshake, and the STARTTLS upgrade.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::conn::Io;
use crate::listener::Admission;
use crate::tls::TlsStore;

/// The TLS side of a listener.
#[derive(Clone, Copy)]
pub struct TlsSetup<'a> {
    /// The certificate (none: no TLS offered).
    pub store: Option<&'a TlsStore>,
    /// TLS from the first byte (ports 465, 993, 995), not after STARTTLS.
    pub implicit: bool,
    pub handshake_timeout: Duration,
}

/// The client's connection, ready for the protocol's greeting: admitted and, on an
/// implicit-TLS port, with TLS up. A connection over a limit is told `refusal(why)` and
/// closed (`None`): on an implicit-TLS port after the handshake, so the mail program shows the
/// reason instead of a TLS error.
pub async fn accept(
    stream: TcpStream,
    admission: Admission,
    tls: TlsSetup<'_>,
    refusal: impl FnOnce(&str) -> Vec<u8>,
) -> Option<Io> {
    let mut io = Io::new(stream);
    if tls.implicit {
        let store = tls.store?;
        // A refused client gets a short handshake: it costs us little and shows the reason.
        let limit = match admission {
            Admission::Accepted => tls.handshake_timeout,
            Admission::TooMany(_) => tls.handshake_timeout.min(Duration::from_secs(5)),
        };
        if let Err(e) = io.start_tls(&store.acceptor(), limit).await {
            info!(error = %e, "TLS handshake failed");
            return None;
        }
    }
    if let Admission::TooMany(why) = admission {
        let _ = io.send(&refusal(why), Duration::from_secs(5)).await;
        info!(reason = why, "connection refused");
        io.shutdown().await;
        return None;
    }
    Some(io)
}

impl Io {
    /// STARTTLS, once the protocol's "go ahead" is written: sends it, then shakes hands.
    /// Whatever the client sent after the command is dropped unread: nothing sent in the clear
    /// may be executed as if it came over TLS (RFC 3207 5, RFC 2595 3.1).
    pub async fn upgrade(&mut self, tls: &TlsStore, handshake_timeout: Duration) -> io::Result<()> {
        self.flush().await?;
        if self.has_buffered() {
            warn!("input pipelined after STARTTLS discarded");
        }
        self.start_tls(&tls.acceptor(), handshake_timeout)
            .await
            .inspect_err(|e| info!(error = %e, "STARTTLS handshake failed"))
    }
}
