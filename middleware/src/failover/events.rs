use crate::error::FetchError;

/// What the failover reports, for metrics. Every method has a no-op default.
pub trait FailoverEvents: Send + Sync + 'static {
    /// A request is sent to `replica`.
    fn request(&self, _bucket: &str, _replica: &str) {}
    /// `replica` failed a request (before or after its headers).
    fn failure(&self, _bucket: &str, _replica: &str, _error: &FetchError) {}
    /// A request moves from `from` (failed or skipped) to `to`.
    fn failover(&self, _bucket: &str, _from: &str, _to: &str) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl FailoverEvents for NoEvents {}
