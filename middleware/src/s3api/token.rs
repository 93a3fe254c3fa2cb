//! The proxy's own continuation tokens: the last key (or common prefix) of a
//! page, bound to the bucket and authenticated, so page 2 can be asked of any
//! replica (as `start-after`) whichever one served page 1.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the HMAC tag kept in a token.
const TAG_LEN: usize = 16;

/// Mints and checks continuation tokens with one HMAC key.
///
/// A token says "continue after this key" for one bucket; it is opaque to
/// clients and refused when altered or minted for another bucket.
#[derive(Clone)]
pub struct TokenKey {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// A key from configured secret bytes (share it between the instances
    /// behind one load balancer so a token minted by one is honoured by all).
    pub fn new(secret: &[u8]) -> Self {
        Self { key: secret.into() }
    }

    /// The process's random key, made once: tokens stay valid across config
    /// reloads but not across restarts.
    pub fn process() -> Self {
        static KEY: OnceLock<TokenKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let mut secret = Vec::with_capacity(32);
            secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            Self::new(&secret)
        })
        .clone()
    }

    fn mac(&self, bucket: &str, last: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(bucket.as_bytes());
        mac.update(&[0]);
        mac.update(last.as_bytes());
        mac
    }

    /// The token meaning "after `last`" in `bucket`.
    pub fn mint(&self, bucket: &str, last: &str) -> String {
        let tag = self.mac(bucket, last).finalize().into_bytes();
        let mut raw = Vec::with_capacity(TAG_LEN + last.len());
        raw.extend_from_slice(&tag[..TAG_LEN]);
        raw.extend_from_slice(last.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The key a token continues after, if this key minted it for `bucket`.
    pub fn open(&self, bucket: &str, token: &str) -> Option<String> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if raw.len() < TAG_LEN {
            return None;
        }
        let (tag, last) = raw.split_at(TAG_LEN);
        let last = std::str::from_utf8(last).ok()?;
        self.mac(bucket, last).verify_truncated_left(tag).ok()?;
        Some(last.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_key_and_bucket() {
        let key = TokenKey::new(b"k1");
        let token = key.mint("data", "dir/日本 +x.txt");
        assert_eq!(key.open("data", &token).as_deref(), Some("dir/日本 +x.txt"));
        assert_eq!(key.open("other", &token), None);
        assert_eq!(TokenKey::new(b"k2").open("data", &token), None);
        let mut forged = URL_SAFE_NO_PAD.decode(&token).unwrap();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(key.open("data", &URL_SAFE_NO_PAD.encode(forged)), None);
        assert_eq!(key.open("data", "not base64 !"), None);
        assert_eq!(key.open("data", ""), None);
        assert!(!format!("{key:?}").contains("k1"));
    }
}
