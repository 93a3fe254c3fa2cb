//! Outcomes of authentication and their counters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

/// What the auth layer decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthOutcome {
    /// A valid token whose claims pass every rule: the request went on.
    Success,
    /// No token in any configured source (401).
    Missing,
    /// Not a well-formed JWT, or claims of the wrong type (401).
    Malformed,
    /// The signature does not verify (401).
    BadSignature,
    /// The header's `alg` is not the configured one (including `none`) (401).
    BadAlgorithm,
    /// `exp` is past (401).
    Expired,
    /// `nbf` is in the future (401).
    NotYetValid,
    /// `iss` is missing or not the configured issuer (401).
    BadIssuer,
    /// `aud` is missing or names none of the configured audiences (401).
    BadAudience,
    /// The token's `kid` is in no known JWKS key (401).
    UnknownKey,
    /// The JWKS could not be fetched and no key is cached (503).
    KeysUnavailable,
    /// A valid token whose claims fail a rule (403).
    Forbidden,
}

impl AuthOutcome {
    /// Every outcome, in a stable order (for exporting counters).
    pub const ALL: [AuthOutcome; 12] = [
        AuthOutcome::Success,
        AuthOutcome::Missing,
        AuthOutcome::Malformed,
        AuthOutcome::BadSignature,
        AuthOutcome::BadAlgorithm,
        AuthOutcome::Expired,
        AuthOutcome::NotYetValid,
        AuthOutcome::BadIssuer,
        AuthOutcome::BadAudience,
        AuthOutcome::UnknownKey,
        AuthOutcome::KeysUnavailable,
        AuthOutcome::Forbidden,
    ];

    /// A stable snake_case label (`bad_signature`), e.g. a Prometheus `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthOutcome::Success => "success",
            AuthOutcome::Missing => "missing",
            AuthOutcome::Malformed => "malformed",
            AuthOutcome::BadSignature => "bad_signature",
            AuthOutcome::BadAlgorithm => "bad_algorithm",
            AuthOutcome::Expired => "expired",
            AuthOutcome::NotYetValid => "not_yet_valid",
            AuthOutcome::BadIssuer => "bad_issuer",
            AuthOutcome::BadAudience => "bad_audience",
            AuthOutcome::UnknownKey => "unknown_key",
            AuthOutcome::KeysUnavailable => "keys_unavailable",
            AuthOutcome::Forbidden => "forbidden",
        }
    }

    /// The status the client gets: `None` (the inner service answers) for
    /// success, else 401, 403 or 503.
    pub fn status(self) -> Option<StatusCode> {
        match self {
            AuthOutcome::Success => None,
            AuthOutcome::Forbidden => Some(StatusCode::FORBIDDEN),
            AuthOutcome::KeysUnavailable => Some(StatusCode::SERVICE_UNAVAILABLE),
            _ => Some(StatusCode::UNAUTHORIZED),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AuthOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lock-free counters of [`AuthOutcome`]s: one atomic per outcome, no allocation.
///
/// Every [`AuthLayer`](super::AuthLayer) counts into one (its own, or one
/// shared with [`AuthLayer::with_stats`](super::AuthLayer::with_stats)); an
/// exporter reads them with [`AuthStats::snapshot`], e.g. as
/// `yatagarasu_auth_total{reason="expired"}`.
#[derive(Debug, Default)]
pub struct AuthStats {
    counts: [AtomicU64; AuthOutcome::ALL.len()],
}

impl AuthStats {
    /// New counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one outcome.
    pub fn record(&self, outcome: AuthOutcome) {
        self.counts[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of one outcome.
    pub fn get(&self, outcome: AuthOutcome) -> u64 {
        self.counts[outcome.index()].load(Ordering::Relaxed)
    }

    /// Every outcome with its count, in [`AuthOutcome::ALL`] order.
    pub fn snapshot(&self) -> [(AuthOutcome, u64); AuthOutcome::ALL.len()] {
        AuthOutcome::ALL.map(|o| (o, self.get(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_all() {
        for (i, o) in AuthOutcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        let stats = AuthStats::new();
        stats.record(AuthOutcome::Expired);
        assert_eq!(stats.get(AuthOutcome::Expired), 1);
        assert_eq!(stats.snapshot()[5], (AuthOutcome::Expired, 1));
    }
}
