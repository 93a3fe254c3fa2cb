//! Environment overrides: `YATAGARASU__SERVER__ADDRESS=...` sets
//! `server.address` over the file. The `config` crate's environment source
//! reads the variables; a number selects an entry of a list the file has
//! (`YATAGARASU__BUCKETS__0__S3__SECRET_KEY`); errors about a value an
//! override set name its variable.

use super::load::ConfigError;

/// Environment variables named `YATAGARASU__<KEY>__<KEY>...` override one key
/// of the file each (`YATAGARASU__SERVER__ADDRESS` sets `server.address`; a
/// number selects an existing list entry: `YATAGARASU__BUCKETS__0__S3__SECRET_KEY`).
pub const ENV_PREFIX: &str = "YATAGARASU__";

/// Whether an environment variable is an override (`YATAGARASU__...`, any case).
pub(super) fn is_override(name: &str) -> bool {
    name.get(..ENV_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
}

/// A `config` crate source holding a finished table (the file, or the
/// overrides keyed by their path expressions).
#[derive(Debug, Clone)]
pub(super) struct Layer(pub(super) config::Map<String, config::Value>);

impl config::Source for Layer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

/// One override: the key path it sets, and the variable that set it.
pub(super) struct Override {
    pub(super) path: String,
    pub(super) var: String,
}

/// The `YATAGARASU__*` variables among `vars`, read by the `config` crate's
/// environment source (prefix `YATAGARASU`, `__` between keys, names in any
/// case, values kept as text), as a layer keyed by path expressions
/// (`buckets[0].s3.secret_key`), and which variable set which path.
pub(super) fn env_overrides(
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
pub(super) fn is_within(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Adds the variable to each error about a value an override set (the
/// error's key, or a key under it).
pub(super) fn name_overrides(mut errors: Vec<ConfigError>, env: &[Override]) -> Vec<ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::super::load::{load, ConfigErrors, Format};
    use super::super::Config;

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
