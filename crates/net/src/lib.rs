//! What every protocol listener shares: TLS certificates, buffered connection I/O with a
//! STARTTLS upgrade, connection limits and graceful shutdown.

pub mod conn;
pub mod listener;
pub mod metrics;
pub mod tls;

pub use conn::{Conn, Io, LineError, Pace, TlsInfo, time_left};
pub use listener::{Admission, ConnLimits, Shutdown, ShutdownHandle, Tracker, serve};
pub use tls::{TlsError, TlsStore, generate_self_signed};

/// A short random id for one connection, shown on every log line of it.
pub fn session_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}
