//! Config loading through the real binary: seed configs load unchanged,
//! errors name their keys, all at once.

use std::path::Path;

use crate::common::*;

fn example(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name)).unwrap()
}

#[test]
fn seed_tutorial_config_loads_unchanged() {
    let out = check(
        &example("ha-tutorial.yaml"),
        &[("MINIO_ACCESS_KEY", "minioadmin"), ("MINIO_SECRET_KEY", "minioadmin")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn seed_deployment_config_loads_unchanged() {
    let out = check(
        &example("ha-deployment.yaml"),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIA0000"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("R2_ACCESS_KEY", "r"),
            ("R2_SECRET_KEY", "r"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let env = [
        ("MINIO_ACCESS_KEY", "a"),
        ("MINIO_SECRET_KEY", "b"),
        ("AWS_ACCESS_KEY_ID", "c"),
        ("AWS_SECRET_ACCESS_KEY", "d"),
        ("R2_ACCESS_KEY", "e"),
        ("R2_SECRET_KEY", "f"),
        ("S3_ACCESS_KEY", "g"),
        ("S3_SECRET_KEY", "h"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let out = check(&std::fs::read_to_string(&path).unwrap(), &env);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn missing_env_var_is_named_with_its_key() {
    let out = check(&example("ha-tutorial.yaml"), &[("MINIO_ACCESS_KEY", "x")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("buckets[0].s3.secret_key"), "{err}");
    assert!(err.contains("MINIO_SECRET_KEY"), "{err}");
}

#[test]
fn all_errors_at_once_each_naming_its_key() {
    let config = r#"
server:
  address: "not-an-address"
  colour: blue
buckets:
  - name: a
    path_prefix: /assets
    s3: { bucket: x, endpoint: "ftp://nowhere", access_key: "k", secret_key: "" }
  - name: a
    path_prefix: /assets
    s3: { bucket: "", bogus: 1 }
  - name: c
    path_prefix: /assets/img
    s3:
      bucket: y
      replicas:
        - { name: r1, endpoint: "http://127.0.0.1:1", priority: 1 }
        - { name: r1, endpoint: "not a url", priority: 1 }
  - name: d
    path_prefix: assets-no-slash
    s3: { bucket: z }
metrics: { enabled: false }
"#;
    let out = check(config, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "server.colour: unknown key",
        "buckets[1].s3.bogus: unknown key",
        "server.address",
        "buckets[0].s3.endpoint",
        "buckets[0].s3.secret_key: is empty",
        "buckets[1].name",
        "buckets[1].path_prefix: '/assets' is also the prefix of buckets[0]",
        "buckets[1].s3.bucket: is required",
        "buckets[2].path_prefix: '/assets/img' overlaps '/assets'",
        "buckets[2].s3.replicas[1].name",
        "buckets[2].s3.replicas[1].endpoint",
        "buckets[3].path_prefix",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn type_errors_and_bad_yaml_are_clear() {
    let out = check("server: { shutdown_grace_seconds: soon }\nbuckets: []\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.shutdown_grace_seconds"), "{err}");

    let out = check("buckets: [\n  - {", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid YAML"));
}

#[test]
fn env_defaults_and_typed_substitution() {
    let config = r#"
server: { address: "127.0.0.1:${PORT:-0}", shutdown_grace_seconds: "${GRACE:-7}" }
buckets:
  - name: a
    path_prefix: /a
    s3: { bucket: b, endpoint: "http://127.0.0.1:9", access_key: "${AK:-x}", secret_key: "${SK}" }
metrics: { enabled: "${METRICS:-false}" }
"#;
    let out = check(config, &[("SK", "12345")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn running_with_a_bad_config_exits_non_zero_without_panic() {
    let file = write_config("buckets: [{ name: a }]\n");
    let out = std::process::Command::new(BIN)
        .arg("-c")
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("buckets[0].path_prefix"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = std::process::Command::new(BIN)
        .args(["-c", "/nonexistent/config.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// `check`'s stderr for a config that must be refused.
fn refused(config: &str, env: &[(&str, &str)]) -> String {
    let out = check(config, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "accepted:\n{config}");
    stderr
}

const BUCKET: &str = r#"
buckets:
  - name: a
    path_prefix: /a
    s3: { bucket: b, endpoint: "http://127.0.0.1:9" }
"#;

#[test]
fn a_uri_limit_beyond_what_hyper_parses_is_refused_by_key() {
    let err = refused(&format!("server: {{ max_uri_length: 70000 }}\n{BUCKET}"), &[]);
    assert!(err.contains("server.max_uri_length: 70000 is out of range"), "{err}");
}

#[test]
fn values_that_would_overflow_are_refused_by_key() {
    let max = u64::MAX;
    let err = refused(
        &format!(
            "server: {{ upstream_read_timeout_seconds: {max}, send_timeout_seconds: 0 }}\n\
             cache: {{ redis: {{ enabled: true, url: \"redis://127.0.0.1:6379\", ttl_seconds: {max} }} }}\n{BUCKET}"
        ),
        &[],
    );
    for key in [
        "server.upstream_read_timeout_seconds: 18446744073709551615 is out of range",
        "server.send_timeout_seconds: 0 is out of range",
        "cache.redis.ttl_seconds: 18446744073709551615 is out of range",
    ] {
        assert!(err.contains(key), "no '{key}' in:\n{err}");
    }
}

#[test]
fn substituted_values_take_the_type_of_their_key_and_secrets_never_show() {
    let config = "server: { max_header_bytes: \"${MHB}\" }\n\
         metrics: { port: \"${PORT}\", admin_token: \"${TOKEN}\" }\n\
         buckets:\n  - name: a\n    path_prefix: /a\n    s3: { bucket: b, endpoint: \"http://127.0.0.1:9\", access_key: \"${AK}\", secret_key: \"${SK}\" }\n".to_owned();
    for (ak, sk, token) in [
        ("12345678901234567890", "0x1F", "true"),
        ("1e5", "+5", "12.50"),
        ("1234567890123456789012345678901234567890123", "false", "007"),
    ] {
        let env = [
            ("MHB", "65536"),
            ("PORT", "9191"),
            ("AK", ak),
            ("SK", sk),
            ("TOKEN", token),
        ];
        let out = check(&config, &env);
        assert!(
            out.status.success(),
            "{ak}/{sk}/{token}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // An error elsewhere never echoes a secret's value.
    let secret = "98765432109876543210";
    let err = refused(
        &format!("{config}logging: {{ format: \"${{SK}}\" }}\n"),
        &[
            ("MHB", "65536"),
            ("PORT", "9191"),
            ("AK", secret),
            ("SK", secret),
            ("TOKEN", secret),
        ],
    );
    assert!(err.contains("logging.format"), "{err}");
    assert!(!err.contains(secret), "a secret in:\n{err}");
    // A numeric key still wants a number.
    let err = refused(
        &config,
        &[("MHB", "lots"), ("PORT", "1"), ("AK", "a"), ("SK", "b"), ("TOKEN", "c")],
    );
    assert!(err.contains("server.max_header_bytes"), "{err}");
}

#[test]
fn unbounded_or_malformed_files_are_refused() {
    let out = std::process::Command::new(BIN)
        .args(["check", "-c", "/dev/zero"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than"));

    let deep = format!("server: {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
    assert!(refused(&deep, &[]).contains("nest deeper"));

    let err = refused(&format!("logging: {{ level: \"${{NOPE\" }}\n{BUCKET}"), &[]);
    assert!(err.contains("logging.level") && err.contains("never closed"), "{err}");
}

#[test]
fn auth_rules_and_sources_are_checked_in_full() {
    let jwt = |extra: &str| {
        format!(
            "jwt: {{ algorithm: HS256, secret: \"0123456789abcdef0123456789abcdef\", {extra} }}\n\
             buckets:\n  - name: a\n    path_prefix: /a\n    s3: {{ bucket: b, endpoint: \"http://127.0.0.1:9\" }}\n    auth: {{ enabled: true }}\n"
        )
    };
    let err = refused(&jwt("claims: [{ claim: role, equals: admin, in: [admin] }]"), &[]);
    assert!(err.contains("jwt.claims[0]: more than one operator"), "{err}");
    let err = refused(
        &jwt("token_sources: [{ type: header, name: X-Token, prefx: \"T \" }]"),
        &[],
    );
    assert!(err.contains("jwt.token_sources[0].prefx: unknown key"), "{err}");
}

#[test]
fn a_root_prefix_is_refused_for_what_it_is() {
    let err = refused(
        "buckets:\n  - name: a\n    path_prefix: /\n    s3: { bucket: b, endpoint: \"http://127.0.0.1:9\" }\n",
        &[],
    );
    assert!(
        err.contains("buckets[0].path_prefix") && err.contains("every path"),
        "{err}"
    );
    assert!(!err.contains("/health"), "{err}");
}

#[test]
fn check_warns_about_an_unreachable_jwks_url() {
    // A port nothing listens on: bound, then closed at once.
    let port = free_port();
    let out = check(
        &format!(
            "jwt: {{ algorithm: RS256, jwks_url: \"http://127.0.0.1:{port}/jwks.json\" }}\n\
             buckets:\n  - name: a\n    path_prefix: /a\n    s3: {{ bucket: b, endpoint: \"http://127.0.0.1:9\" }}\n    auth: {{ enabled: true }}\n"
        ),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: jwt.jwks_url: unreachable from here"),
        "{stderr}"
    );
}

#[test]
fn metrics_listen_on_the_host_of_the_proxy_by_default() {
    let config: yatagarasu::config::Config = yatagarasu::config::load_str(
        &format!("server: {{ address: \"127.0.0.1:8080\" }}\n{BUCKET}"),
        "t",
        &|_| None,
    )
    .unwrap();
    assert_eq!(config.metrics_socket_addr().unwrap().to_string(), "127.0.0.1:9090");
    let config = yatagarasu::config::load_str(
        &format!("server: {{ address: \"127.0.0.1:8080\" }}\nmetrics: {{ address: 0.0.0.0 }}\n{BUCKET}"),
        "t",
        &|_| None,
    )
    .unwrap();
    assert_eq!(config.metrics_socket_addr().unwrap().to_string(), "0.0.0.0:9090");
}

/// `yatagarasu check -c` on a config file with the given extension.
fn check_as(config: &str, extension: &str, env: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write;
    let mut file = tempfile::Builder::new()
        .suffix(&format!(".{extension}"))
        .tempfile()
        .unwrap();
    file.write_all(config.as_bytes()).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("check").arg("-c").arg(file.path()).env_remove("RUST_LOG");
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

#[test]
fn environment_overrides_fix_and_set_keys() {
    let config = format!("server: {{ address: \"not-an-address\" }}\n{BUCKET}");
    let err = refused(&config, &[]);
    assert!(err.contains("server.address"), "{err}");
    let out = check(&config, &[("YATAGARASU__SERVER__ADDRESS", "127.0.0.1:0")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The seed tutorial's secret key from an override rather than from
    // `${MINIO_SECRET_KEY}` (left unset), and a numeric key from another.
    let out = check(
        &example("ha-tutorial.yaml"),
        &[
            ("MINIO_ACCESS_KEY", "minioadmin"),
            ("YATAGARASU__BUCKETS__0__S3__SECRET_KEY", "0123"),
            ("YATAGARASU__METRICS__PORT", "9191"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_bad_override_is_named_in_the_error() {
    let err = refused(BUCKET, &[("YATAGARASU__METRICS__PORT", "lots")]);
    assert!(
        err.contains("metrics.port") && err.contains("(set by YATAGARASU__METRICS__PORT)"),
        "{err}"
    );
    let err = refused(BUCKET, &[("YATAGARASU__SERVER__ADRESS", "127.0.0.1:0")]);
    assert!(
        err.contains("server.adress: unknown key (set by YATAGARASU__SERVER__ADRESS)"),
        "{err}"
    );
    let err = refused(BUCKET, &[("YATAGARASU__BUCKETS__4__NAME", "x")]);
    assert!(
        err.contains("buckets: is a list of 1 entries") && err.contains("YATAGARASU__BUCKETS__4__NAME"),
        "{err}"
    );
}

#[test]
fn toml_and_json_files_load() {
    let toml = "[server]\naddress = \"127.0.0.1:0\"\n\n[[buckets]]\nname = \"a\"\npath_prefix = \"/a\"\n\
                [buckets.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\nsecret_key = \"${SK}\"\naccess_key = \"k\"\n";
    let json = r#"{"server": {"address": "127.0.0.1:0"},
        "buckets": [{"name": "a", "path_prefix": "/a",
                     "s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9", "access_key": "k", "secret_key": "${SK}"}}]}"#;
    for (text, extension) in [(toml, "toml"), (json, "json")] {
        let out = check_as(text, extension, &[("SK", "s")]);
        assert!(
            out.status.success(),
            "{extension}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The loader is the same: an unknown key is an error by its path.
        let bad = text.replace("path_prefix", "path_prefx");
        let out = check_as(&bad, extension, &[("SK", "s")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extension}: accepted");
        assert!(err.contains("buckets[0].path_prefx: unknown key"), "{extension}: {err}");
    }
    let out = check_as("{\"server\": ", "json", &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

#[test]
fn a_file_saved_with_a_byte_order_mark_loads() {
    // Notepad and other Windows editors start UTF-8 files with U+FEFF; it is
    // not part of the first key (YAML 1.2, 5.2), and it is invisible in an
    // error message ("server: unknown key" for a file that says `server:`).
    let yaml = format!("server: {{ address: \"127.0.0.1:0\" }}\n{BUCKET}");
    let json = r#"{"server": {"address": "127.0.0.1:0"},
        "buckets": [{"name": "a", "path_prefix": "/a", "s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9"}}]}"#;
    let toml = "[server]\naddress = \"127.0.0.1:0\"\n\n[[buckets]]\nname = \"a\"\npath_prefix = \"/a\"\n\
                [buckets.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\n";
    for (text, extension) in [(yaml.as_str(), "yaml"), (json, "json"), (toml, "toml")] {
        let out = check_as(&format!("\u{feff}{text}"), extension, &[]);
        assert!(
            out.status.success(),
            "{extension}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Only a leading mark is skipped: the keys are still checked.
    let err = refused(&format!("\u{feff}server: {{ adress: \"127.0.0.1:0\" }}\n{BUCKET}"), &[]);
    assert!(err.contains("  - server.adress: unknown key"), "{err}");
}

#[test]
fn a_key_given_twice_in_a_json_file_is_refused_as_in_yaml_and_toml() {
    // The second `server` would silently replace the first (and its typo).
    let json = r#"{"server": {"adress": "127.0.0.1:0"},
        "buckets": [{"name": "a", "path_prefix": "/a", "s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9"}}],
        "server": {"address": "127.0.0.1:0"}}"#;
    let out = check_as(json, "json", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(
        err.contains("not valid JSON: duplicate key 'server'") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn a_log_level_that_is_no_level_is_refused_rather_than_silencing_every_log() {
    // A lone word in a RUST_LOG filter is a target: `warning` would enable
    // only the target "warning", and the proxy would log nothing at all (not
    // its listening line, not its errors).
    for level in ["warning", "fatal", "verbose", "info,hyper", ""] {
        let config = format!("{BUCKET}logging: {{ level: \"{level}\" }}\n");
        let err = refused(&config, &[]);
        assert!(err.contains("  - logging.level: "), "{level}: {err}");
    }
    for level in [
        "info",
        "WARN",
        "off",
        "info,yatagarasu::access=warn",
        "warn,[request]=debug",
    ] {
        let config = format!("{BUCKET}logging: {{ level: \"{level}\" }}\n");
        let out = check(&config, &[]);
        assert!(
            out.status.success(),
            "{level}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_span_queue_too_large_to_allocate_is_refused_by_key_not_a_crash_at_start() {
    // The exporter allocates its queue whole when the proxy starts: `check`
    // used to pass this, and the proxy then aborted ("capacity overflow",
    // "memory allocation of ... bytes failed").
    let config = format!(
        "{BUCKET}tracing: {{ otlp_endpoint: \"http://127.0.0.1:9\", max_queue_spans: 100000000000, max_batch_spans: 512 }}\n"
    );
    let err = refused(&config, &[]);
    assert!(err.contains("  - tracing.max_queue_spans: "), "{err}");
    let file = write_config(&format!("server: {{ address: \"127.0.0.1:0\" }}\n{config}"));
    let out = std::process::Command::new(BIN)
        .arg("-c")
        .arg(file.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tracing.max_queue_spans") && !err.contains("panicked"),
        "{err}"
    );
    // What the reference shows still loads.
    let ok = format!(
        "{BUCKET}tracing: {{ otlp_endpoint: \"http://127.0.0.1:9\", max_queue_spans: 2048, max_batch_spans: 512 }}\n"
    );
    assert!(check(&ok, &[]).status.success());
}

#[test]
fn a_latency_demotion_longer_than_a_day_is_refused_by_key() {
    // It is added to the clock when a slow replica is demoted: u64::MAX
    // seconds passed `check`, then panicked every request that demoted a
    // replica ("overflow when adding duration to instant"): connections reset.
    let config = BUCKET.replace(
        "s3: { bucket: b,",
        "s3: { latency_aware: { enabled: true, outlier_demotion_seconds: 18446744073709551615, decay_seconds: 18446744073709551615 }, bucket: b,",
    );
    let err = refused(&config, &[]);
    for key in [
        "buckets[0].s3.latency_aware.outlier_demotion_seconds: 18446744073709551615 is out of range",
        "buckets[0].s3.latency_aware.decay_seconds: 18446744073709551615 is out of range",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    let ok = BUCKET.replace(
        "s3: { bucket: b,",
        "s3: { latency_aware: { enabled: true, outlier_demotion_seconds: 86400, decay_seconds: 60 }, bucket: b,",
    );
    let out = check(&ok, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_exits_by_the_config_even_when_its_report_is_not_read() {
    // `yatagarasu check -c f | head -1` (or `| grep -q valid` under
    // `set -o pipefail`): the reader goes away after the first line.
    let file = write_config(&example("ha-tutorial.yaml"));
    let mut child = std::process::Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(file.path())
        .env("MINIO_ACCESS_KEY", "minioadmin")
        .env("MINIO_SECRET_KEY", "minioadmin")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn s3_keys_with_a_trailing_newline_are_refused_by_key_without_echoing_them() {
    // `${AWS_SECRET_ACCESS_KEY}` from a file that ends with a newline: signed
    // as is, every request to the replica failed (502) while `check` passed.
    let config = BUCKET.replace(
        "s3: { bucket: b,",
        "s3: { access_key: \"${AK}\", secret_key: \"${SK}\", bucket: b,",
    );
    let err = refused(&config, &[("AK", "AKIAEXAMPLE"), ("SK", "wJalrXUtnFEMIsecret\n")]);
    assert!(
        err.contains("  - buckets[0].s3.secret_key: starts or ends with whitespace"),
        "{err}"
    );
    assert!(!err.contains("wJalrXUtnFEMIsecret"), "{err}");
    let out = check(&config, &[("AK", "AKIAEXAMPLE"), ("SK", "wJalrXUtnFEMIsecret")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_empty_config_variable_is_named_and_a_config_flag_still_wins_over_it() {
    // Set but empty (a template or Secret that rendered nothing): clap's
    // "a value is required for '--config <CONFIG>'" named a flag never given.
    for args in [&["check"][..], &[][..], &["serve"][..]] {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("YATAGARASU_CONFIG", "")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("YATAGARASU_CONFIG is set but empty") && !err.contains("a value is required"),
            "{args:?}: {err}"
        );
    }
    // An explicit --config is read, whatever the variable holds.
    let file = write_config(BUCKET);
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(file.path())
        .env("YATAGARASU_CONFIG", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An empty flag is named as the flag.
    let out = std::process::Command::new(BIN)
        .args(["check", "-c", ""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config is empty"));
}

#[test]
fn a_literal_dollar_brace_in_a_secret_is_named_by_key_without_echoing_the_secret() {
    let config = r#"
jwt: { algorithm: HS256, secret: "jwtA${Kq9 Zr}0123456789abcdef0123456789" }
metrics: { admin_token: "tokLead-${UNSET_TOKEN_VAR}-tokTrail" }
cache:
  redis: { url: "redis://:pwA${Xy z}pwB@127.0.0.1:6379" }
buckets:
  - name: a
    path_prefix: /a
    s3: { bucket: b, endpoint: "http://127.0.0.1:9", access_key: AKIAEXAMPLE, secret_key: "wJal${rXUt nFEMI}K7MD" }
"#;
    let err = refused(config, &[]);
    for key in [
        "jwt.secret: the '${' at character 5",
        "cache.redis.url: the '${' at character 13",
        "buckets[0].s3.secret_key: the '${' at character 5",
        "metrics.admin_token: environment variable UNSET_TOKEN_VAR is not set",
    ] {
        assert!(err.contains(key), "no '{key}' in:\n{err}");
    }
    for text in [
        "jwtA", "Kq9", "Zr", "tokLead", "tokTrail", "pwA", "Xy z", "pwB", "wJal", "rXUt", "nFEMI", "K7MD",
    ] {
        assert!(!err.contains(text), "'{text}' echoed in:\n{err}");
    }
}
