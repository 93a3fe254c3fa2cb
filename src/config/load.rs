//! Reading a config file: the file (YAML, TOML or JSON) with the
//! `YATAGARASU__*` environment overrides layered over it by the `config`
//! crate -> `${VAR}` substitution -> typed structs (unknown keys collected,
//! not fatal) -> validation.

use std::fmt;
use std::path::Path;

use serde_json::Value;

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
const SECRET_KEYS: [&str; 7] = [
    "secret",
    "secret_key",
    "access_key",
    "admin_token",
    "password",
    "session_token",
    "secret_access_key",
];

/// Environment variables named `YATAGARASU__<KEY>__<KEY>...` override one key
/// of the file each (`YATAGARASU__SERVER__ADDRESS` sets `server.address`; a
/// number selects an existing list entry: `YATAGARASU__BUCKETS__0__S3__SECRET_KEY`).
pub const ENV_PREFIX: &str = "YATAGARASU__";

/// The file's format, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml`, `.yml`, and any other extension.
    Yaml,
    /// `.toml`.
    Toml,
    /// `.json`.
    Json,
}

impl Format {
    /// `.toml` and `.json` by name (any case); YAML otherwise.
    pub fn from_path(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => Self::Toml,
            Some("json") => Self::Json,
            _ => Self::Yaml,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Yaml => "YAML",
            Self::Toml => "TOML",
            Self::Json => "JSON",
        }
    }
}

/// Loads and validates a config file (its format by extension), with
/// `${VAR}` from the process environment and the process's `YATAGARASU__*`
/// variables layered over the file.
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
    let mut overrides = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| is_override(n)) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| fail(format!("environment variable {name} is not UTF-8 text")))?;
        overrides.push((name.to_owned(), value));
    }
    let lookup = |var: &str| std::env::var(var).ok();
    load(&text, Format::from_path(path), &name, &lookup, &overrides)
}

/// Whether an environment variable is an override (`YATAGARASU__...`, any case).
fn is_override(name: &str) -> bool {
    name.get(..ENV_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
}

/// Loads and validates YAML config text, with variables from `lookup` and no
/// overrides.
pub fn load_str(
    text: &str,
    source_name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load(text, Format::Yaml, source_name, lookup, &[])
}

/// Loads and validates config text in `format`: `${VAR}` from `lookup`, then
/// `overrides` (`(name, value)` pairs; those named `YATAGARASU__...` apply)
/// layered over the file.
pub fn load(
    text: &str,
    format: Format,
    source_name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    overrides: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    let mut secrets = Vec::new();
    let result = load_inner(text, format, lookup, overrides, &mut secrets);
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

/// A `config` crate source holding a finished table (the file, or the
/// overrides keyed by their path expressions).
#[derive(Debug, Clone)]
struct Layer(config::Map<String, config::Value>);

impl config::Source for Layer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

/// One override: the key path it sets, and the variable that set it.
struct Override {
    path: String,
    var: String,
}

fn parse_file(text: &str, format: Format) -> Result<config::Map<String, config::Value>, String> {
    let parsed = match format {
        Format::Yaml => super::yaml::parse(text),
        Format::Toml | Format::Json => {
            let kind = if format == Format::Toml {
                config::FileFormat::Toml
            } else {
                config::FileFormat::Json
            };
            config::Source::collect(&config::File::from_str(text, kind)).map_err(|e| e.to_string())
        }
    };
    parsed.map_err(|e| format!("not valid {}: {e}", format.name()))
}

fn load_inner(
    text: &str,
    format: Format,
    lookup: &dyn Fn(&str) -> Option<String>,
    overrides: &[(String, String)],
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
    let file = parse_file(text, format).map_err(|e| vec![ConfigError::new("", e)])?;
    let mut errors = Vec::new();
    let (env_layer, env) = env_overrides(&file, overrides, &mut errors);
    let merged = config::Config::builder()
        .add_source(Layer(file))
        .add_source(Layer(env_layer))
        .build()
        .and_then(|c| config::Source::collect(&c))
        .map_err(|e| vec![ConfigError::new("", e.to_string())])?;
    let mut value = to_json(config::ValueKind::Table(merged));

    // `${VAR}` in the file's values (an override's value is taken as is).
    let mut substituted: Vec<String> = env.iter().map(|o| o.path.clone()).collect();
    let skip: Vec<&str> = env.iter().map(|o| o.path.as_str()).collect();
    substitute_all(
        &mut value,
        &mut String::new(),
        lookup,
        &skip,
        &mut errors,
        &mut substituted,
    );
    collect_secrets(&value, None, secrets);
    token_source_keys(&value, &mut errors);

    // A substituted or overriding value is a string; where the key wants a
    // number or a boolean, it is read as one (the key's type decides, not
    // the value's look).
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
            return Err(name_overrides(errors, &env));
        }
    };
    errors.extend(validate::validate(&config));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(name_overrides(errors, &env))
    }
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

/// The `YATAGARASU__*` variables among `vars`, read by the `config` crate's
/// environment source (prefix `YATAGARASU`, `__` between keys, names in any
/// case, values kept as text), as a layer keyed by path expressions
/// (`buckets[0].s3.secret_key`), and which variable set which path.
fn env_overrides(
    file: &config::Map<String, config::Value>,
    vars: &[(String, String)],
    errors: &mut Vec<ConfigError>,
) -> (config::Map<String, config::Value>, Vec<Override>) {
    let vars: config::Map<String, String> = vars.iter().filter(|(n, _)| is_override(n)).cloned().collect();
    // The variable behind each key the source derives (`server.address`).
    let names: std::collections::HashMap<String, String> = vars
        .keys()
        .map(|n| (n[ENV_PREFIX.len()..].to_lowercase().replace("__", "."), n.clone()))
        .collect();
    let source = config::Environment::with_prefix(&ENV_PREFIX[..ENV_PREFIX.len() - 2])
        .prefix_separator("__")
        .separator("__")
        .try_parsing(false)
        .source(Some(vars));
    let collected = match config::Source::collect(&source) {
        Ok(c) => c,
        Err(e) => {
            errors.push(ConfigError::new("", format!("environment overrides: {e}")));
            return Default::default();
        }
    };
    let mut layer = config::Map::new();
    let mut overrides = Vec::new();
    for (key, value) in collected {
        let var = names.get(&key).cloned().unwrap_or_else(|| key.clone());
        match env_path(file, &key) {
            Ok(path) => {
                layer.insert(path.clone(), value);
                overrides.push(Override { path, var });
            }
            Err((path, problem)) => errors.push(ConfigError::new(path, format!("{problem} (set by {var})"))),
        }
    }
    (layer, overrides)
}

/// The key path an override names (`buckets.0.name` -> `buckets[0].name`):
/// a number is an index where the file has a list there, and must name an
/// entry of it. Errors name the path reached and the problem.
fn env_path(file: &config::Map<String, config::Value>, key: &str) -> Result<String, (String, String)> {
    use config::ValueKind;
    let mut path = String::new();
    let mut node: Option<&ValueKind> = None;
    for (i, segment) in key.split('.').enumerate() {
        let is_index = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
        match node {
            Some(ValueKind::Array(items)) => {
                let index = match segment.parse::<usize>() {
                    Ok(index) if is_index && index < items.len() => index,
                    _ => {
                        let problem = format!(
                            "is a list of {} entries: the environment can set a key of an entry by its \
                             index (from 0), not '{segment}'",
                            items.len()
                        );
                        return Err((path, problem));
                    }
                };
                path.push_str(&format!("[{index}]"));
                node = Some(&items[index].kind);
            }
            _ => {
                let valid = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(segment);
                if !valid {
                    return Err((path, "is not a key name (letters, digits and single '_')".into()));
                }
                node = match node {
                    None if i == 0 => file.get(segment).map(|v| &v.kind),
                    Some(ValueKind::Table(map)) => map.get(segment).map(|v| &v.kind),
                    _ => None,
                };
            }
        }
    }
    Ok(path)
}

/// Whether `path` is `parent` or lies under it.
fn is_within(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Adds the variable to each error about a value an override set (the
/// error's key, or a key under it).
fn name_overrides(mut errors: Vec<ConfigError>, env: &[Override]) -> Vec<ConfigError> {
    for e in errors.iter_mut().filter(|e| !e.path.is_empty()) {
        let vars: Vec<&str> = env
            .iter()
            .filter(|o| is_within(&o.path, &e.path))
            .map(|o| o.var.as_str())
            .collect();
        if !vars.is_empty() && !e.message.contains("(set by ") {
            e.message = format!("{} (set by {})", e.message, vars.join(", "));
        }
    }
    errors
}

/// The merged tree as JSON values, which deserialize strictly (a string is
/// never read as a number, nor a number as a boolean).
fn to_json(kind: config::ValueKind) -> Value {
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
fn redact(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for s in secrets.iter().filter(|s| s.chars().count() >= 3) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// Every scalar under a secret key, as text.
fn collect_secrets(value: &Value, key: Option<&str>, out: &mut Vec<String>) {
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
fn retype(root: &mut Value, path: &str) -> bool {
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
fn token_source_keys(value: &Value, errors: &mut Vec<ConfigError>) {
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
fn substitute_all(
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

#[cfg(test)]
mod overrides {
    use super::{load, Config, ConfigErrors, Format};

    const FILE: &str = "buckets:\n  - name: a\n    path_prefix: /a\n    s3: { bucket: b, endpoint: \"http://127.0.0.1:9\", access_key: ak, secret_key: \"${SK}\" }\n";

    fn with(text: &str, format: Format, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        load(text, format, "test", &|v| (v == "SK").then(|| "sk".into()), &vars)
    }

    fn errors(vars: &[(&str, &str)]) -> String {
        with(FILE, Format::Yaml, vars).unwrap_err().to_string()
    }

    #[test]
    fn an_override_sets_its_key_and_takes_the_key_type() {
        let c = with(
            FILE,
            Format::Yaml,
            &[
                ("YATAGARASU__SERVER__ADDRESS", "127.0.0.1:7000"),
                ("YATAGARASU__METRICS__PORT", "9191"),
                ("YATAGARASU__METRICS__ENABLED", "false"),
                ("yatagarasu__server__shutdown_grace_seconds", "3"),
                ("YATAGARASU__BUCKETS__0__S3__SECRET_KEY", "0123"),
                ("YATAGARASU__METRICS__ADMIN_TOKEN", "000123456"),
                ("YATAGARASU__BUCKETS__0__NAME", "${NOT_EXPANDED}"),
                ("YATAGARASU_CONFIG", "/not/an/override.yaml"),
                ("OTHER__SERVER__ADDRESS", "nope"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.address, "127.0.0.1:7000");
        assert_eq!(c.metrics.port, 9191);
        assert!(!c.metrics.enabled);
        assert_eq!(c.server.shutdown_grace_seconds, 3);
        assert_eq!(c.buckets[0].s3.secret_key.as_ref().unwrap().expose(), "0123");
        assert_eq!(c.metrics.admin_token.unwrap().expose(), "000123456");
        assert_eq!(c.buckets[0].name, "${NOT_EXPANDED}");
        // The file's other keys stay.
        assert_eq!(c.buckets[0].s3.access_key.as_ref().unwrap().expose(), "ak");
    }

    #[test]
    fn an_override_replaces_a_value_whose_variable_is_unset() {
        let file = FILE.replace("${SK}", "${UNSET_VAR}");
        let err = with(&file, Format::Yaml, &[]).unwrap_err().to_string();
        assert!(err.contains("UNSET_VAR"), "{err}");
        let c = with(&file, Format::Yaml, &[("YATAGARASU__BUCKETS__0__S3__SECRET_KEY", "s")]).unwrap();
        assert_eq!(c.buckets[0].s3.secret_key.as_ref().unwrap().expose(), "s");
    }

    #[test]
    fn an_absent_section_is_created_with_its_defaults() {
        let c = with(
            FILE,
            Format::Yaml,
            &[
                ("YATAGARASU__CACHE__REDIS__URL", "redis://10.0.0.1:6379"),
                ("YATAGARASU__CACHE__REDIS__ENABLED", "true"),
            ],
        )
        .unwrap();
        let cache = c.cache.unwrap();
        assert!(cache.redis.enabled);
        assert_eq!(cache.redis.url.as_deref(), Some("redis://10.0.0.1:6379"));
        assert_eq!(cache.stale_seconds, 300);
    }

    #[test]
    fn errors_from_overrides_name_the_variable() {
        let err = errors(&[
            ("YATAGARASU__SERVER__ADRESS", "x"),
            ("YATAGARASU__LOGGING__COLOUR", "x"),
        ]);
        assert!(
            err.contains("server.adress: unknown key (set by YATAGARASU__SERVER__ADRESS)")
                && err.contains("logging.colour: unknown key (set by YATAGARASU__LOGGING__COLOUR)"),
            "{err}"
        );
        let err = errors(&[("YATAGARASU__METRICS__PORT", "lots")]);
        assert!(
            err.contains("metrics.port: ") && err.contains("(set by YATAGARASU__METRICS__PORT)"),
            "{err}"
        );

        let err = errors(&[("YATAGARASU__SERVER__ADDRESS", "not-an-address")]);
        assert!(
            err.contains("server.address") && err.contains("YATAGARASU__SERVER__ADDRESS"),
            "{err}"
        );

        let err = errors(&[("YATAGARASU__BUCKETS__3__NAME", "x")]);
        assert!(
            err.contains("buckets: is a list of 1 entries") && err.contains("(set by YATAGARASU__BUCKETS__3__NAME)"),
            "{err}"
        );
        let err = errors(&[("YATAGARASU__BUCKETS__NAME", "x")]);
        assert!(
            err.contains("not 'name'") && err.contains("YATAGARASU__BUCKETS__NAME"),
            "{err}"
        );
        let err = errors(&[("YATAGARASU__SERVER____ADDRESS", "x")]);
        assert!(err.contains("not a key name"), "{err}");
    }

    #[test]
    fn a_secret_set_by_an_override_never_shows() {
        let secret = "hunter2-very-secret";
        let err = errors(&[
            ("YATAGARASU__METRICS__ADMIN_TOKEN", secret),
            ("YATAGARASU__LOGGING__FORMAT", secret),
        ]);
        assert!(err.contains("logging.format"), "{err}");
        assert!(!err.contains(secret), "{err}");
    }

    #[test]
    fn key_case_is_kept_in_files() {
        let err = with(
            &format!("Server: {{ address: \"127.0.0.1:1\" }}\n{FILE}"),
            Format::Yaml,
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Server: unknown key"), "{err}");
    }

    #[test]
    fn toml_and_json_files_load_like_yaml() {
        let yaml = with(FILE, Format::Yaml, &[]).unwrap();
        let toml = "[server]\naddress = \"0.0.0.0:8080\"\n\n[[buckets]]\nname = \"a\"\npath_prefix = \"/a\"\n\
                    [buckets.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\naccess_key = \"ak\"\nsecret_key = \"${SK}\"\n";
        let json = r#"{"buckets": [{"name": "a", "path_prefix": "/a",
            "s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9", "access_key": "ak", "secret_key": "${SK}"}}]}"#;
        for (text, format) in [(toml, Format::Toml), (json, Format::Json)] {
            let c = with(text, format, &[("YATAGARASU__METRICS__PORT", "9191")]).unwrap();
            assert_eq!(c.buckets[0].s3.secret_key, yaml.buckets[0].s3.secret_key);
            assert_eq!(c.buckets[0].s3.endpoint, yaml.buckets[0].s3.endpoint);
            assert_eq!(c.metrics.port, 9191);
        }
        let deep = format!("{} = 1\n", vec!["a"; 20_000].join("."));
        let err = with(&deep, Format::Toml, &[]).unwrap_err().to_string();
        assert!(err.contains("not valid TOML"), "{err}");
        let err = with("[server\n", Format::Toml, &[]).unwrap_err().to_string();
        assert!(err.contains("not valid TOML"), "{err}");
        let err = with("{\"server\": 1,}", Format::Json, &[]).unwrap_err().to_string();
        assert!(err.contains("not valid JSON") && err.contains("line 1"), "{err}");
        let err = with("{\"buckets\": [], \"colour\": 1}", Format::Json, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour: unknown key"), "{err}");
    }

    #[test]
    fn the_format_follows_the_extension() {
        use std::path::Path;
        assert_eq!(Format::from_path(Path::new("/etc/y/config.TOML")), Format::Toml);
        assert_eq!(Format::from_path(Path::new("c.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("c.yml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("config")), Format::Yaml);
    }
}
