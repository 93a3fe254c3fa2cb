//! The cache's keys: one per object (or slice, or slice index), scoped by
//! bucket, with a Redis Cluster hash tag, and the patterns that find them.

use std::sync::Arc;

use super::super::redis::glob_escape;
use super::CacheStore;

/// `{` + 16 hex digits + `}`: the hash tag after the key prefix.
const TAG_LEN: usize = 18;

/// `<len>:<bucket>/<kind>:<key>`: what follows the hash tag.
fn write_scoped(out: &mut String, len: &str, bucket: &str, key: &str, kind: &str) {
    for part in [len, ":", bucket, "/", kind, ":", key] {
        out.push_str(part);
    }
}

impl CacheStore {
    /// The cache key of an object: prefix, a cluster hash tag of bucket and
    /// key, length-prefixed bucket, `o:`, key. The same key in two buckets
    /// never collides, whatever the names contain. Every entry of one object
    /// (the object, or its slices and their index) carries the same hash tag,
    /// so in a Redis Cluster one object lives on one shard.
    /// Only bucket and key vary a cached answer: ranges and preconditions are
    /// answered from the full object.
    pub fn cache_key(&self, bucket: &str, key: &str) -> String {
        self.entry_key(bucket, key, "o")
    }

    /// The key of one entry of an object; `kind` is `o` (whole object), `m`
    /// (index of a sliced object) or `s<size>.<n>` (slice `n`).
    pub(crate) fn entry_key(&self, bucket: &str, key: &str, kind: &str) -> String {
        let mut out = String::new();
        self.write_entry_key(&mut out, bucket, key, kind);
        out
    }

    /// [`Self::cache_key`] as the memory tier's key type, built in a
    /// per-thread buffer: one allocation per lookup instead of two.
    pub(crate) fn shared_cache_key(&self, bucket: &str, key: &str) -> Arc<str> {
        thread_local! {
            static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        BUF.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                self.write_entry_key(&mut buf, bucket, key, "o");
                Arc::from(buf.as_str())
            }
            Err(_) => Arc::from(self.cache_key(bucket, key)),
        })
    }

    /// Writes the entry key into `out` (cleared by the caller).
    fn write_entry_key(&self, out: &mut String, bucket: &str, key: &str, kind: &str) {
        // Built in one buffer without `format!` (this runs on every lookup):
        // the hash tag covers `<len>:<bucket>/<key>`, as `{scoped}{key}` did.
        let mut digits = itoa::Buffer::new();
        let len = digits.format(bucket.len());
        let mut tag = xxhash_rust::xxh3::Xxh3Default::new();
        for part in [len, ":", bucket, "/", key] {
            tag.update(part.as_bytes());
        }
        let mut tag_hex = [0u8; 16];
        // 8 bytes always fit 16 hex digits.
        let _ = hex::encode_to_slice(tag.digest().to_be_bytes(), &mut tag_hex);
        let prefix = &self.inner.key_prefix;
        out.reserve(prefix.len() + TAG_LEN + len.len() + bucket.len() + kind.len() + key.len() + 3);
        out.push_str(prefix);
        out.push('{');
        out.push_str(std::str::from_utf8(&tag_hex).unwrap_or_default());
        out.push('}');
        write_scoped(out, len, bucket, key, kind);
    }

    /// Calls `f` with the scoped part of an entry key
    /// ([`Self::scoped_part`]), written in a per-thread buffer: no allocation.
    pub(super) fn with_scoped_key<R>(&self, bucket: &str, key: &str, kind: &str, f: impl FnOnce(&str) -> R) -> R {
        thread_local! {
            static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let mut digits = itoa::Buffer::new();
        let len = digits.format(bucket.len());
        BUF.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                write_scoped(&mut buf, len, bucket, key, kind);
                f(&buf)
            }
            Err(_) => {
                let mut own = String::new();
                write_scoped(&mut own, len, bucket, key, kind);
                f(&own)
            }
        })
    }

    /// The object key inside the cache key of a whole object of `bucket`.
    pub(crate) fn object_name<'k>(&self, bucket: &str, cache_key: &'k str) -> Option<&'k str> {
        let scoped = format!("{}:{}/o:", bucket.len(), bucket);
        self.scoped_part(cache_key)?.strip_prefix(scoped.as_str())
    }

    /// The part of a key after prefix and hash tag (`<len>:<bucket>/...`).
    pub(super) fn scoped_part<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.inner.key_prefix.as_str())?.get(TAG_LEN..)
    }

    /// The `SCAN MATCH` pattern of every entry of `bucket`.
    pub(super) fn bucket_pattern(&self, bucket: &str) -> String {
        format!(
            "{}{{{}}}{}*",
            glob_escape(&self.inner.key_prefix),
            "?".repeat(16),
            glob_escape(&format!("{}:{}/", bucket.len(), bucket))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheConfig;

    /// The keys are shared with other instances through Redis: the
    /// one-buffer builder must give exactly the keys of the original
    /// `format!` chain.
    #[test]
    fn entry_keys_keep_their_format() {
        let store = CacheStore::new(&CacheConfig::default()).unwrap();
        for (bucket, key, kind) in [
            ("b", "k", "o"),
            ("assets", "dir/a b.png", "m"),
            ("x:y", "", "s1048576.3"),
            ("a-bucket-with-a-name-over-ten-chars", "k", "o"),
        ] {
            let scoped = format!("{}:{}/", bucket.len(), bucket);
            let tag = xxhash_rust::xxh3::xxh3_64(format!("{scoped}{key}").as_bytes());
            let expected = format!("{}{{{tag:016x}}}{scoped}{kind}:{key}", store.inner.key_prefix);
            assert_eq!(store.entry_key(bucket, key, kind), expected);
            assert_eq!(&*store.shared_cache_key(bucket, key), store.cache_key(bucket, key));
        }
        assert_eq!(
            store.object_name("assets", &store.cache_key("assets", "a/b")),
            Some("a/b")
        );
    }
}
