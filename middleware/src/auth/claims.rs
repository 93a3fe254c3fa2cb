//! Evaluation of `jwt.claims` rules on a verified token's claims.

use serde_json::Value;

use super::config::{AuthConfigError, ClaimRule};

/// Checks a rule list once, at construction.
pub(crate) fn validate_rules(rules: &[ClaimRule]) -> Result<(), AuthConfigError> {
    for (index, rule) in rules.iter().enumerate() {
        if rule.claim.is_empty() {
            return Err(AuthConfigError::BadClaimRule {
                index,
                reason: "claim: not set",
            });
        }
        let lower = rule.gt.is_some() as u8 + rule.gte.is_some() as u8;
        let upper = rule.lt.is_some() as u8 + rule.lte.is_some() as u8;
        let operators = rule.equals.is_some() as u8
            + rule.one_of.is_some() as u8
            + rule.contains.is_some() as u8
            + u8::from(lower + upper > 0);
        if lower > 1 || upper > 1 || operators > 1 {
            return Err(AuthConfigError::BadClaimRule {
                index,
                reason: "more than one operator: use one of equals, in, contains, or a range (gt/gte with lt/lte); write one rule per condition",
            });
        }
        if operators == 0 {
            return Err(AuthConfigError::BadClaimRule {
                index,
                reason: "no operator: set equals, in, contains, gt, gte, lt or lte",
            });
        }
        if rule.one_of.as_ref().is_some_and(Vec::is_empty) {
            return Err(AuthConfigError::BadClaimRule {
                index,
                reason: "in: empty list",
            });
        }
    }
    Ok(())
}

/// The first rule `claims` fails, if any.
pub(crate) fn first_failed<'a>(rules: &'a [ClaimRule], claims: &Value) -> Option<&'a ClaimRule> {
    rules.iter().find(|rule| !holds(rule, claims))
}

/// Whether `claims` passes `rule`.
pub(crate) fn holds(rule: &ClaimRule, claims: &Value) -> bool {
    let Some(value) = lookup(claims, &rule.claim) else {
        return false;
    };
    if let Some(expected) = &rule.equals {
        if !same(value, expected) {
            return false;
        }
    }
    if let Some(list) = &rule.one_of {
        if !list.iter().any(|expected| same(value, expected)) {
            return false;
        }
    }
    if let Some(needle) = &rule.contains {
        let found = match value {
            Value::Array(items) => items.iter().any(|item| same(item, needle)),
            Value::String(words) => needle
                .as_str()
                .is_some_and(|needle| words.split_ascii_whitespace().any(|w| w == needle)),
            _ => false,
        };
        if !found {
            return false;
        }
    }
    let bounds = [
        (rule.gt, (|v, b| v > b) as fn(f64, f64) -> bool),
        (rule.gte, |v, b| v >= b),
        (rule.lt, |v, b| v < b),
        (rule.lte, |v, b| v <= b),
    ];
    for (bound, cmp) in bounds {
        if let Some(bound) = bound {
            match value.as_f64() {
                Some(v) if cmp(v, bound) => {}
                _ => return false,
            }
        }
    }
    true
}

/// The value `name` designates, one way only: a URL-shaped name
/// (`https://example.com/roles`, a namespaced claim) is a top-level claim;
/// any other name is a path, each `.` going one object deeper (`org.tier`
/// is `tier` inside `org`, never a top-level claim named `org.tier`).
fn lookup<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if name.contains("://") {
        return claims.get(name);
    }
    name.split('.').try_fold(claims, |v, part| v.get(part))
}

/// JSON equality, with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> ClaimRule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn operators() {
        let claims = json!({
            "role": "admin", "level": 3, "groups": ["a", "b"], "scope": "read write",
            "realm_access": {"roles": ["ops"]}, "https://x.io/tenant": "t1",
        });
        let ok = |v: Value| holds(&rule(v), &claims);
        assert!(ok(json!({"claim": "role", "equals": "admin"})));
        assert!(!ok(json!({"claim": "role", "equals": "user"})));
        assert!(ok(json!({"claim": "level", "equals": 3.0})));
        assert!(ok(json!({"claim": "role", "in": ["user", "admin"]})));
        assert!(!ok(json!({"claim": "role", "in": ["user"]})));
        assert!(ok(json!({"claim": "groups", "contains": "b"})));
        assert!(!ok(json!({"claim": "groups", "contains": "c"})));
        assert!(ok(json!({"claim": "scope", "contains": "write"})));
        assert!(!ok(json!({"claim": "scope", "contains": "wri"})));
        assert!(ok(json!({"claim": "level", "gte": 3, "lt": 4})));
        assert!(!ok(json!({"claim": "level", "gt": 3})));
        assert!(!ok(json!({"claim": "level", "lte": 2})));
        assert!(!ok(json!({"claim": "role", "gt": 1})));
        assert!(ok(json!({"claim": "realm_access.roles", "contains": "ops"})));
        assert!(ok(json!({"claim": "https://x.io/tenant", "equals": "t1"})));
        assert!(!ok(json!({"claim": "missing", "in": ["x"]})));
    }

    #[test]
    fn rejects_rules_without_operator() {
        assert!(validate_rules(&[rule(json!({"claim": "role"}))]).is_err());
        assert!(validate_rules(&[rule(json!({"equals": 1}))]).is_err());
        assert!(validate_rules(&[rule(json!({"claim": "r", "in": []}))]).is_err());
        assert!(validate_rules(&[rule(json!({"claim": "r", "lt": 1}))]).is_ok());
    }

    #[test]
    fn rejects_rules_with_two_operators() {
        for two in [
            json!({"claim": "r", "equals": "a", "in": ["a"]}),
            json!({"claim": "r", "contains": "a", "equals": "a"}),
            json!({"claim": "r", "gt": 1, "gte": 2}),
            json!({"claim": "r", "equals": 1, "lt": 4}),
        ] {
            assert!(validate_rules(&[rule(two.clone())]).is_err(), "{two}");
        }
        assert!(validate_rules(&[rule(json!({"claim": "r", "gte": 1, "lt": 4}))]).is_ok());
    }

    #[test]
    fn dotted_paths_resolve_nested_only() {
        let claims = json!({"org.tier": "gold", "org": {"tier": "free"}});
        assert!(holds(&rule(json!({"claim": "org.tier", "equals": "free"})), &claims));
        assert!(!holds(&rule(json!({"claim": "org.tier", "equals": "gold"})), &claims));
        assert!(!holds(&rule(json!({"claim": "a.b", "equals": 1})), &json!({"a.b": 1})));
    }
}
