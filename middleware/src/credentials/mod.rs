//! The credentials one replica signs with: none (anonymous), fixed keys, or
//! temporary keys from a [`CredentialSource`] kept fresh in the background.
//!
//! [`ReplicaCredentials`] is what [`S3Upstream`](crate::upstream::S3Upstream)
//! reads on every request: a cheap clone, a read of the current keys, never a
//! wait. For a refreshing source a background task fetches new keys before
//! the current ones expire (at the later of five minutes before expiry and
//! half their remaining life), so requests never wait for a refresh. A failed
//! refresh is retried with a capped backoff and the current keys stay in use
//! until they expire; after that the replica's requests fail with
//! [`CredentialsError`] (a failure of that replica: its breaker counts it and
//! the failover moves on), and a log line says why.
//!
//! The sources themselves (the AWS SDK's provider chain, STS role
//! assumption) live in the binary, so this crate does not depend on the AWS
//! SDK: anything implementing [`CredentialSource`] can be plugged in.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use futures_util::future::BoxFuture;
//! use yatagarasu_middleware::credentials::{BoxError, CredentialSource, Fetched, RefreshPolicy, ReplicaCredentials};
//!
//! struct Vault;
//! impl CredentialSource for Vault {
//!     fn fetch(&self) -> BoxFuture<'_, Result<Fetched, BoxError>> {
//!         Box::pin(async {
//!             Ok(Fetched::new(
//!                 rusty_s3::Credentials::new("AKIA...", "secret"),
//!                 Some(SystemTime::now() + Duration::from_secs(3600)),
//!             ))
//!         })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let creds = ReplicaCredentials::refreshing("replica-a", Arc::new(Vault), RefreshPolicy::default()).await;
//! assert!(creds.current().unwrap().is_some());
//! # });
//! ```

mod refresh;

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use rusty_s3::Credentials;

pub use refresh::RefreshPolicy;

/// The error type of a [`CredentialSource`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Keys fetched from a source, with their expiry (`None`: they do not expire).
#[derive(Clone)]
pub struct Fetched {
    /// The keys (and session token).
    pub credentials: Credentials,
    /// When they stop being valid.
    pub expires: Option<SystemTime>,
}

impl Fetched {
    /// Keys expiring at `expires`.
    pub fn new(credentials: Credentials, expires: Option<SystemTime>) -> Self {
        Self { credentials, expires }
    }
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are left out on purpose.
        f.debug_struct("Fetched")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Where temporary credentials come from (the AWS provider chain, STS...).
pub trait CredentialSource: Send + Sync + 'static {
    /// Fetches fresh keys. Error messages must not contain a secret.
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched, BoxError>>;
}

/// Why a replica has no keys to sign with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    /// No keys were ever obtained.
    #[error("no credentials yet: {0}")]
    Missing(String),
    /// The keys expired and no refresh has succeeded since.
    #[error("credentials expired {ago:?} ago; last refresh error: {last_error}")]
    Expired {
        /// How long ago.
        ago: Duration,
        /// Why the last refresh failed.
        last_error: String,
    },
}

/// The credentials of one replica: cheap to clone, read on every request.
#[derive(Clone)]
pub struct ReplicaCredentials(Kind);

#[derive(Clone)]
enum Kind {
    Anonymous,
    Fixed(Arc<Credentials>),
    Refreshing(Arc<refresh::Shared>),
}

impl std::fmt::Debug for ReplicaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Which kind, never the keys.
        let kind = match &self.0 {
            Kind::Anonymous => "anonymous",
            Kind::Fixed(_) => "fixed",
            Kind::Refreshing(_) => "refreshing",
        };
        f.debug_tuple("ReplicaCredentials").field(&kind).finish()
    }
}

impl Default for ReplicaCredentials {
    fn default() -> Self {
        Self::anonymous()
    }
}

impl ReplicaCredentials {
    /// Unsigned requests (public buckets).
    pub fn anonymous() -> Self {
        Self(Kind::Anonymous)
    }

    /// Fixed keys that never change (a static `access_key`/`secret_key`).
    pub fn fixed(credentials: Credentials) -> Self {
        Self(Kind::Fixed(Arc::new(credentials)))
    }

    /// Keys from `source`, fetched once now (waiting at most
    /// `policy.first_fetch_timeout`) and then refreshed in the background
    /// until every clone is dropped. A failed first fetch is logged and
    /// retried; until one succeeds [`current`](Self::current) fails.
    pub async fn refreshing(
        replica: impl Into<Arc<str>>,
        source: Arc<dyn CredentialSource>,
        policy: RefreshPolicy,
    ) -> Self {
        Self(Kind::Refreshing(refresh::start(replica.into(), source, policy).await))
    }

    /// The keys to sign with now: `None` for anonymous requests.
    pub fn current(&self) -> Result<Option<Arc<Credentials>>, CredentialsError> {
        match &self.0 {
            Kind::Anonymous => Ok(None),
            Kind::Fixed(c) => Ok(Some(c.clone())),
            Kind::Refreshing(shared) => shared.current().map(Some),
        }
    }

    /// When the current keys expire (`None`: anonymous, fixed, or keys that do not expire).
    pub fn expires(&self) -> Option<SystemTime> {
        match &self.0 {
            Kind::Refreshing(shared) => shared.expires(),
            _ => None,
        }
    }

    /// Whether the keys come from a refreshing source (and so may expire).
    pub fn is_refreshing(&self) -> bool {
        matches!(self.0, Kind::Refreshing(_))
    }

    /// A handle that does not keep the background refresh alive: it upgrades
    /// back to these credentials while a clone of them is still in use.
    pub fn downgrade(&self) -> WeakReplicaCredentials {
        match &self.0 {
            Kind::Refreshing(shared) => WeakReplicaCredentials(Some(Arc::downgrade(shared))),
            Kind::Anonymous | Kind::Fixed(_) => WeakReplicaCredentials(None),
        }
    }
}

/// A [`ReplicaCredentials::downgrade`]d handle (only refreshing credentials
/// upgrade back; anonymous and fixed ones are cheap to make again).
#[derive(Clone, Debug, Default)]
pub struct WeakReplicaCredentials(Option<Weak<refresh::Shared>>);

impl WeakReplicaCredentials {
    /// The credentials, if some clone of them is still alive.
    pub fn upgrade(&self) -> Option<ReplicaCredentials> {
        let shared = self.0.as_ref()?.upgrade()?;
        Some(ReplicaCredentials(Kind::Refreshing(shared)))
    }
}

/// The keys of a refreshing source and why the last refresh failed.
#[derive(Default)]
struct State {
    current: Option<(Arc<Credentials>, Option<SystemTime>)>,
    last_error: Option<String>,
}

type StateLock = RwLock<State>;
