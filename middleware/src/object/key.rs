use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Why a request path cannot name an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing after the prefix: a bucket listing, which the proxy does not serve.
    #[error("no object key in the path")]
    Empty,
    /// A `.` or `..` segment (also percent-encoded) that could walk out of the key.
    #[error("the path contains a '.' or '..' segment")]
    DotSegment,
    /// The percent-decoded bytes are not UTF-8.
    #[error("the path is not valid UTF-8 once decoded")]
    BadEncoding,
    /// The decoded key holds a control character (NUL, tab, newline...):
    /// refused, as they can split log lines and upstream requests.
    #[error("the object key contains a control character (such as NUL, tab or newline)")]
    ControlCharacter,
    /// Longer than S3's 1024-byte key limit.
    #[error("the object key is longer than 1024 bytes")]
    TooLong,
}

/// Decodes the object key from a path relative to its bucket (`/dir/a%20b.txt`
/// gives `dir/a b.txt`).
///
/// `+` stays `+` (it is a space only in query strings). Keys with a `.` or `..`
/// segment are refused, raw or encoded, so no key can resolve to another key or
/// bucket once it is put in an upstream URL.
pub fn decode_key(path: &str) -> Result<String, KeyError> {
    decode(path).map(Cow::into_owned)
}

/// [`decode_key`], shared: one allocation (the key an
/// [`ObjectRequest`](super::ObjectRequest) holds).
pub(crate) fn decode_shared_key(path: &str) -> Result<std::sync::Arc<str>, KeyError> {
    decode(path).map(|key| std::sync::Arc::from(&*key))
}

fn decode(path: &str) -> Result<Cow<'_, str>, KeyError> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw.is_empty() {
        return Err(KeyError::Empty);
    }
    // Most keys are printable ASCII without escapes: nothing to decode and
    // no control character, checked a byte at a time (issue 13: the general
    // path walked the key as characters three times).
    let key: Cow<'_, str> = if raw.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'%') {
        Cow::Borrowed(raw)
    } else {
        let key = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| KeyError::BadEncoding)?;
        if key.chars().any(|c| c.is_control()) {
            return Err(KeyError::ControlCharacter);
        }
        key
    };
    // A backslash separates segments too for some stores and gateways. Both
    // separators are ASCII, so bytes split where characters would.
    if key
        .as_bytes()
        .split(|&b| b == b'/' || b == b'\\')
        .any(|seg| seg == b"." || seg == b"..")
    {
        return Err(KeyError::DotSegment);
    }
    if key.len() > 1024 {
        return Err(KeyError::TooLong);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The decoding before its byte-at-a-time fast path, as the reference.
    fn reference(path: &str) -> Result<Cow<'_, str>, KeyError> {
        let raw = path.strip_prefix('/').unwrap_or(path);
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        let key: Cow<'_, str> = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| KeyError::BadEncoding)?;
        if key.chars().any(|c| c.is_control()) {
            return Err(KeyError::ControlCharacter);
        }
        if key.split(['/', '\\']).any(|seg| seg == "." || seg == "..") {
            return Err(KeyError::DotSegment);
        }
        if key.len() > 1024 {
            return Err(KeyError::TooLong);
        }
        Ok(key)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn decodes_as_the_reference(
            path in prop_oneof![
                any::<String>(),
                "[/a-z.\\\\%0-9A-F ~\\x7f\\x00-\\x1f]{0,24}",
                "(/|\\.|\\.\\.|%2[eEfF]|%5[cC]|%[0-9a-fA-F]{2}|[a-z]|\\\\){0,12}",
                "[a-z/]{1020,1030}",
            ]
        ) {
            prop_assert_eq!(decode(&path), reference(&path));
        }
    }

    #[test]
    fn decodes_odd_keys() {
        assert_eq!(decode_key("/a%20b+c.txt").unwrap(), "a b+c.txt");
        assert_eq!(
            decode_key("/dir/sub/%E6%97%A5%E6%9C%AC.txt").unwrap(),
            "dir/sub/日本.txt"
        );
        assert_eq!(decode_key("/100%25.txt").unwrap(), "100%.txt");
        assert_eq!(decode_key("/a..b/..c").unwrap(), "a..b/..c");
        assert_eq!(decode_key("/dir%5c..%5cx"), Err(KeyError::DotSegment));
        assert_eq!(decode_key("/..%5Cx"), Err(KeyError::DotSegment));
    }

    #[test]
    fn refuses_traversal_raw_and_encoded() {
        for p in [
            "/../x",
            "/a/../../b",
            "/%2e%2e/x",
            "/a/%2E%2e%2fb",
            "/a/.",
            "/./a",
            "/a%2f..%2fb",
        ] {
            assert_eq!(decode_key(p), Err(KeyError::DotSegment), "{p}");
        }
    }

    #[test]
    fn refuses_empty_and_bad_bytes() {
        assert_eq!(decode_key("/"), Err(KeyError::Empty));
        assert_eq!(decode_key(""), Err(KeyError::Empty));
        assert_eq!(decode_key("/%ff%fe"), Err(KeyError::BadEncoding));
        assert_eq!(decode_key("/a%00b"), Err(KeyError::ControlCharacter));
        assert_eq!(decode_key("/a%09b"), Err(KeyError::ControlCharacter));
        assert_eq!(decode_key(&format!("/{}", "k".repeat(1025))), Err(KeyError::TooLong));
    }
}
