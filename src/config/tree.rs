//! Walks over the merged config tree (JSON values): `${VAR}` substitution,
//! retyping a substituted string for a numeric key, the secrets to redact,
//! and the unknown keys serde cannot see.

use serde_json::Value;

use super::env;
use super::load::ConfigError;

/// Keys whose values are never printed in an error.
const SECRET_KEYS: [&str; 7] = [
    "secret",
    "secret_key",
    "access_key",
    "admin_token",
    "password",
    "session_token",
    "secret_access_key",
];

/// The merged tree as JSON values, which deserialize strictly (a string is
/// never read as a number, nor a number as a boolean).
pub(super) fn to_json(kind: config::ValueKind) -> Value {
    use config::ValueKind as K;
    let number = |text: String, n: Option<serde_json::Number>| n.map(Value::Number).unwrap_or(Value::String(text));
    match kind {
        K::Nil => Value::Null,
        K::Boolean(b) => Value::Bool(b),
        K::I64(i) => i.into(),
        K::U64(u) => u.into(),
        K::I128(i) => number(i.to_string(), serde_json::Number::from_i128(i)),
        K::U128(u) => number(u.to_string(), serde_json::Number::from_u128(u)),
        K::Float(f) => number(f.to_string(), serde_json::Number::from_f64(f)),
        K::String(s) => Value::String(s),
        K::Table(map) => Value::Object(map.into_iter().map(|(k, v)| (k, to_json(v.kind))).collect()),
        K::Array(items) => Value::Array(items.into_iter().map(|v| to_json(v.kind)).collect()),
    }
}

/// Replaces every secret value (of at least 3 characters) in `message`.
pub(super) fn redact(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for s in secrets.iter().filter(|s| s.chars().count() >= 3) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// Every scalar under a secret key, as text.
pub(super) fn collect_secrets(value: &Value, key: Option<&str>, out: &mut Vec<String>) {
    let secret = key.is_some_and(|k| SECRET_KEYS.contains(&k));
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect_secrets(v, Some(k), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_secrets(v, None, out)),
        Value::String(s) if secret => out.push(s.clone()),
        Value::Number(n) if secret => out.push(n.to_string()),
        Value::Bool(b) if secret => out.push(b.to_string()),
        _ => {}
    }
}

/// The value at `path` (`a.b[2].c`), to give a substituted string the
/// scalar type YAML reads in it; false when there is nothing to change.
pub(super) fn retype(root: &mut Value, path: &str) -> bool {
    let mut node = root;
    for part in split_path(path) {
        node = match (node, part) {
            (Value::Object(map), PathPart::Key(k)) => match map.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Value::Array(items), PathPart::Index(i)) => match items.get_mut(i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    let Value::String(s) = node else { return false };
    let typed = match super::yaml::resolve_plain(s.trim()) {
        Some(kind @ (config::ValueKind::Boolean(_) | config::ValueKind::I64(_) | config::ValueKind::U64(_))) => kind,
        Some(config::ValueKind::Float(f)) if f.is_finite() => config::ValueKind::Float(f),
        _ => return false,
    };
    *node = to_json(typed);
    true
}

enum PathPart<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<PathPart<'_>> {
    let mut parts = Vec::new();
    for segment in path.split('.') {
        let (key, mut rest) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            parts.push(PathPart::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                parts.push(PathPart::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    parts
}

/// The keys of each `type` of `jwt.token_sources[]` entry: an internally
/// tagged enum, whose unknown keys serde would otherwise drop silently.
pub(super) fn token_source_keys(value: &Value, errors: &mut Vec<ConfigError>) {
    let check = |sources: &Value, at: &str, errors: &mut Vec<ConfigError>| {
        let Value::Array(items) = sources else { return };
        for (i, item) in items.iter().enumerate() {
            let Value::Object(map) = item else { continue };
            let allowed: &[&str] = match map.get("type").and_then(Value::as_str) {
                Some("bearer") => &["type"],
                Some("header") => &["type", "name", "prefix"],
                Some("query") => &["type", "name"],
                _ => continue,
            };
            for k in map.keys() {
                if !allowed.contains(&k.as_str()) {
                    errors.push(ConfigError::new(format!("{at}.token_sources[{i}].{k}"), "unknown key"));
                }
            }
        }
    };
    if let Some(s) = value.get("jwt").and_then(|j| j.get("token_sources")) {
        check(s, "jwt", errors);
    }
    if let Some(Value::Array(buckets)) = value.get("buckets") {
        for (b, bucket) in buckets.iter().enumerate() {
            if let Some(s) = bucket
                .get("auth")
                .and_then(|a| a.get("jwt"))
                .and_then(|j| j.get("token_sources"))
            {
                check(s, &format!("buckets[{b}].auth.jwt"), errors);
            }
        }
    }
}

/// Expands `${VAR}` in every string of the tree but those at `skip`. The
/// result stays a string; the paths of values that were one whole `${...}`
/// go to `substituted`, so that a numeric or boolean key can read them as
/// its type.
pub(super) fn substitute_all(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    skip: &[&str],
    errors: &mut Vec<ConfigError>,
    substituted: &mut Vec<String>,
) {
    match value {
        Value::String(s) if s.contains("${") && !skip.contains(&path.as_str()) => match env::substitute(s, lookup) {
            Ok(expanded) => {
                substituted.push(path.clone());
                *value = Value::String(expanded);
            }
            Err(problems) => {
                for problem in problems {
                    errors.push(ConfigError::new(path.clone(), problem));
                }
            }
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute_all(item, path, lookup, skip, errors, substituted);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                substitute_all(v, path, lookup, skip, errors, substituted);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// `buckets[0].s3.foo` from serde_ignored's path.
pub(super) fn display_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", display_path(parent)),
        Path::Map { parent, key } => {
            let p = display_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            display_path(parent)
        }
    }
}
