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

/// Loads and validates a config file, with variables from the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        source_name: name.clone(),
        errors: vec![ConfigError::new("", format!("cannot read the file: {e}"))],
    })?;
    load_str(&text, &name, &|var| std::env::var(var).ok())
}

/// Loads and validates config text, with variables from `lookup`.
pub fn load_str(
    text: &str,
    source_name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        source_name: source_name.to_owned(),
        errors,
    };
    let mut value: Value =
        serde_yaml::from_str(text).map_err(|e| fail(vec![ConfigError::new("", format!("not valid YAML: {e}"))]))?;
    if value.is_null() {
        value = Value::Mapping(Default::default());
    }
    let mut errors = Vec::new();
    substitute_all(&mut value, &mut String::new(), lookup, &mut errors);

    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(display_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let parsed: Result<Config, _> = serde_path_to_error::deserialize(de);
    for path in unknown {
        errors.push(ConfigError::new(path, "unknown key"));
    }
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            errors.push(ConfigError::new(path, e.into_inner().to_string()));
            return Err(fail(errors));
        }
    };
    errors.extend(validate::validate(&config));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(fail(errors))
    }
}

/// Expands `${VAR}` in every string of the tree. A value that is one whole
/// `${...}` expression and expands to a number or boolean takes that type, so
/// `port: ${PORT:-9090}` works.
fn substitute_all(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        Value::String(s) if s.contains("${") => match env::substitute(s, lookup) {
            Ok(expanded) => {
                let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
                let typed = if whole {
                    match serde_yaml::from_str::<Value>(&expanded) {
                        Ok(v @ (Value::Number(_) | Value::Bool(_))) => Some(v),
                        _ => None,
                    }
                } else {
                    None
                };
                *value = typed.unwrap_or(Value::String(expanded));
            }
            Err(missing) => {
                for var in missing {
                    errors.push(ConfigError::new(
                        path.clone(),
                        format!("environment variable {var} is not set (use ${{{var}:-default}} for a default)"),
                    ));
                }
            }
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute_all(item, path, lookup, errors);
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
                substitute_all(v, path, lookup, errors);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => substitute_all(&mut tagged.value, path, lookup, errors),
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
    }
}
