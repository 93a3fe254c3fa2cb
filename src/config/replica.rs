//! `s3.replicas`: each replica's settings, and the replicas resolved
//! against their bucket's `s3` block.

use serde::Deserialize;

use super::de;
use super::{HedgeDelayMs, S3Config, Secret};

/// One entry of `s3.replicas`; unset fields inherit from the `s3` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReplicaConfig {
    /// Name in logs, metrics and `X-Yatagarasu-Replica`.
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    /// Endpoint URL.
    #[serde(deserialize_with = "de::opt_string")]
    pub endpoint: Option<String>,
    /// Bucket name.
    #[serde(deserialize_with = "de::opt_string")]
    pub bucket: Option<String>,
    /// Region.
    #[serde(deserialize_with = "de::opt_string")]
    pub region: Option<String>,
    /// Access key id.
    #[serde(deserialize_with = "de::opt_secret")]
    pub access_key: Option<Secret>,
    /// Secret access key.
    #[serde(deserialize_with = "de::opt_secret")]
    pub secret_key: Option<Secret>,
    /// Session token.
    #[serde(deserialize_with = "de::opt_secret")]
    pub session_token: Option<Secret>,
    /// Role to assume.
    #[serde(deserialize_with = "de::opt_string")]
    pub role_arn: Option<String>,
    /// External id for the role.
    #[serde(deserialize_with = "de::opt_secret")]
    pub external_id: Option<Secret>,
    /// Role session name.
    #[serde(deserialize_with = "de::opt_string")]
    pub session_name: Option<String>,
    /// Unsigned requests.
    pub anonymous: Option<bool>,
    /// PEM CA bundle for the endpoint's certificate.
    #[serde(deserialize_with = "de::opt_string")]
    pub ca_file: Option<String>,
    /// Lower is tried first; unique within a bucket.
    pub priority: u32,
    /// Connect plus time to response headers.
    pub timeout_seconds: Option<u64>,
    /// Share of load among replicas of equal priority.
    pub weight: u32,
    /// Requests in flight before this replica is skipped (default: the `s3` block's).
    pub max_concurrent_requests: Option<usize>,
    /// This replica's override of `s3.hedge` (`enabled`, `delay_ms`).
    pub hedge: ReplicaHedgeConfig,
}

/// `replicas[].hedge`: overrides the bucket's `s3.hedge` for requests sent
/// to this replica. Unset keys follow the bucket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReplicaHedgeConfig {
    /// `false`: requests to this replica are never hedged; `true`: they are,
    /// even when the bucket's `hedge.enabled` is off (with its budget).
    pub enabled: Option<bool>,
    /// Milliseconds without headers before hedging, or `"p95"`.
    pub delay_ms: Option<HedgeDelayMs>,
}

impl ReplicaHedgeConfig {
    /// The middleware's per-replica override.
    pub fn to_replica_hedge(&self) -> yatagarasu_middleware::failover::ReplicaHedge {
        yatagarasu_middleware::failover::ReplicaHedge {
            enabled: self.enabled,
            delay: self.delay_ms.map(HedgeDelayMs::to_delay),
        }
    }
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            endpoint: None,
            bucket: None,
            region: None,
            access_key: None,
            secret_key: None,
            session_token: None,
            role_arn: None,
            external_id: None,
            session_name: None,
            anonymous: None,
            ca_file: None,
            priority: 0,
            timeout_seconds: None,
            weight: 100,
            max_concurrent_requests: None,
            hedge: ReplicaHedgeConfig::default(),
        }
    }
}

/// A replica with everything inherited from its `s3` block filled in.
#[derive(Debug, Clone)]
pub struct ResolvedReplica {
    /// Name.
    pub name: String,
    /// Endpoint (AWS when `None`).
    pub endpoint: Option<url::Url>,
    /// Bucket name.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Credentials, when both keys are set.
    pub credentials: Option<(Secret, Secret)>,
    /// Session token for the static keys.
    pub session_token: Option<Secret>,
    /// The role assumed through STS, when set.
    pub role: Option<RoleConfig>,
    /// Unsigned requests.
    pub anonymous: bool,
    /// PEM CA bundle for the endpoint's certificate.
    pub ca_file: Option<String>,
    /// Priority.
    pub priority: u32,
    /// Header timeout.
    pub timeout_seconds: u64,
    /// Weight.
    pub weight: u32,
    /// Bulkhead size.
    pub max_concurrent_requests: usize,
    /// Override of the bucket's hedge settings.
    pub hedge: yatagarasu_middleware::failover::ReplicaHedge,
}

/// A role a replica assumes through STS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleConfig {
    /// The role's ARN.
    pub arn: String,
    /// Its external id, when the trust policy asks for one.
    pub external_id: Option<Secret>,
    /// The role session name.
    pub session_name: String,
}

impl S3Config {
    /// The replicas in priority order, inheriting from this block; the block
    /// itself (named `default`) when no replica is listed.
    pub fn resolved_replicas(&self) -> Vec<ResolvedReplica> {
        let parent = ReplicaConfig {
            name: "default".into(),
            ..ReplicaConfig::default()
        };
        let list: Vec<&ReplicaConfig> = if self.replicas.is_empty() {
            vec![&parent]
        } else {
            self.replicas.iter().collect()
        };
        let mut out: Vec<ResolvedReplica> = list
            .into_iter()
            .map(|r| {
                let access = r.access_key.clone().or_else(|| self.access_key.clone());
                let secret = r.secret_key.clone().or_else(|| self.secret_key.clone());
                ResolvedReplica {
                    name: r.name.clone(),
                    endpoint: r
                        .endpoint
                        .as_ref()
                        .or(self.endpoint.as_ref())
                        .and_then(|e| e.parse().ok()),
                    bucket: r.bucket.clone().unwrap_or_else(|| self.bucket.clone()),
                    region: r.region.clone().unwrap_or_else(|| self.region.clone()),
                    credentials: access.zip(secret),
                    session_token: r.session_token.clone().or_else(|| self.session_token.clone()),
                    role: r.role_arn.as_ref().or(self.role_arn.as_ref()).map(|arn| RoleConfig {
                        arn: arn.clone(),
                        external_id: r.external_id.clone().or_else(|| self.external_id.clone()),
                        session_name: r
                            .session_name
                            .clone()
                            .or_else(|| self.session_name.clone())
                            .unwrap_or_else(|| "yatagarasu".into()),
                    }),
                    anonymous: r.anonymous.unwrap_or(self.anonymous),
                    ca_file: r.ca_file.clone().or_else(|| self.ca_file.clone()),
                    priority: r.priority,
                    timeout_seconds: r.timeout_seconds.unwrap_or(self.timeout_seconds),
                    weight: r.weight.max(1),
                    max_concurrent_requests: r.max_concurrent_requests.unwrap_or(self.max_concurrent_requests),
                    hedge: r.hedge.to_replica_hedge(),
                }
            })
            .collect();
        out.sort_by_key(|r| r.priority);
        out
    }
}
