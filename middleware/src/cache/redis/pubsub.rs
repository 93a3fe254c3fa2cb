//! The purge broadcast: a purge on one instance is published on a Redis
//! channel (`<key_prefix>purge`), and every instance sharing the tier
//! listens on it with one dedicated pub/sub connection and purges its own
//! memory tier.
//!
//! The listener reconnects with backoff when Redis goes away, in every
//! mode: standalone (the one server), cluster (any node: a classic
//! `PUBLISH` reaches every node of a cluster; the seeds first, then the
//! nodes `CLUSTER NODES` named) and sentinel (the primary the sentinels
//! name, asked again at every heartbeat: after a failover it follows the new
//! primary). A heartbeat `PING` finds a connection that died silently.
//!
//! Messages sent while an instance was not subscribed cannot be replayed,
//! so every message is published together with a mark: one script sets the
//! key `<key_prefix>purge:last` to a random token and publishes the message
//! carrying it, at once. The listener reads that key after each
//! subscription and follows the marks of the messages it hears; when it
//! subscribes again after a gap, a key that no longer holds the last mark
//! it knew means a message may have been missed: it reports
//! [`ListenerEvent::Subscribed`] with `missed`, and the store clears its
//! memory tier then. A gap with no purge announced (a network blip, a
//! sentinel failover, a restart of a Redis that had seen no purge) keeps
//! the memory tier. (A first subscription made at once clears nothing: the
//! store has just been built.)
//!
//! A message is JSON (any bytes of a key travel safely):
//! `{"v":1,"from":"<instance id>","redis_purged":false,"purge":{"scope":"object","bucket":"b","key":"k"},"mark":"<token>"}`
//! (`scope` `bucket` without `key`, `all` without either).

use std::future::Future;
use std::time::Duration;

use deadpool_redis::redis::{self, RedisError};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::pool::node_connection_info;
use super::purge::cluster_nodes;
use crate::cache::config::{redact_url, RedisCacheConfig, RedisMode};

/// The format version of a message.
const VERSION: u8 = 1;
/// How often the listener checks its connection (and, with sentinels, who
/// the primary is).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The first wait before dialling again; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one purge covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub(crate) enum PurgeScope {
    /// One object of one bucket.
    Object { bucket: String, key: String },
    /// Every object of one bucket.
    Bucket { bucket: String },
    /// Everything.
    All,
}

/// One message on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PurgeMessage {
    v: u8,
    /// The sending instance (it ignores its own messages).
    from: String,
    /// Whether the sender had purged the Redis tier when it sent this: a
    /// purge is announced before (to stop fills in flight elsewhere) and
    /// after (to drop what was read from Redis meanwhile).
    redis_purged: bool,
    purge: PurgeScope,
    /// The token stored in the mark key as this message was published
    /// (none from a sender that could not mark it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mark: Option<String>,
}

impl PurgeMessage {
    pub(crate) fn new(from: &str, purge: PurgeScope, redis_purged: bool) -> Self {
        Self {
            v: VERSION,
            from: from.to_owned(),
            redis_purged,
            purge,
            mark: None,
        }
    }

    /// The message with the token stored in the mark key as it is published.
    pub(crate) fn marked(mut self, mark: String) -> Self {
        self.mark = Some(mark);
        self
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // A struct of strings and a bool always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The message in `payload`; `None` for anything this version cannot
    /// read (another format version, not JSON).
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(payload).ok().filter(|m| m.v == VERSION)
    }
}

/// What the listener tells the store.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ListenerEvent<'a> {
    /// Subscribed. `after_gap`: not at the first attempt, or again after
    /// the connection was lost; `missed`: after a gap in which a purge may
    /// have been announced (the mark key moved, or could not be read).
    Subscribed { after_gap: bool, missed: bool },
    /// Another instance purged; `first` is its announcement made before it
    /// purged Redis.
    Purge { scope: &'a PurgeScope, first: bool },
    /// A message this version cannot read (a newer format): its scope is
    /// unknown.
    Unreadable,
}

/// What a listener knows of the last message announced: the mark key as
/// it last read it, or the mark of the last message it heard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// The mark key held this (`None`: absent, no purge announced on this
    /// Redis yet).
    Mark(Option<String>),
    /// Nothing to compare with: never read, the read failed, or a message
    /// without a mark (or unreadable) was heard.
    Unsure,
}

impl Known {
    /// What a message heard tells.
    fn heard(mark: Option<&str>) -> Self {
        mark.map_or(Known::Unsure, |m| Known::Mark(Some(m.to_owned())))
    }
}

/// Whether a message may have been announced while this listener was not
/// subscribed: it knew `before` when it lost the channel, and read `now`
/// from the mark key once subscribed again. Every announcement stores a new
/// random token, so a key still holding the token known before (or still
/// absent, on a Redis that has announced nothing since it started) saw no
/// announcement meanwhile; anything else (another token, the key gone or
/// appeared, a failed read, nothing known) may hide one.
fn may_have_missed<E>(before: &Known, now: &Result<Option<String>, E>) -> bool {
    match (before, now) {
        (Known::Mark(before), Ok(now)) => before != now,
        (Known::Unsure, _) | (_, Err(_)) => true,
    }
}

/// Attempts at reading the mark key after subscribing, before counting it
/// unreadable (a pooled connection broken by the gap fails the first).
const MARK_READS: u32 = 3;

/// Where the listener subscribes, and how patient it is.
#[derive(Clone)]
pub(crate) struct PurgeChannel {
    /// The channel's name: `<key_prefix>purge`.
    pub(crate) name: String,
    /// The key holding the mark of the last message: `<key_prefix>purge:last`.
    pub(crate) mark_key: String,
    mode: RedisMode,
    /// The configured URLs (with passwords).
    seeds: Vec<String>,
    sentinel_master: String,
    /// Bound on dialling, subscribing and one heartbeat.
    patience: Duration,
    heartbeat: Duration,
}

impl std::fmt::Debug for PurgeChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeChannel")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("seeds", &self.seeds.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .finish()
    }
}

/// A live subscription: the connection and, with sentinels, the primary
/// it is on.
struct Subscription {
    pubsub: redis::aio::PubSub,
    primary: Option<String>,
}

impl PurgeChannel {
    pub(crate) fn new(cfg: &RedisCacheConfig, seeds: &[String]) -> Self {
        Self {
            name: format!("{}purge", cfg.key_prefix),
            mark_key: format!("{}purge:last", cfg.key_prefix),
            mode: cfg.mode,
            seeds: seeds.to_vec(),
            sentinel_master: cfg.sentinel_master.clone().unwrap_or_default(),
            // A background connection: more patient than an operation on
            // a request's path.
            patience: (Duration::from_millis(cfg.timeout_ms) * 4).max(Duration::from_secs(1)),
            heartbeat: HEARTBEAT,
        }
    }

    #[cfg(test)]
    pub(crate) fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Listens until `stop` fires or is dropped, or `on_event` returns
    /// false; `me` is this instance's id (its own messages are skipped);
    /// `read_mark` reads the mark key (`GET`, bounded, off any breaker).
    pub(crate) async fn listen<R, F, E>(
        self,
        me: String,
        mut stop: oneshot::Receiver<()>,
        read_mark: R,
        on_event: impl Fn(ListenerEvent<'_>) -> bool,
    ) where
        R: Fn() -> F,
        F: Future<Output = Result<Option<String>, E>>,
        E: std::fmt::Display,
    {
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0u32;
        let mut after_gap = false;
        // Until a first read, anything may have been missed.
        let mut known = Known::Unsure;
        loop {
            let subscribed = tokio::select! {
                _ = &mut stop => return,
                r = self.subscribe() => r,
            };
            match subscribed {
                Ok(sub) => {
                    backoff = MIN_BACKOFF;
                    failures = 0;
                    // Read after subscribing: a message announced from now
                    // on is heard, one announced before has moved the mark.
                    let now = tokio::select! {
                        _ = &mut stop => return,
                        now = self.read_mark(&read_mark) => now,
                    };
                    let missed = after_gap && may_have_missed(&known, &now);
                    if after_gap && !missed {
                        tracing::info!(channel = %self.name, "subscribed to the cache purge channel again; no purge was announced meanwhile");
                    } else {
                        tracing::info!(channel = %self.name, "subscribed to the cache purge channel");
                    }
                    known = now.map_or(Known::Unsure, Known::Mark);
                    if !on_event(ListenerEvent::Subscribed { after_gap, missed }) {
                        return;
                    }
                    match self.read(sub, &me, &mut stop, &mut known, &on_event).await {
                        Ended::Stopped => return,
                        Ended::Lost(why) => tracing::warn!(
                            channel = %self.name,
                            reason = %why,
                            "cache purge channel lost; if a purge is announced before it is back, the memory tier will be cleared then"
                        ),
                    }
                }
                Err(e) => self.failed(&mut failures, &e.to_string()),
            }
            // Whatever is sent from now until the next subscription is missed.
            after_gap = true;
            let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The mark key, read up to [`MARK_READS`] times, each within
    /// `patience`; the last error if every read failed.
    async fn read_mark<R, F, E>(&self, read_mark: &R) -> Result<Option<String>, String>
    where
        R: Fn() -> F,
        F: Future<Output = Result<Option<String>, E>>,
        E: std::fmt::Display,
    {
        let mut last = String::new();
        for attempt in 0..MARK_READS {
            if attempt > 0 {
                tokio::time::sleep(MIN_BACKOFF).await;
            }
            match tokio::time::timeout(self.patience, read_mark()).await {
                Ok(Ok(mark)) => return Ok(mark),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        tracing::warn!(key = %self.mark_key, error = %last, "cannot read the cache purge mark; counting a purge as missed");
        Err(last)
    }

    fn failed(&self, failures: &mut u32, error: &str) {
        *failures += 1;
        let error = self
            .seeds
            .iter()
            .fold(error.to_owned(), |e, url| e.replace(url.as_str(), &redact_url(url)));
        if *failures == 1 {
            tracing::warn!(channel = %self.name, %error, "cannot subscribe to the cache purge channel; retrying");
        } else {
            tracing::debug!(channel = %self.name, %error, failures = *failures, "cannot subscribe to the cache purge channel");
        }
    }

    /// Reads messages until the connection ends, a heartbeat fails or the
    /// primary moved.
    async fn read(
        &self,
        sub: Subscription,
        me: &str,
        stop: &mut oneshot::Receiver<()>,
        known: &mut Known,
        on_event: &impl Fn(ListenerEvent<'_>) -> bool,
    ) -> Ended {
        let Subscription { pubsub, primary } = sub;
        let (mut sink, mut stream) = pubsub.split();
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut *stop => return Ended::Stopped,
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Ended::Lost("connection closed".into());
                    };
                    let message = PurgeMessage::decode(msg.get_payload_bytes());
                    // This instance's own messages move the mark too.
                    *known = Known::heard(message.as_ref().and_then(|m| m.mark.as_deref()));
                    let event = match message {
                        Some(m) if m.from == me => continue,
                        Some(m) => {
                            if !on_event(ListenerEvent::Purge { scope: &m.purge, first: !m.redis_purged }) {
                                return Ended::Stopped;
                            }
                            continue;
                        }
                        None => ListenerEvent::Unreadable,
                    };
                    if !on_event(event) {
                        return Ended::Stopped;
                    }
                }
                _ = tick.tick() => {
                    match tokio::time::timeout(self.patience, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ended::Lost(format!("heartbeat: {e}")),
                        Err(_) => return Ended::Lost("heartbeat timed out".into()),
                    }
                    if let Some(on) = &primary {
                        match self.bounded(self.sentinel_primary()).await {
                            Ok(client) => {
                                let now = client.get_connection_info().addr().to_string();
                                if now != *on {
                                    return Ended::Lost(format!("the primary moved from {on} to {now}"));
                                }
                            }
                            // The sentinels unreachable: the connection still works.
                            Err(e) => tracing::debug!(error = %e, "sentinels not asked for the primary"),
                        }
                    }
                }
            }
        }
    }

    /// `op`, given up after `patience`.
    async fn bounded<T>(&self, op: impl Future<Output = Result<T, RedisError>>) -> Result<T, RedisError> {
        tokio::time::timeout(self.patience, op)
            .await
            .unwrap_or_else(|_| Err(RedisError::from((redis::ErrorKind::Io, "timed out"))))
    }

    /// A pub/sub connection to `url`, within `patience`.
    async fn dial(&self, url: &str) -> Result<redis::aio::PubSub, RedisError> {
        self.bounded(redis::Client::open(url)?.get_async_pubsub()).await
    }

    /// Dials the mode's node and subscribes, each step within `patience`.
    async fn subscribe(&self) -> Result<Subscription, RedisError> {
        let (mut pubsub, primary) = match self.mode {
            RedisMode::Standalone => (self.dial(&self.seeds[0]).await?, None),
            RedisMode::Sentinel => {
                let client = self.bounded(self.sentinel_primary()).await?;
                let primary = client.get_connection_info().addr().to_string();
                (self.bounded(client.get_async_pubsub()).await?, Some(primary))
            }
            RedisMode::Cluster => (self.cluster_pubsub().await?, None),
        };
        self.bounded(pubsub.subscribe(&self.name)).await?;
        Ok(Subscription { pubsub, primary })
    }

    /// A client of the primary the sentinels name now.
    async fn sentinel_primary(&self) -> Result<redis::Client, RedisError> {
        let mut sentinels = redis::sentinel::SentinelClient::build(
            self.seeds.clone(),
            self.sentinel_master.clone(),
            Some(node_connection_info(&self.seeds[0]).into()),
            redis::sentinel::SentinelServerType::Master,
        )?;
        sentinels.async_get_client().await
    }

    /// A pub/sub connection to the first cluster node that answers: a
    /// seed, or a node a seed lists in `CLUSTER NODES` (the seeds may all be
    /// gone while the cluster lives on).
    async fn cluster_pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        let mut last = None;
        for seed in &self.seeds {
            match self.dial(seed).await {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        for seed in &self.seeds {
            let Ok(nodes) = self.bounded(self.cluster_nodes_of(seed)).await else {
                continue;
            };
            for url in nodes {
                match self.dial(&url).await {
                    Ok(p) => return Ok(p),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((redis::ErrorKind::Io, "no cluster node answers"))))
    }

    /// The URLs of the nodes `seed` lists as live, with its scheme and
    /// credentials.
    async fn cluster_nodes_of(&self, seed: &str) -> Result<Vec<String>, RedisError> {
        let mut conn = redis::Client::open(seed)?.get_multiplexed_async_connection().await?;
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
        let Ok(base) = url::Url::parse(seed) else {
            return Ok(Vec::new());
        };
        Ok(cluster_nodes(&nodes, false)
            .into_iter()
            .filter_map(|(host, port)| {
                let mut url = base.clone();
                (url.set_host(Some(&host)).is_ok() && url.set_port(Some(port)).is_ok()).then(|| url.to_string())
            })
            .collect())
    }
}

/// Why reading stopped.
enum Ended {
    Stopped,
    Lost(String),
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use yatagarasu_testkit::redis::Redis;

    use super::*;

    #[test]
    fn any_bytes_of_a_key_travel_in_a_message() {
        for key in ["a b/c%20d", "日本語/ファイル.txt", "x\"y\\z\n", "", "k:5:{}/o:"] {
            let m = PurgeMessage::new(
                "me",
                PurgeScope::Object {
                    bucket: "b:1/".into(),
                    key: key.into(),
                },
                false,
            );
            assert_eq!(PurgeMessage::decode(&m.encode()), Some(m));
        }
        let all = PurgeMessage::new("me", PurgeScope::All, true);
        assert_eq!(PurgeMessage::decode(&all.encode()), Some(all));
        assert_eq!(PurgeMessage::decode(b"not json"), None);
        let newer = br#"{"v":2,"from":"x","redis_purged":false,"purge":{"scope":"all"}}"#;
        assert_eq!(PurgeMessage::decode(newer), None);
    }

    #[test]
    fn a_gap_may_hide_a_purge_only_when_the_mark_moved_or_is_unknown() {
        let t = |s: &str| Some(s.to_owned());
        let ok = Ok::<_, String>;
        // Nothing announced during the gap: the same token, or still none
        // (a Redis that restarted empty and has announced nothing since).
        assert!(!may_have_missed(&Known::Mark(t("a")), &ok(t("a"))));
        assert!(!may_have_missed(&Known::Mark(None), &ok(None)));
        // Announced meanwhile: another token; the first one ever; the key
        // gone (a Redis restarted empty after announcing one we knew:
        // one announced before it went may have been missed too).
        assert!(may_have_missed(&Known::Mark(t("a")), &ok(t("b"))));
        assert!(may_have_missed(&Known::Mark(None), &ok(t("a"))));
        assert!(may_have_missed(&Known::Mark(t("a")), &ok(None)));
        // Unknowable: the read failed, or nothing was known before.
        assert!(may_have_missed(&Known::Mark(t("a")), &Err("down".to_owned())));
        assert!(may_have_missed(&Known::Mark(None), &Err("down".to_owned())));
        assert!(may_have_missed(&Known::Unsure, &ok(None)));
        assert!(may_have_missed(&Known::Unsure, &ok(t("a"))));
    }

    #[test]
    fn a_message_tells_its_mark_and_one_without_makes_it_unknown() {
        let marked = PurgeMessage::new("x", PurgeScope::All, false).marked("t1".into());
        let decoded = PurgeMessage::decode(&marked.encode()).unwrap();
        assert_eq!(Known::heard(decoded.mark.as_deref()), Known::Mark(Some("t1".into())));
        let plain = br#"{"v":1,"from":"x","redis_purged":false,"purge":{"scope":"all"}}"#;
        let decoded = PurgeMessage::decode(plain).unwrap();
        assert_eq!(Known::heard(decoded.mark.as_deref()), Known::Unsure);
    }

    /// Whether `server` reports one subscriber of `channel` (polled a
    /// bounded number of times).
    async fn subscribed(server: &Redis, channel: &str) -> bool {
        for _ in 0..200 {
            let out = server.cli(&["PUBSUB", "NUMSUB", channel]);
            if out.lines().nth(1) == Some("1") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        /// `after_gap`, `missed`.
        Subscribed(bool, bool),
        Purge(PurgeScope, bool),
        Unreadable,
    }

    /// Against a real server: heartbeats keep one subscription (a failing
    /// `PING` in subscribed mode would resubscribe at every beat), the
    /// instance's own messages are skipped, the others' arrive, and a
    /// restarted server is subscribed to again, reporting a purge missed
    /// only when the mark (here set by the test) moved from the one known
    /// before the gap (read, or heard in a message), or nothing was known.
    #[tokio::test]
    async fn the_listener_stays_subscribed_reads_others_and_comes_back() {
        let mut server = Redis::start();
        let cfg = RedisCacheConfig {
            enabled: true,
            url: Some(server.url()),
            ..RedisCacheConfig::default()
        };
        let channel = PurgeChannel::new(&cfg, &cfg.endpoints()).with_heartbeat(Duration::from_millis(20));
        let name = channel.name.clone();
        assert_eq!(name, "yatagarasu:cache:purge");
        assert_eq!(channel.mark_key, "yatagarasu:cache:purge:last");
        let seen = Arc::new(Mutex::new(Vec::new()));
        // What the mark key holds.
        let mark = Arc::new(Mutex::new(None::<String>));
        let (stop_tx, stop) = oneshot::channel();
        let read_mark = {
            let mark = mark.clone();
            move || {
                let now = mark.lock().unwrap().clone();
                async move { Ok::<_, String>(now) }
            }
        };
        let task = tokio::spawn({
            let seen = seen.clone();
            channel.listen("me".into(), stop, read_mark, move |e| {
                seen.lock().unwrap().push(match e {
                    ListenerEvent::Subscribed { after_gap, missed } => Seen::Subscribed(after_gap, missed),
                    ListenerEvent::Purge { scope, first } => Seen::Purge(scope.clone(), first),
                    ListenerEvent::Unreadable => Seen::Unreadable,
                });
                true
            })
        });
        assert!(subscribed(&server, &name).await, "never subscribed");
        // Many heartbeats.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mine = PurgeMessage::new("me", PurgeScope::All, false).encode();
        let theirs = PurgeMessage::new(
            "other",
            PurgeScope::Object {
                bucket: "b".into(),
                key: "a b/ü%".into(),
            },
            true,
        )
        .encode();
        for payload in [&mine, &theirs] {
            server.cli(&["PUBLISH", &name, std::str::from_utf8(payload).unwrap()]);
        }
        server.cli(&["PUBLISH", &name, "{\"v\":9}"]);
        let got = |n: usize| {
            let seen = seen.clone();
            async move {
                for _ in 0..200 {
                    if seen.lock().unwrap().len() >= n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                false
            }
        };
        assert!(got(3).await, "{:?}", seen.lock().unwrap());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Seen::Subscribed(false, false),
                Seen::Purge(
                    PurgeScope::Object {
                        bucket: "b".into(),
                        key: "a b/ü%".into()
                    },
                    false
                ),
                Seen::Unreadable,
            ]
        );

        // An unreadable message leaves nothing known: the gap counts.
        server.restart();
        assert!(subscribed(&server, &name).await, "never subscribed again");
        assert!(got(4).await);
        assert_eq!(seen.lock().unwrap()[3], Seen::Subscribed(true, true));
        // The mark read then (none) has not moved: nothing missed.
        server.restart();
        assert!(got(5).await, "{:?}", seen.lock().unwrap());
        assert_eq!(seen.lock().unwrap()[4], Seen::Subscribed(true, false));
        // A marked message heard, and the key holding its mark: nothing missed.
        *mark.lock().unwrap() = Some("t1".into());
        let marked = PurgeMessage::new("other", PurgeScope::All, true)
            .marked("t1".into())
            .encode();
        server.cli(&["PUBLISH", &name, std::str::from_utf8(&marked).unwrap()]);
        assert!(got(6).await, "{:?}", seen.lock().unwrap());
        server.restart();
        assert!(got(7).await, "{:?}", seen.lock().unwrap());
        assert_eq!(seen.lock().unwrap()[6], Seen::Subscribed(true, false));
        // Another purge announced during the gap: missed.
        *mark.lock().unwrap() = Some("t2".into());
        server.restart();
        assert!(got(8).await, "{:?}", seen.lock().unwrap());
        assert_eq!(seen.lock().unwrap()[7], Seen::Subscribed(true, true));
        drop(stop_tx);
        task.await.unwrap();
    }
}
