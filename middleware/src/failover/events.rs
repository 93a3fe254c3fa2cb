use crate::error::FetchError;

/// What the failover reports, for metrics. Every method has a no-op default.
pub trait FailoverEvents: Send + Sync + 'static {
    /// A request is sent to `replica`.
    fn request(&self, _bucket: &str, _replica: &str) {}
    /// `replica` failed a request (before or after its headers).
    fn failure(&self, _bucket: &str, _replica: &str, _error: &FetchError) {}
    /// A request moves from `from` (failed or skipped) to `to`.
    fn failover(&self, _bucket: &str, _from: &str, _to: &str) {}
    /// A hedge to `replica` was sent, or answered first.
    fn hedge(&self, _bucket: &str, _replica: &str, _event: HedgeEvent) {}
    /// `replica` was demoted as a latency outlier (tried after its peers for a while).
    fn demoted(&self, _bucket: &str, _replica: &str) {}
}

/// What happened to a hedge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HedgeEvent {
    /// The hedge was sent (its replica is the one in the event).
    Sent,
    /// The hedge answered first and served the request.
    Won,
}

impl HedgeEvent {
    /// `sent` or `won` (the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Won => "won",
        }
    }
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl FailoverEvents for NoEvents {}
