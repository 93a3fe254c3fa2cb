//! Strings that may arrive as YAML numbers or booleans after `${VAR}`
//! substitution (a secret of digits must stay a string).
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::Secret;

fn scalar(v: Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err("expected a string".into()),
    }
}

pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar(Value::deserialize(d)?)
        .map(Option::unwrap_or_default)
        .map_err(serde::de::Error::custom)
}

pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    scalar(Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

pub fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    opt_string(d).map(|o| o.map(Secret::new))
}
