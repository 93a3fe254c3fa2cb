//! Reading a config file: the file (YAML, TOML or JSON) with the
//! `YATAGARASU__*` environment overrides layered over it by the `config`
//! crate -> `${VAR}` substitution -> typed structs (unknown keys collected,
//! not fatal) -> validation.

use std::fmt;
use std::path::Path;

use super::overrides::{env_overrides, is_override, name_overrides, Layer};
use super::tree::{collect_secrets, display_path, redact, retype, substitute_all, to_json, token_source_keys};
use super::{validate, Config};

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
    // A byte order mark (Windows editors write one) is not part of the
    // first key: YAML and JSON readers skip it, so does this one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
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

fn parse_file(text: &str, format: Format) -> Result<config::Map<String, config::Value>, String> {
    let parsed = match format {
        Format::Yaml => super::yaml::parse(text),
        Format::Toml | Format::Json => {
            let kind = if format == Format::Toml {
                config::FileFormat::Toml
            } else {
                config::FileFormat::Json
            };
            // The JSON reader keeps the last of a key given twice; YAML and TOML refuse it.
            match (format == Format::Json)
                .then(|| super::json::duplicate_key(text))
                .flatten()
            {
                Some(duplicate) => Err(duplicate),
                None => config::Source::collect(&config::File::from_str(text, kind)).map_err(|e| e.to_string()),
            }
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
            let out = super::super::env::substitute(&text, &|name| (name == "A").then(|| "v".to_owned()));
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
