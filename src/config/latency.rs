//! `s3.hedge` and `s3.latency_aware`: what the proxy does about slow
//! replicas (hedged requests, latency-aware choice among equal priorities).

use std::fmt;

use serde::Deserialize;

use super::ReplicaConfig;

/// `s3.hedge`: a `GET`/`HEAD` without response headers after `delay_ms` is
/// also sent to the next admitted replica; the first answer wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HedgeConfig {
    /// Whether requests are hedged.
    pub enabled: bool,
    /// Milliseconds without headers before hedging, or `"p95"`.
    pub delay_ms: HedgeDelayMs,
    /// Hedges allowed, as a percentage of requests (a budget over 10 s).
    pub max_extra_percent: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            delay_ms: HedgeDelayMs::Fixed(50),
            max_extra_percent: 10,
        }
    }
}

impl HedgeConfig {
    /// The middleware's hedge settings: `None` when hedging is off for the
    /// bucket and no replica (`replicas[].hedge.enabled: true`) turns it on.
    pub fn to_hedge(&self, replicas: &[ReplicaConfig]) -> Option<yatagarasu_middleware::failover::HedgeConfig> {
        let any_replica = replicas.iter().any(|r| r.hedge.enabled == Some(true));
        (self.enabled || any_replica).then(|| yatagarasu_middleware::failover::HedgeConfig {
            delay: self.delay_ms.to_delay(),
            max_extra_percent: self.max_extra_percent as f32,
            enabled_by_default: self.enabled,
        })
    }
}

impl HedgeDelayMs {
    /// The middleware's delay.
    pub fn to_delay(self) -> yatagarasu_middleware::failover::HedgeDelay {
        use yatagarasu_middleware::failover::HedgeDelay;
        match self {
            HedgeDelayMs::Fixed(ms) => HedgeDelay::Fixed(std::time::Duration::from_millis(ms)),
            HedgeDelayMs::P95 => HedgeDelay::P95,
        }
    }
}

/// `s3.hedge.delay_ms`: a number of milliseconds, or `"p95"` (the
/// replica's own observed p95 time to headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDelayMs {
    /// This many milliseconds.
    Fixed(u64),
    /// The replica's observed p95.
    P95,
}

impl<'de> Deserialize<'de> for HedgeDelayMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HedgeDelayMs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of milliseconds or \"p95\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HedgeDelayMs, E> {
                Ok(HedgeDelayMs::Fixed(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HedgeDelayMs, E> {
                u64::try_from(v)
                    .map(HedgeDelayMs::Fixed)
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HedgeDelayMs, E> {
                match v.trim() {
                    "p95" => Ok(HedgeDelayMs::P95),
                    n => n
                        .parse()
                        .map(HedgeDelayMs::Fixed)
                        .map_err(|_| E::custom("expected a number of milliseconds or \"p95\"")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `s3.latency_aware`: replicas of equal priority share requests by weight
/// divided by their peak-EWMA latency; a latency outlier is demoted.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LatencyAwareConfig {
    /// Whether the choice among equal priorities uses latency.
    pub enabled: bool,
    /// How fast the latency estimate forgets, in seconds.
    pub decay_seconds: u64,
    /// An outlier is this many times slower than its best equal-priority peer...
    pub outlier_factor: f64,
    /// ...on this many consecutive answers...
    pub outlier_consecutive: u32,
    /// ...and is then tried after its peers for this many seconds.
    pub outlier_demotion_seconds: u64,
}

impl Default for LatencyAwareConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            decay_seconds: 10,
            outlier_factor: 3.0,
            outlier_consecutive: 5,
            outlier_demotion_seconds: 30,
        }
    }
}

impl LatencyAwareConfig {
    /// The middleware's settings (`None` when disabled).
    pub fn to_latency(&self) -> Option<yatagarasu_middleware::failover::LatencyConfig> {
        self.enabled.then(|| yatagarasu_middleware::failover::LatencyConfig {
            decay: std::time::Duration::from_secs(self.decay_seconds),
            outlier_factor: self.outlier_factor,
            outlier_consecutive: self.outlier_consecutive,
            demotion: std::time::Duration::from_secs(self.outlier_demotion_seconds),
        })
    }
}
