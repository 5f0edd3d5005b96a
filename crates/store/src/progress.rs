//! How far a long operation (an import, an export, a copy between stores) has come, told to
//! whoever watches it: a terminal, a control-socket client, or nobody.

/// Receives the progress of one operation. Items are messages, bytes their sizes. Through the
/// control socket it is sent while the operation awaits, so a long one should not hold its
/// thread for long without awaiting something that waits (or `tokio::task::yield_now`).
pub trait Progress: Send + Sync {
    /// What the whole operation will be, when known (0 = unknown); may be called again.
    fn total(&self, items: u64, bytes: u64);
    /// Work done since the last call.
    fn add(&self, items: u64, bytes: u64);
    /// A new step of the operation ("copying records", "verifying"); counts restart at 0.
    fn phase(&self, name: &str);
}

/// For callers nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn total(&self, _: u64, _: u64) {}
    fn add(&self, _: u64, _: u64) {}
    fn phase(&self, _: &str) {}
}

pub type SharedProgress = std::sync::Arc<dyn Progress>;
