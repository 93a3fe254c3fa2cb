//! The cache configuration's defaults, redaction and checks.

use super::*;

#[test]
fn debug_never_shows_the_password() {
    let cfg = RedisCacheConfig {
        url: Some("redis://user:hunter2@valkey:6379/0".into()),
        ..Default::default()
    };
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("valkey:6379"), "{dbg}");
    let cfg = RedisCacheConfig {
        mode: RedisMode::Cluster,
        urls: vec!["redis://:hunter2@valkey-0:6379".into(), "redis://valkey-1:6379".into()],
        ..Default::default()
    };
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("valkey-0:6379"), "{dbg}");
}

#[test]
fn validation_names_the_key() {
    let mut cfg = CacheConfig::default();
    cfg.redis.enabled = true;
    cfg.redis.pool_size = 0;
    assert_eq!(cfg.validate().unwrap_err().key, "redis.pool_size");
    cfg.redis.pool_size = 2;
    cfg.redis.url = Some("http://x".into());
    assert_eq!(cfg.validate().unwrap_err().key, "redis.url");
    cfg.redis.url = Some("redis://valkey:6379".into());
    assert!(cfg.validate().is_ok());
    assert_eq!(cfg.validate().map_err(|e| e.to_string()), Ok(()));
}

fn redis_yaml(yaml: &str) -> CacheConfig {
    let mut cfg: CacheConfig = serde_json::from_value(yaml_to_json(yaml)).unwrap();
    cfg.redis.enabled = true;
    cfg
}

// The middleware has no YAML parser: the few shapes used here as JSON.
fn yaml_to_json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn modes_urls_and_sentinel_master_are_checked() {
    let err = |json: &str| redis_yaml(json).validate().unwrap_err();
    let mixed = err(r#"{"redis": {"url": "redis://a:1", "urls": ["redis://b:1"]}}"#);
    assert_eq!(mixed.key, "redis.urls");
    assert!(mixed.to_string().starts_with("cache.redis.urls: "), "{mixed}");
    assert_eq!(
        err(r#"{"redis": {"mode": "sentinel", "urls": ["redis://s:26379"]}}"#).key,
        "redis.sentinel_master"
    );
    assert_eq!(err(r#"{"redis": {"mode": "cluster"}}"#).key, "redis.urls");
    assert_eq!(
        err(r#"{"redis": {"mode": "cluster", "urls": ["redis://a:1"], "sentinel_master": "m"}}"#).key,
        "redis.sentinel_master"
    );
    assert_eq!(
        err(r#"{"redis": {"urls": ["redis://a:1", "redis://b:1"]}}"#).key,
        "redis.urls"
    );
    let bad = err(r#"{"redis": {"mode": "cluster", "urls": ["http://:hunter2@a:1"]}}"#);
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
    assert_eq!(err(r#"{"redis": {"key_prefix": "{x}:"}}"#).key, "redis.key_prefix");
    let unknown = serde_json::from_value::<CacheConfig>(yaml_to_json(r#"{"redis": {"mode": "ring"}}"#)).unwrap_err();
    assert!(unknown.to_string().contains("unknown variant `ring`"), "{unknown}");

    let ok = redis_yaml(
        r#"{"redis": {"mode": "sentinel", "urls": ["redis://s1:26379", "redis://s2:26379"], "sentinel_master": "mymaster"}}"#,
    );
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.redis.endpoints().len(), 2);
    let ok = redis_yaml(r#"{"redis": {"mode": "cluster", "urls": ["rediss://u:p@a:1"]}}"#);
    assert_eq!(ok.validate(), Ok(()));
    let standalone = redis_yaml(r#"{"redis": {}}"#);
    assert_eq!(standalone.redis.endpoints(), vec![DEFAULT_REDIS_URL.to_owned()]);
}

#[test]
fn slice_size_must_fit_a_tier() {
    let mut cfg = CacheConfig {
        slice_size: 8 * 1024 * 1024,
        ..Default::default()
    };
    assert_eq!(cfg.validate(), Ok(()));
    cfg.slice_size = 1000;
    assert_eq!(cfg.validate().unwrap_err().key, "slice_size");
    cfg.slice_size = 64 * 1024 * 1024;
    assert_eq!(cfg.validate().unwrap_err().key, "slice_size");
}
