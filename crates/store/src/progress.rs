//! How long operations (backups, copies, imports) say how far they are, wherever they run: a
//! terminal draws a bar, the control socket passes it on, a test ignores it.

pub trait Progress: Send + Sync {
    /// What the whole operation will be, when known (0 = unknown); may be called again.
    fn total(&self, items: u64, bytes: u64);
    /// Work done since the last call.
    fn add(&self, items: u64, bytes: u64);
    /// A new step of the operation ("copying records", "verifying"); counts restart at 0.
    fn phase(&self, name: &str);
}

/// Progress nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn total(&self, _items: u64, _bytes: u64) {}
    fn add(&self, _items: u64, _bytes: u64) {}
    fn phase(&self, _name: &str) {}
}

pub type SharedProgress = std::sync::Arc<dyn Progress>;
