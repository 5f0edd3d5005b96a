//! What every protocol listener shares: TLS certificates, buffered connection I/O with a
//! STARTTLS upgrade, how a connection starts (limits, implicit TLS), and graceful shutdown.

pub mod conn;
pub mod der;
pub mod listener;
pub mod metrics;
pub mod prologue;
pub mod tls;

pub use conn::{Conn, Io, LineError, Pace, TlsInfo, time_left};
pub use listener::{Admission, ConnLimits, Shutdown, ShutdownHandle, Tracker, serve};
pub use prologue::{TlsSetup, accept};
pub use tls::{TlsError, TlsStore, generate_self_signed};

/// A short random id for one connection, shown on every log line of it.
pub fn session_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the struct we pass; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        let unit = st.f_frsize as u64;
        Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
    }
}
