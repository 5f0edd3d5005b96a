//! Which protocol runs on which listener.

use std::net::SocketAddr;

use postern_config::ListenerKind;
use tokio::net::TcpListener;

use crate::serve::Services;

pub fn spawn(kind: ListenerKind, addr: SocketAddr, listener: TcpListener, s: Services) {
    tracing::info!(listener = kind.name(), %addr, "listening");
    match kind {
        _ => {
            tracing::warn!(
                listener = kind.name(),
                %addr,
                "this protocol is not available in this build; the port is bound but unused"
            );
            drop(s);
            std::mem::forget(listener);
        }
    }
}
