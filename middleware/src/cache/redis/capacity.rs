//! `max_capacity`: a write is refused when Redis' own `used_memory`, read
//! from `INFO memory` at most every few seconds, leaves no room for it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use deadpool_redis::redis;

use super::RedisTier;

/// How often `INFO memory` is read for the capacity check.
const USED_MEMORY_REFRESH: Duration = Duration::from_secs(5);

impl RedisTier {
    /// Whether Redis' own `used_memory`, read at most every few seconds,
    /// leaves room for `len` more bytes under `max_capacity`.
    pub(super) async fn has_room(&self, len: u64) -> bool {
        if self.max_capacity == 0 {
            return true;
        }
        let refresh = {
            let mut checked = self.used_checked.lock().unwrap_or_else(|e| e.into_inner());
            match *checked {
                Some(at) if at.elapsed() < USED_MEMORY_REFRESH => false,
                _ => {
                    *checked = Some(Instant::now());
                    true
                }
            }
        };
        if refresh {
            if let Ok(info) = self
                .run::<redis::Value>(redis::cmd("INFO").arg("memory"), self.timeout)
                .await
            {
                if let Some(used) = used_memory_of(&info) {
                    self.used_memory.store(used, Ordering::Relaxed);
                }
            }
        }
        self.used_memory.load(Ordering::Relaxed).saturating_add(len) <= self.max_capacity
    }
}

/// `used_memory` from an `INFO memory` reply: one node's text, or (cluster
/// mode, where `INFO` goes to every primary) the sum over the per-node map.
fn used_memory_of(info: &redis::Value) -> Option<u64> {
    match info {
        redis::Value::BulkString(b) => parse_used_memory(&String::from_utf8_lossy(b)),
        redis::Value::SimpleString(s) => parse_used_memory(s),
        redis::Value::VerbatimString { text, .. } => parse_used_memory(text),
        redis::Value::Map(nodes) => nodes
            .iter()
            .map(|(_, v)| used_memory_of(v))
            .try_fold(0u64, |sum, n| n.map(|n| sum.saturating_add(n))),
        _ => None,
    }
}

fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_memory() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(parse_used_memory(info), Some(1_048_576));
        let node = |n: &str| redis::Value::BulkString(format!("# Memory\r\nused_memory:{n}\r\n").into_bytes());
        let cluster = redis::Value::Map(vec![
            (redis::Value::SimpleString("127.0.0.1:7001".into()), node("100")),
            (redis::Value::SimpleString("127.0.0.1:7002".into()), node("23")),
        ]);
        assert_eq!(used_memory_of(&cluster), Some(123));
    }
}
