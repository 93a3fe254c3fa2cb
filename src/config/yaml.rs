//! YAML text to the `config` crate's value tree, through `yaml-rust2`'s event
//! parser (the parser config-rs itself uses).
//!
//! Not config-rs's own YAML format, because its conversion loses what a
//! config file means: it reads `0123` as the number 123 (a secret or an AWS
//! external id of digits loses its leading zero) and an integer above
//! `i64::MAX` as a float, and drops merge keys. Here plain scalars follow the
//! YAML 1.2 core schema as `serde_yaml` did (digits with a leading zero stay a
//! string, integers fill `u64`), anchors and aliases work, `<<` merge keys are
//! applied, a duplicate key is an error, and errors name their line.

use std::collections::HashMap;

use config::{Map, Value, ValueKind};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting of mappings and sequences (a real config nests about 7).
pub const MAX_DEPTH: usize = 64;

/// Most nodes a document may build, aliases expanded (stops "billion laughs").
const MAX_NODES: usize = 1_000_000;

/// Parses one YAML document into a table (an empty document is an empty table).
pub fn parse(text: &str) -> Result<Map<String, Value>, String> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| e.to_string())?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    match builder.docs.len() {
        0 => Ok(Map::new()),
        1 => match builder.docs.pop().map(|v| v.kind) {
            Some(ValueKind::Table(map)) => Ok(map),
            Some(ValueKind::Nil) => Ok(Map::new()),
            _ => Err("the document is not a mapping of keys to values".into()),
        },
        n => Err(format!("{n} YAML documents where one is expected")),
    }
}

/// A plain (unquoted, untagged) scalar as the YAML 1.2 core schema reads it;
/// `None` for a string.
pub fn resolve_plain(s: &str) -> Option<ValueKind> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(ValueKind::Nil),
        "true" | "True" | "TRUE" => return Some(ValueKind::Boolean(true)),
        "false" | "False" | "FALSE" => return Some(ValueKind::Boolean(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(ValueKind::Float(f64::INFINITY)),
        "-.inf" | "-.Inf" | "-.INF" => return Some(ValueKind::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(ValueKind::Float(f64::NAN)),
        _ => {}
    }
    let (negative, digits) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if let Some(hex) = digits.strip_prefix("0x") {
        return int_kind(negative, u64::from_str_radix(hex, 16).ok()?);
    }
    if let Some(oct) = digits.strip_prefix("0o") {
        return int_kind(negative, u64::from_str_radix(oct, 8).ok()?);
    }
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // `0123`: a string in YAML 1.2 (and what a secret of digits means).
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        // Beyond 64 bits: kept as written rather than rounded to a float.
        return int_kind(negative, digits.parse().ok()?);
    }
    let float_chars = digits.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    if float_chars && digits.bytes().any(|b| b.is_ascii_digit()) {
        return s.parse::<f64>().ok().map(ValueKind::Float);
    }
    None
}

fn int_kind(negative: bool, magnitude: u64) -> Option<ValueKind> {
    if !negative {
        return Some(match i64::try_from(magnitude) {
            Ok(i) => ValueKind::I64(i),
            Err(_) => ValueKind::U64(magnitude),
        });
    }
    0i64.checked_sub_unsigned(magnitude).map(ValueKind::I64)
}

/// A collection being built.
enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        anchor: usize,
        /// The key read, waiting for its value.
        key: Option<(String, Marker)>,
        /// `<<` values, applied at the end (explicit keys win).
        merges: Vec<Value>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Value, usize)>,
    docs: Vec<Value>,
    nodes: usize,
    error: Option<String>,
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_none() {
            if let Err(e) = self.event(ev, mark) {
                self.error = Some(if e.contains(" at line ") {
                    e
                } else {
                    format!("{e} {}", at(mark))
                });
            }
        }
    }
}

impl Builder {
    fn event(&mut self, ev: Event, mark: Marker) -> Result<(), String> {
        match ev {
            Event::SequenceStart(_, Some(tag)) | Event::MappingStart(_, Some(tag)) => {
                Err(format!("unsupported YAML tag {}", tag_name(Some(&tag))))
            }
            Event::SequenceStart(anchor, _) => self.open(Frame::Seq {
                items: Vec::new(),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.open(Frame::Map {
                map: Map::new(),
                anchor,
                key: None,
                merges: Vec::new(),
            }),
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq { items, anchor }) => self.insert(ValueKind::Array(items).into(), anchor, 1),
                _ => Err("unbalanced sequence".into()),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    mut map,
                    anchor,
                    merges,
                    ..
                }) => {
                    for merged in merges {
                        merge_into(&mut map, merged)?;
                    }
                    self.insert(ValueKind::Table(map).into(), anchor, 1)
                }
                _ => Err("unbalanced mapping".into()),
            },
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(Frame::Map { key: key @ None, .. }) = self.stack.last_mut() {
                    if tag.is_some() {
                        return Err(format!("unsupported tag on a key: {}", tag_name(tag.as_ref())));
                    }
                    *key = Some((text, mark));
                    return Ok(());
                }
                let kind = scalar(text, style, tag.as_ref())?;
                self.insert(Value::new(None, kind), anchor, 1)
            }
            Event::Alias(id) => {
                let (value, size) = self.anchors.get(&id).cloned().ok_or("an alias to an unknown anchor")?;
                if let Some(Frame::Map { key: key @ None, .. }) = self.stack.last_mut() {
                    let ValueKind::String(text) = value.kind else {
                        return Err("an alias used as a key must name a string".into());
                    };
                    *key = Some((text, mark));
                    return Ok(());
                }
                self.insert(value, 0, size)
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd | Event::Nothing => {
                Ok(())
            }
        }
    }

    fn open(&mut self, frame: Frame) -> Result<(), String> {
        if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
            return Err("a mapping or sequence used as a key".into());
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("mappings and sequences nest deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Places a finished node in its parent; `size` counts its nodes.
    fn insert(&mut self, value: Value, anchor: usize, size: usize) -> Result<(), String> {
        self.nodes += size;
        if self.nodes > MAX_NODES {
            return Err(format!(
                "the document expands to more than {MAX_NODES} values (aliases)"
            ));
        }
        if anchor > 0 {
            let size = count(&value);
            self.anchors.insert(anchor, (value.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.docs.push(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, merges, .. }) => {
                let (k, key_mark) = key.take().ok_or("a value without a key")?;
                if k == "<<" {
                    merges.push(value);
                } else if map.insert(k.clone(), value).is_some() {
                    return Err(format!("duplicate key '{k}' {}", at(key_mark)));
                }
            }
        }
        Ok(())
    }
}

/// `<<: *base` or `<<: [*a, *b]`: keys not set in `map` come from the merged
/// mappings (the first listed wins).
fn merge_into(map: &mut Map<String, Value>, merged: Value) -> Result<(), String> {
    let tables = match merged.kind {
        ValueKind::Table(t) => vec![t],
        ValueKind::Array(items) => items
            .into_iter()
            .map(|v| match v.kind {
                ValueKind::Table(t) => Ok(t),
                _ => Err(String::new()),
            })
            .collect::<Result<_, _>>()
            .map_err(|_| "a '<<' merge key takes a mapping or a list of mappings".to_owned())?,
        _ => return Err("a '<<' merge key takes a mapping or a list of mappings".into()),
    };
    for table in tables {
        for (k, v) in table {
            map.entry(k).or_insert(v);
        }
    }
    Ok(())
}

fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<ValueKind, String> {
    let Some(tag) = tag else {
        return Ok(match style {
            TScalarStyle::Plain => resolve_plain(&text).unwrap_or(ValueKind::String(text)),
            _ => ValueKind::String(text),
        });
    };
    if tag.handle != "tag:yaml.org,2002:" {
        return Err(format!("unsupported YAML tag {}", tag_name(Some(tag))));
    }
    let resolved = resolve_plain(&text);
    let fits = match (tag.suffix.as_str(), &resolved) {
        ("str", _) => return Ok(ValueKind::String(text)),
        ("null", Some(ValueKind::Nil))
        | ("bool", Some(ValueKind::Boolean(_)))
        | ("int", Some(ValueKind::I64(_) | ValueKind::U64(_)))
        | ("float", Some(ValueKind::Float(_))) => true,
        ("float", Some(ValueKind::I64(i))) => return Ok(ValueKind::Float(*i as f64)),
        _ => false,
    };
    match resolved {
        Some(kind) if fits => Ok(kind),
        _ => Err(format!("'{text}' is not a valid !!{}", tag.suffix)),
    }
}

/// `at line 3 column 7`.
fn at(mark: Marker) -> String {
    format!("at line {} column {}", mark.line(), mark.col() + 1)
}

fn tag_name(tag: Option<&Tag>) -> String {
    match tag {
        Some(t) if t.handle == "tag:yaml.org,2002:" => format!("!!{}", t.suffix),
        Some(t) => format!("{}{}", t.handle, t.suffix),
        None => String::new(),
    }
}

/// Nodes in a value, itself included.
fn count(value: &Value) -> usize {
    1 + match &value.kind {
        ValueKind::Table(map) => map.values().map(count).sum(),
        ValueKind::Array(items) => items.iter().map(count).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str, key: &str) -> ValueKind {
        parse(text).unwrap().remove(key).unwrap().kind
    }

    #[test]
    fn plain_scalars_follow_the_core_schema_without_losing_digits() {
        assert_eq!(kind("a: 0123", "a"), ValueKind::String("0123".into()));
        assert_eq!(kind("a: '42'", "a"), ValueKind::String("42".into()));
        assert_eq!(kind("a: 42", "a"), ValueKind::I64(42));
        assert_eq!(kind("a: -7", "a"), ValueKind::I64(-7));
        assert_eq!(kind("a: 0x1F", "a"), ValueKind::I64(31));
        assert_eq!(kind("a: 18446744073709551615", "a"), ValueKind::U64(u64::MAX));
        assert_eq!(
            kind("a: 123456789012345678901234567890", "a"),
            ValueKind::String("123456789012345678901234567890".into())
        );
        assert_eq!(kind("a: 1.5", "a"), ValueKind::Float(1.5));
        assert_eq!(kind("a: 1e3", "a"), ValueKind::Float(1000.0));
        assert_eq!(kind("a: true", "a"), ValueKind::Boolean(true));
        assert_eq!(kind("a: yes", "a"), ValueKind::String("yes".into()));
        assert_eq!(kind("a: ~", "a"), ValueKind::Nil);
        assert_eq!(kind("a:", "a"), ValueKind::Nil);
        assert_eq!(kind("a: !!str 12", "a"), ValueKind::String("12".into()));
        assert_eq!(kind("a: inf", "a"), ValueKind::String("inf".into()));
        assert!(parse("a: !!int abc").unwrap_err().contains("not a valid !!int"));
        assert!(parse("a: !custom x").unwrap_err().contains("unsupported YAML tag"));
    }

    #[test]
    fn keys_keep_their_case_and_duplicates_are_refused_with_lines() {
        let map = parse("Server: 1\nserver: 2\n").unwrap();
        let mut keys: Vec<_> = map.keys().collect();
        keys.sort();
        assert_eq!(keys, ["Server", "server"]);
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(err.contains("duplicate key 'a'") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "base: &b { x: 1, y: 2 }\nother: &o { z: 3 }\nuse: { <<: [*b, *o], y: 9 }\ncopy: *b\n";
        let map = parse(text).unwrap();
        let ValueKind::Table(used) = &map["use"].kind else {
            panic!()
        };
        assert_eq!(used["x"].kind, ValueKind::I64(1));
        assert_eq!(used["y"].kind, ValueKind::I64(9));
        assert_eq!(used["z"].kind, ValueKind::I64(3));
        assert!(!used.contains_key("<<"));
        let ValueKind::Table(copy) = &map["copy"].kind else {
            panic!()
        };
        assert_eq!(copy.len(), 2);
        assert!(parse("a: { <<: 1 }").unwrap_err().contains("merge key"));
    }

    #[test]
    fn syntax_errors_nesting_and_alias_bombs_are_refused() {
        let err = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(err.contains("line"), "{err}");
        let deep = format!("a: {}x{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&deep).unwrap_err().contains("nest deeper"));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        assert!(parse(&bomb).unwrap_err().contains("more than"));
        assert!(parse("- 1\n- 2\n").unwrap_err().contains("not a mapping"));
        assert!(parse("a: 1\n---\nb: 2\n").unwrap_err().contains("2 YAML documents"));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only a comment\n").unwrap().is_empty());
    }
}
