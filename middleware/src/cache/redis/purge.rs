//! Purging by pattern: `SCAN` + `UNLINK` (never `FLUSHDB`: the Redis may
//! hold other data), on every primary in cluster mode.

use deadpool_redis::redis::{self, RedisError};

use super::{RedisFailure, RedisTier};
use crate::cache::config::RedisMode;

/// Keys deleted per `UNLINK` while purging.
const PURGE_BATCH: usize = 500;

impl RedisTier {
    /// Deletes every key matching a glob pattern (SCAN + UNLINK, never FLUSHDB:
    /// the Redis may hold other data). Returns how many were deleted.
    pub(crate) async fn purge_pattern(&self, pattern: &str) -> Result<u64, RedisFailure> {
        if self.mode == RedisMode::Cluster {
            return self.purge_cluster(pattern).await;
        }
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(PURGE_BATCH),
                    self.timeout * 4,
                )
                .await?;
            let keys = self.not_the_mark(keys);
            deleted += keys.len() as u64;
            self.del(&keys).await?;
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// `keys` without the purge mark key (under `key_prefix` too, but no
    /// cached entry: deleting it would count as a purge missed at the next
    /// gap).
    fn not_the_mark(&self, mut keys: Vec<String>) -> Vec<String> {
        keys.retain(|k| *k != self.channel.mark_key);
        keys
    }

    /// Cluster purge: `SCAN` runs per node, so every primary listed by
    /// `CLUSTER NODES` is dialled directly (with the seed's scheme and
    /// credentials) and scanned; keys go one `UNLINK` each (keys of
    /// different slots cannot share one), pipelined.
    async fn purge_cluster(&self, pattern: &str) -> Result<u64, RedisFailure> {
        let nodes: String = self.run(redis::cmd("CLUSTER").arg("NODES"), self.timeout * 4).await?;
        let primaries = cluster_primaries(&nodes);
        if primaries.is_empty() {
            return Err(RedisFailure::Topology("no primary in CLUSTER NODES".into()));
        }
        let seed = url::Url::parse(&self.seeds[0]).map_err(|e| RedisFailure::Topology(e.to_string()))?;
        let mut deleted = 0;
        for (host, port) in primaries {
            let mut url = seed.clone();
            if url.set_host(Some(&host)).is_err() || url.set_port(Some(port)).is_err() {
                return Err(RedisFailure::Topology(format!("bad node address {host}:{port}")));
            }
            let op = async {
                let client = redis::Client::open(url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let mut cursor: u64 = 0;
                let mut n = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(PURGE_BATCH)
                        .query_async(&mut conn)
                        .await?;
                    let keys = self.not_the_mark(keys);
                    if !keys.is_empty() {
                        let mut pipe = redis::pipe();
                        for k in &keys {
                            pipe.cmd("UNLINK").arg(k).ignore();
                        }
                        pipe.query_async::<()>(&mut conn).await?;
                        n += keys.len() as u64;
                    }
                    if next == 0 {
                        return Ok::<u64, RedisError>(n);
                    }
                    cursor = next;
                }
            };
            deleted += tokio::time::timeout(self.timeout * 40, op)
                .await
                .map_err(|_| RedisFailure::Timeout)??;
        }
        Ok(deleted)
    }
}

/// `(host, port)` of every primary in `CLUSTER NODES` output that is not
/// marked failed.
fn cluster_primaries(nodes: &str) -> Vec<(String, u16)> {
    cluster_nodes(nodes, true)
}

/// `(host, port)` of every node (or only the primaries) in `CLUSTER NODES`
/// output that is not marked failed.
pub(super) fn cluster_nodes(nodes: &str, primaries_only: bool) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if (primaries_only && !flags.contains(&"master"))
                || flags.iter().any(|f| f.starts_with("fail") || *f == "noaddr")
            {
                return None;
            }
            // ip:port@cport[,hostname]
            let hostport = addr.split(['@', ',']).next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Escapes glob metacharacters for `SCAN MATCH`.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_live_primaries_in_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003,host-c master,fail - 0 0 3 connected
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
";
        assert_eq!(
            cluster_primaries(nodes),
            vec![("127.0.0.1".to_owned(), 7001), ("127.0.0.1".to_owned(), 7002)]
        );
        assert_eq!(cluster_nodes(nodes, false).len(), 3);
    }

    #[test]
    fn escapes_glob() {
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
