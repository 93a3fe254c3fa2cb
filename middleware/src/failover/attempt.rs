//! What the failover tells the layers below (and the access log) about each
//! attempt: [`ObjectRequest::attempt`](crate::object::ObjectRequest::attempt)
//! on every request it sends to a replica, and, when a hedge was sent,
//! response extensions on the answer it returns.

/// Why a request was sent to a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// The first replica tried for the client's request.
    Primary,
    /// A later replica, after the earlier ones failed, were skipped, or
    /// (with `failover_on_404`) answered 404; also retry rounds and mid-body
    /// resumes.
    Failover,
    /// A hedge: sent while the previous attempt is still waiting for its
    /// response headers; the first of the two to answer wins.
    Hedge,
}

impl AttemptKind {
    /// `primary`, `failover` or `hedge` (for span attributes and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Failover => "failover",
            Self::Hedge => "hedge",
        }
    }
}

/// Set by the failover on each request it sends to a replica
/// ([`ObjectRequest::attempt`](crate::object::ObjectRequest::attempt)), and,
/// when a hedge was sent, inserted beside [`HedgeOutcome`] into the
/// extensions of the response it returns (the attempt that answered): the
/// attempt's number for this client request (1 for the first) and its kind.
/// Layers below the failover (e.g. a tracing span per attempt) read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// 1 for the first request to a replica, then 2, 3... across failovers,
    /// hedges and retry rounds.
    pub number: u32,
    /// Why this attempt was sent.
    pub kind: AttemptKind,
}

/// Inserted into the response's extensions when a hedge was sent for it:
/// which of the two attempts answered first (the [`Attempt`] that answered
/// is inserted beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HedgeOutcome {
    /// The hedge answered first (the slow replica's request was cancelled).
    Won,
    /// The first replica answered first (the hedge was cancelled or failed).
    Lost,
}

impl HedgeOutcome {
    /// `won` or `lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }
}
