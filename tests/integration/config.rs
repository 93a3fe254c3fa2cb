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
