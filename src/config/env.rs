//! `${VAR}` and `${VAR:-default}` substitution in config values.
//!
//! Written here rather than taken from `shellexpand` because that crate also
//! expands bare `$VAR` and `~`, which would silently change secrets holding a
//! literal `$`. Only the two braced forms are expanded; `$${` stands for a
//! literal `${`.

/// Expands the variables in `input` with `lookup`; every unset variable
/// without a default, every `${...}` that is no variable name, and a `${`
/// never closed, is reported. A report names the variable at most, never
/// other text of the value: the value may be a secret holding a literal
/// `${` (an S3 secret key, a JWT secret, a Redis password), and the key
/// path the caller puts in front says where to look.
pub fn substitute(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(input.len());
    let mut missing = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                missing.push("'${' is never closed by '}' (write $${ for a literal ${)".to_owned());
                rest = "";
                break;
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                // Where it is, not what it says (see above).
                let at = input[..input.len() - tail.len()].chars().count() + 1;
                missing.push(format!(
                    "the '${{' at character {at} does not start a variable (a name of letters, digits and _ \
                     between ${{ and }}); write $${{ for a literal ${{"
                ));
                rest = &body[end + 1..];
                continue;
            }
            match (lookup(name).filter(|v| !(v.is_empty() && default.is_some())), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => missing.push(format!(
                    "environment variable {name} is not set (use ${{{name}:-default}} for a default, or $${{ for \
                     a literal ${{)"
                )),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_braced_forms_only() {
        assert_eq!(substitute("x-${A}-y", &env).unwrap(), "x-alpha-y");
        assert_eq!(substitute("${B:-def}", &env).unwrap(), "def");
        assert_eq!(substitute("${EMPTY:-def}", &env).unwrap(), "def");
        assert_eq!(substitute("${EMPTY}", &env).unwrap(), "");
        assert_eq!(substitute("pa$$w$A$${A}", &env).unwrap(), "pa$$w$A${A}");
        assert!(substitute("${A", &env).unwrap_err()[0].contains("never closed"));
        assert!(substitute("${A B}", &env).unwrap_err()[0].contains("does not start a variable"));
    }

    /// A secret with a literal `${`: the report says where, never what.
    #[test]
    fn a_bad_reference_is_located_not_echoed() {
        let errors = substitute("pä${s3cr3t part}tail", &env).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("at character 3"), "{}", errors[0]);
        for text in ["s3cr3t", "part", "tail", "pä"] {
            assert!(!errors[0].contains(text), "{}", errors[0]);
        }
        let errors = substitute("lead-${X}-tail", &env).unwrap_err();
        assert!(errors[0].contains("variable X is not set"), "{}", errors[0]);
        assert!(
            !errors[0].contains("lead") && !errors[0].contains("tail"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn names_every_missing_variable() {
        let errors = substitute("${X}/${A}/${Y}", &env).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("variable X is not set") && errors[1].contains("variable Y is not set"));
    }
}
