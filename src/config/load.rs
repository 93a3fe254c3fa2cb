//! Reading a config file: YAML -> `${VAR}` substitution -> typed structs
//! (unknown keys collected, not fatal) -> validation.

use std::fmt;
use std::path::Path;

use serde_yaml::Value;

use super::{env, validate, Config};

/// One problem in a config file, naming its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `buckets[1].path_prefix`, or empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// Where the config came from.
    pub source_name: String,
    /// The problems, in file order where possible.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration {} ({} error(s)):",
            self.source_name,
            self.errors.len()
        )?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// The largest config file read (a config is a few KiB; this refuses
/// `/dev/zero` and the like before they exhaust memory).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The deepest nesting of flow collections (`[`, `{`) accepted: the YAML
/// parser's time grows quadratically with it.
pub const MAX_NESTING: usize = 32;

/// Keys whose values are never printed in an error.
const SECRET_KEYS: [&str; 5] = ["secret", "secret_key", "access_key", "admin_token", "password"];

/// Loads and validates a config file, with variables from the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    use std::io::Read;
    let name = path.display().to_string();
    let fail = |message: String| ConfigErrors {
        source_name: name.clone(),
        errors: vec![ConfigError::new("", message)],
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!("the file is larger than {MAX_CONFIG_BYTES} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("the file is not UTF-8 text".into()))?;
    load_str(&text, &name, &|var| std::env::var(var).ok())
}

/// The deepest nesting of `[`/`{` outside quoted scalars and comments.
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = ' ';
    for c in text.chars() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if c == q && !(q == '"' && prev == '\\') {
                quote = None;
            }
        } else {
            match c {
                '"' | '\'' => quote = Some(c),
                '#' if prev.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        prev = c;
    }
    max
}

/// Loads and validates config text, with variables from `lookup`.
pub fn load_str(
    text: &str,
    source_name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut secrets = Vec::new();
    let result = load_inner(text, lookup, &mut secrets);
    result.map_err(|errors| ConfigErrors {
        source_name: source_name.to_owned(),
        errors: errors
            .into_iter()
            .map(|mut e| {
                e.message = redact(&e.message, &secrets);
                e
            })
            .collect(),
    })
}

fn load_inner(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<Config, Vec<ConfigError>> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(vec![ConfigError::new(
            "",
            format!("the config is larger than {MAX_CONFIG_BYTES} bytes"),
        )]);
    }
    if flow_depth(text) > MAX_NESTING {
        return Err(vec![ConfigError::new(
            "",
            format!("brackets nest deeper than {MAX_NESTING} levels"),
        )]);
    }
    let mut value: Value =
        serde_yaml::from_str(text).map_err(|e| vec![ConfigError::new("", format!("not valid YAML: {e}"))])?;
    if value.is_null() {
        value = Value::Mapping(Default::default());
    }
    let mut errors = Vec::new();
    let mut substituted = Vec::new();
    substitute_all(&mut value, &mut String::new(), lookup, &mut errors, &mut substituted);
    collect_secrets(&value, None, secrets);
    token_source_keys(&value, &mut errors);

    // A substituted value is a string; where the key wants a number or a
    // boolean, it is read as one (the key's type decides, not the value's look).
    let (parsed, unknown) = loop {
        let mut unknown = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(display_path(&path));
        let de = serde_ignored::Deserializer::new(value.clone(), &mut record);
        let parsed: Result<Config, _> = serde_path_to_error::deserialize(de);
        if let Err(e) = &parsed {
            let path = e.path().to_string();
            if let Some(i) = substituted.iter().position(|p| *p == path) {
                substituted.swap_remove(i);
                if retype(&mut value, &path) {
                    continue;
                }
            }
        }
        break (parsed, unknown);
    };
    for path in unknown {
        errors.push(ConfigError::new(path, "unknown key"));
    }
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            errors.push(ConfigError::new(path, e.into_inner().to_string()));
            return Err(errors);
        }
    };
    errors.extend(validate::validate(&config));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Replaces every secret value (of at least 3 characters) in `message`.
fn redact(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for s in secrets.iter().filter(|s| s.chars().count() >= 3) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// Every scalar under a secret key, as text.
fn collect_secrets(value: &Value, key: Option<&str>, out: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                collect_secrets(v, k.as_str(), out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_secrets(v, None, out)),
        Value::Tagged(t) => collect_secrets(&t.value, key, out),
        Value::String(s) if key.is_some_and(|k| SECRET_KEYS.contains(&k)) => out.push(s.clone()),
        Value::Number(n) if key.is_some_and(|k| SECRET_KEYS.contains(&k)) => out.push(n.to_string()),
        Value::Bool(b) if key.is_some_and(|k| SECRET_KEYS.contains(&k)) => out.push(b.to_string()),
        _ => {}
    }
}

/// The value at `path` (`a.b[2].c`), to give a substituted string the
/// scalar type YAML reads in it; false when there is nothing to change.
fn retype(root: &mut Value, path: &str) -> bool {
    let mut node = root;
    for part in split_path(path) {
        node = match (node, part) {
            (Value::Mapping(map), PathPart::Key(k)) => match map.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Value::Sequence(items), PathPart::Index(i)) => match items.get_mut(i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    let Value::String(s) = node else { return false };
    match serde_yaml::from_str::<Value>(s) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => {
            *node = v;
            true
        }
        _ => false,
    }
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
fn token_source_keys(value: &Value, errors: &mut Vec<ConfigError>) {
    let check = |sources: &Value, at: &str, errors: &mut Vec<ConfigError>| {
        let Value::Sequence(items) = sources else { return };
        for (i, item) in items.iter().enumerate() {
            let Value::Mapping(map) = item else { continue };
            let allowed: &[&str] = match map.get("type").and_then(Value::as_str) {
                Some("bearer") => &["type"],
                Some("header") => &["type", "name", "prefix"],
                Some("query") => &["type", "name"],
                _ => continue,
            };
            for k in map.keys() {
                let k = k.as_str().unwrap_or("?");
                if !allowed.contains(&k) {
                    errors.push(ConfigError::new(format!("{at}.token_sources[{i}].{k}"), "unknown key"));
                }
            }
        }
    };
    if let Some(s) = value.get("jwt").and_then(|j| j.get("token_sources")) {
        check(s, "jwt", errors);
    }
    if let Some(Value::Sequence(buckets)) = value.get("buckets") {
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

/// Expands `${VAR}` in every string of the tree. The result stays a string;
/// the paths of values that were one whole `${...}` go to `substituted`, so
/// that a numeric or boolean key can read them as its type.
fn substitute_all(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
    substituted: &mut Vec<String>,
) {
    match value {
        Value::String(s) if s.contains("${") => match env::substitute(s, lookup) {
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
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute_all(item, path, lookup, errors, substituted);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k.as_str().unwrap_or("?"));
                substitute_all(v, path, lookup, errors, substituted);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => substitute_all(&mut tagged.value, path, lookup, errors, substituted),
        _ => {}
    }
}

/// `buckets[0].s3.foo` from serde_ignored's path.
fn display_path(path: &serde_ignored::Path<'_>) -> String {
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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any text, YAML or not, gives a config or errors: never a panic.
        #[test]
        fn arbitrary_config_text_never_panics(text in "\\PC{0,200}") {
            let _ = super::load_str(&text, "<prop>", &|_| None);
        }

        /// Valid YAML of arbitrary shape under the real top-level keys.
        #[test]
        fn arbitrary_values_under_real_keys_never_panic(
            key in prop_oneof![Just("server"), Just("buckets"), Just("cache"), Just("jwt"), Just("metrics"), Just("health_check")],
            value in prop_oneof![Just("1"), Just("[]"), Just("{}"), Just("~"), Just("\"${X}\""), Just("[{name: a, path_prefix: /a, s3: {bucket: b}}]"), Just("{address: x, port: -1}")],
        ) {
            let _ = super::load_str(&format!("{key}: {value}\n"), "<prop>", &|_| None);
        }

        /// `${VAR}` expansion of arbitrary text never panics; text without
        /// `$` is left as is.
        #[test]
        fn substitution_never_panics(text in "[a-z$:{}\\-_ ]{0,60}") {
            let out = super::env::substitute(&text, &|name| (name == "A").then(|| "v".to_owned()));
            if !text.contains('$') {
                prop_assert_eq!(out.unwrap(), text);
            }
        }

        /// Substituted values fill numeric and string keys alike, whatever
        /// the characters of the value; numbers out of range are named errors.
        #[test]
        fn substituted_values_take_their_key_type(port in any::<u64>(), secret in "[ -~]{1,40}") {
            let yaml = "metrics: { port: \"${P}\", admin_token: \"${T}\" }\nbuckets: [{ name: a, path_prefix: /a, s3: { bucket: b } }]\n";
            let lookup = |name: &str| match name {
                "P" => Some(port.to_string()),
                "T" => Some(secret.clone()),
                _ => None,
            };
            match super::load_str(yaml, "<prop>", &lookup) {
                Ok(c) => {
                    prop_assert_eq!(u64::from(c.metrics.port), port);
                    let token = c.metrics.admin_token.unwrap();
                    prop_assert_eq!(token.expose(), secret.as_str());
                }
                Err(e) => {
                    let text = e.to_string();
                    prop_assert!(port > u64::from(u16::MAX) || port == 8080 || secret.trim().is_empty(), "{}", text);
                    if secret.len() >= 3 {
                        prop_assert!(!text.contains(&secret), "{}", text);
                    }
                }
            }
        }
    }

    /// A share of generated configs is accepted (the property above is not vacuous).
    #[test]
    fn typed_substitution_accepts_valid_values() {
        let mut accepted = 0;
        for port in [0u64, 1, 80, 9090, 65535, 65536, u64::MAX] {
            let yaml = "metrics: { port: \"${P}\" }\nbuckets: [{ name: a, path_prefix: /a, s3: { bucket: b } }]\n";
            if super::load_str(yaml, "<t>", &|_| Some(port.to_string())).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 5);
    }
}
