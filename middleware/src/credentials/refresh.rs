//! The background refresh of a [`CredentialSource`](super::CredentialSource).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use rusty_s3::Credentials;
use tokio::task::AbortHandle;

use super::{CredentialSource, CredentialsError, Fetched, State, StateLock};

/// When keys are refreshed and how failed refreshes are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Refresh this long before expiry (or at half the remaining life, whichever is later).
    pub refresh_before: Duration,
    /// Re-read interval for keys that do not expire (environment, profile files).
    pub non_expiring_interval: Duration,
    /// First retry delay after a failure; doubled up to `max_retry`.
    pub min_retry: Duration,
    /// Longest delay between retries.
    pub max_retry: Duration,
    /// Longest wait for one fetch (the first one delays startup by at most this).
    pub fetch_timeout: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_before: Duration::from_secs(300),
            non_expiring_interval: Duration::from_secs(300),
            min_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(15),
        }
    }
}

impl RefreshPolicy {
    /// How long to wait before the next fetch, given the time left on the
    /// current keys (`None`: they do not expire, or there are none) and the
    /// failures in a row so far.
    pub fn next_fetch(&self, have_keys: bool, remaining: Option<Duration>, failures: u32) -> Duration {
        let wait = if failures == 0 && have_keys {
            match remaining {
                Some(r) => r.saturating_sub(self.refresh_before).max(r / 2),
                None => self.non_expiring_interval,
            }
        } else {
            let backoff = self
                .min_retry
                .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
                .min(self.max_retry);
            match remaining {
                // Keep trying often enough to beat the expiry.
                Some(r) if !r.is_zero() => backoff.min(r / 2),
                _ => backoff,
            }
        };
        wait.max(self.min_retry)
    }
}

pub(super) struct Shared {
    replica: Arc<str>,
    state: StateLock,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

fn remaining(expires: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    expires.map(|e| e.duration_since(now).unwrap_or(Duration::ZERO))
}

impl Shared {
    pub(super) fn current(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let last_error = || state.last_error.clone().unwrap_or_else(|| "none".into());
        match &state.current {
            None => Err(CredentialsError::Missing(last_error())),
            Some((creds, expires)) => match expires {
                Some(e) if *e <= SystemTime::now() => Err(CredentialsError::Expired {
                    ago: SystemTime::now().duration_since(*e).unwrap_or_default(),
                    last_error: last_error(),
                }),
                _ => Ok(creds.clone()),
            },
        }
    }

    pub(super) fn expires(&self) -> Option<SystemTime> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.current.as_ref().and_then(|(_, e)| *e)
    }

    fn store(&self, fetched: Fetched) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = State {
            current: Some((Arc::new(fetched.credentials), fetched.expires)),
            last_error: None,
        };
    }

    /// Records a failure; returns the time left on the current keys.
    fn fail(&self, error: String) -> (bool, Option<Duration>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.last_error = Some(error);
        let have = state.current.is_some();
        (
            have,
            remaining(state.current.as_ref().and_then(|(_, e)| *e), SystemTime::now()),
        )
    }

    fn schedule(&self, policy: &RefreshPolicy, failures: u32) -> Duration {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let expires = state.current.as_ref().and_then(|(_, e)| *e);
        policy.next_fetch(state.current.is_some(), remaining(expires, SystemTime::now()), failures)
    }
}

async fn fetch(source: &dyn CredentialSource, policy: &RefreshPolicy) -> Result<Fetched, String> {
    match tokio::time::timeout(policy.fetch_timeout, source.fetch()).await {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => Err(crate::error::chain(&*e)),
        Err(_) => Err(format!("no answer within {:?}", policy.fetch_timeout)),
    }
}

/// Fetches once, then refreshes in a task that ends when `Shared` is dropped.
pub(super) async fn start(replica: Arc<str>, source: Arc<dyn CredentialSource>, policy: RefreshPolicy) -> Arc<Shared> {
    let shared = Arc::new(Shared {
        replica,
        state: StateLock::default(),
        task: Mutex::new(None),
    });
    let failures = match fetch(&*source, &policy).await {
        Ok(f) => {
            shared.store(f);
            0
        }
        Err(error) => {
            tracing::warn!(
                replica = %shared.replica,
                %error,
                "cannot get credentials: this replica's requests fail until a retry succeeds"
            );
            shared.fail(error);
            1
        }
    };
    let task = tokio::spawn(run(Arc::downgrade(&shared), source, policy, failures));
    *shared.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    shared
}

async fn run(shared: Weak<Shared>, source: Arc<dyn CredentialSource>, policy: RefreshPolicy, mut failures: u32) {
    let mut expired_logged = false;
    loop {
        let wait = match shared.upgrade() {
            Some(s) => s.schedule(&policy, failures),
            None => return,
        };
        tokio::time::sleep(wait).await;
        let result = fetch(&*source, &policy).await;
        let Some(s) = shared.upgrade() else { return };
        match result {
            Ok(f) => {
                let expires_in = remaining(f.expires, SystemTime::now()).map(|d| d.as_secs());
                s.store(f);
                if failures > 0 {
                    tracing::info!(replica = %s.replica, ?expires_in, "credentials refreshed after {failures} failed attempt(s)");
                } else {
                    tracing::debug!(replica = %s.replica, ?expires_in, "credentials refreshed");
                }
                failures = 0;
                expired_logged = false;
            }
            Err(error) => {
                failures += 1;
                let (have, left) = s.fail(error.clone());
                let expired = left.is_some_and(|d| d.is_zero());
                if !have || expired {
                    // Logged once per outage (the first fetch already said why); the
                    // SDK's own warnings follow each retry.
                    if !expired_logged && have {
                        tracing::error!(
                            replica = %s.replica,
                            %error,
                            "credentials expired and cannot be refreshed: this replica's requests fail until a refresh succeeds"
                        );
                    } else {
                        tracing::debug!(replica = %s.replica, %error, "credentials still unavailable");
                    }
                    expired_logged = true;
                } else {
                    tracing::warn!(
                        replica = %s.replica,
                        %error,
                        expires_in_seconds = left.map(|d| d.as_secs()),
                        "credential refresh failed: the current keys stay in use until they expire"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{BoxError, ReplicaCredentials};
    use futures_util::future::BoxFuture;
    use std::sync::atomic::{AtomicU32, Ordering};

    const P: RefreshPolicy = RefreshPolicy {
        refresh_before: Duration::from_secs(300),
        non_expiring_interval: Duration::from_secs(300),
        min_retry: Duration::from_secs(1),
        max_retry: Duration::from_secs(30),
        fetch_timeout: Duration::from_secs(15),
    };

    #[test]
    fn refreshes_five_minutes_before_expiry_or_halfway() {
        let h = Duration::from_secs(3600);
        assert_eq!(P.next_fetch(true, Some(h), 0), Duration::from_secs(3300));
        assert_eq!(
            P.next_fetch(true, Some(Duration::from_secs(360)), 0),
            Duration::from_secs(180)
        );
        assert_eq!(
            P.next_fetch(true, Some(Duration::from_secs(8)), 0),
            Duration::from_secs(4)
        );
        // Never a busy loop, even on keys that arrive expired.
        assert_eq!(P.next_fetch(true, Some(Duration::ZERO), 0), Duration::from_secs(1));
        assert_eq!(P.next_fetch(true, None, 0), Duration::from_secs(300));
    }

    #[test]
    fn failures_back_off_but_beat_the_expiry() {
        assert_eq!(
            P.next_fetch(true, Some(Duration::from_secs(3000)), 1),
            Duration::from_secs(1)
        );
        assert_eq!(
            P.next_fetch(true, Some(Duration::from_secs(3000)), 3),
            Duration::from_secs(4)
        );
        assert_eq!(
            P.next_fetch(true, Some(Duration::from_secs(3000)), 30),
            Duration::from_secs(30)
        );
        assert_eq!(
            P.next_fetch(true, Some(Duration::from_secs(10)), 30),
            Duration::from_secs(5)
        );
        assert_eq!(P.next_fetch(false, None, 9), Duration::from_secs(30));
    }

    /// Serves keys `AK{n}` expiring after `life`; fails while `down` is set.
    struct Counter {
        n: AtomicU32,
        down: std::sync::atomic::AtomicBool,
        life: Duration,
    }

    impl CredentialSource for Counter {
        fn fetch(&self) -> BoxFuture<'_, Result<Fetched, BoxError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err("endpoint down".into());
                }
                let n = self.n.fetch_add(1, Ordering::SeqCst);
                Ok(Fetched::new(
                    Credentials::new(format!("AK{n}"), "secret"),
                    Some(SystemTime::now() + self.life),
                ))
            })
        }
    }

    fn key(c: &ReplicaCredentials) -> String {
        c.current().unwrap().unwrap().key().to_owned()
    }

    #[tokio::test]
    async fn rotates_before_expiry_and_keeps_keys_through_failed_refreshes() {
        let source = Arc::new(Counter {
            n: AtomicU32::new(0),
            down: false.into(),
            life: Duration::from_secs(3),
        });
        let policy = RefreshPolicy {
            min_retry: Duration::from_millis(200),
            ..P
        };
        let creds = ReplicaCredentials::refreshing("r", source.clone(), policy).await;
        assert_eq!(key(&creds), "AK0");
        // A refresh at half-life swaps in the next keys while the old are valid.
        while key(&creds) == "AK0" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(creds.expires().unwrap() > SystemTime::now());
        // The source goes down: the current keys stay until they expire...
        source.down.store(true, Ordering::SeqCst);
        let held = key(&creds);
        let expires = creds.expires().unwrap();
        while SystemTime::now() < expires {
            if let Ok(Some(c)) = creds.current() {
                assert_eq!(c.key(), held);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // ...then fail, saying why.
        let err = creds.current().unwrap_err().to_string();
        assert!(err.contains("expired") && err.contains("endpoint down"), "{err}");
        // Back up: the next retry brings keys again.
        source.down.store(false, Ordering::SeqCst);
        while creds.current().is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn the_refresh_task_stops_with_the_last_clone() {
        let source = Arc::new(Counter {
            n: AtomicU32::new(0),
            down: false.into(),
            life: Duration::from_secs(2),
        });
        let creds = ReplicaCredentials::refreshing("r", source.clone(), P).await;
        drop(creds);
        // The task held only a weak reference: the source is ours alone again.
        while Arc::strong_count(&source) > 1 {
            tokio::task::yield_now().await;
        }
    }
}
