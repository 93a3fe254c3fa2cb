//! The configuration reference (`docs/configuration.md`) against the code.
//!
//! - Every key the reference shows is accepted: each `yaml` block of the page
//!   goes through the real loader without an unknown key or a type error, and
//!   its complete example passes `yatagarasu check` (the real binary).
//! - Every key the code accepts is shown: the accepted keys are derived from
//!   the config structs' own `Deserialize` impls (a tracing deserializer that
//!   answers each `deserialize_struct` with all of the struct's fields), so a
//!   field added to any config struct fails this test until the reference
//!   shows it. To document a new key, add it to the complete example in
//!   `docs/configuration.md` (the block after `<!-- reference: complete -->`);
//!   there is nothing to update here.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::de::value::{Error as DeError, StrDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Deserialize;
use yatagarasu::config::{load_str, Config};

use crate::common::check;

/// Internally tagged enums (`#[serde(tag = ...)]`) reach a deserializer as
/// `deserialize_any`, which names neither the tag nor the variants' fields:
/// (enum name, tag key, a variant to build, every key any variant accepts).
/// The tracer fails on an internally tagged enum missing from this list.
const TAGGED_ENUMS: &[(&str, &str, &str, &[&str])] = &[("TokenSource", "type", "bearer", &["type", "name", "prefix"])];

const MARKER: &str = "<!-- reference: complete -->";

fn reference_page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The page's fenced `yaml` blocks, and which one follows the marker.
fn yaml_blocks(page: &str) -> (Vec<String>, usize) {
    let mut blocks = Vec::new();
    let mut complete = None;
    let mut current: Option<String> = None;
    let mut marked = false;
    for line in page.lines() {
        match &mut current {
            Some(block) if line.trim_start().starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None if line.trim() == MARKER => marked = true,
            None if line.trim_start().starts_with("```yaml") => {
                if marked {
                    complete = Some(blocks.len());
                    marked = false;
                }
                current = Some(String::new());
            }
            None => {}
        }
    }
    let complete = complete.unwrap_or_else(|| panic!("no ```yaml block after {MARKER}"));
    (blocks, complete)
}

/// A value for every `${VAR}` the reference uses.
fn lookup(var: &str) -> Option<String> {
    Some(
        match var {
            "REDIS_URL" => "redis://127.0.0.1:6379",
            "JWT_SECRET" => "0123456789abcdef0123456789abcdef",
            _ => "reference-test-value",
        }
        .to_owned(),
    )
}

fn variables(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .map(|rest| rest.split(['}', ':']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Key paths of a YAML document: `server.address`, `buckets[].s3.replicas[].name`.
fn shown_keys(value: &yaml_rust2::Yaml, path: &str, out: &mut BTreeSet<String>) {
    match value {
        yaml_rust2::Yaml::Hash(map) => {
            for (k, v) in map {
                let key = k.as_str().map(str::to_owned).unwrap_or_else(|| format!("{k:?}"));
                let p = if path.is_empty() { key } else { format!("{path}.{key}") };
                out.insert(p.clone());
                shown_keys(v, &p, out);
            }
        }
        yaml_rust2::Yaml::Array(items) => {
            for v in items {
                shown_keys(v, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Messages of serde's own errors (a wrong type or shape), as opposed to the
/// validator's (a value the proxy refuses).
fn is_shape_error(message: &str) -> bool {
    [
        "unknown key",
        "invalid type",
        "invalid value",
        "invalid length",
        "missing field",
        "unknown variant",
        "unknown field",
        "not valid YAML",
        "expected a string",
    ]
    .iter()
    .any(|p| message.contains(p))
}

#[test]
fn every_key_in_the_reference_is_accepted() {
    let page = reference_page();
    let (blocks, complete) = yaml_blocks(&page);
    for (i, block) in blocks.iter().enumerate() {
        let errors = match load_str(block, &format!("docs/configuration.md yaml block {i}"), &lookup) {
            Ok(_) => continue,
            Err(e) => e,
        };
        if i == complete {
            panic!("the complete example must load without any error:\n{errors}");
        }
        let shape: Vec<_> = errors.errors.iter().filter(|e| is_shape_error(&e.message)).collect();
        assert!(shape.is_empty(), "yaml block {i}:\n{block}\nis not accepted: {shape:?}");
    }
}

#[test]
fn the_complete_example_passes_yatagarasu_check() {
    let page = reference_page();
    let (blocks, complete) = yaml_blocks(&page);
    let text = &blocks[complete];
    let env: Vec<(String, String)> = variables(text)
        .into_iter()
        .map(|v| (lookup(&v).unwrap(), v))
        .map(|(val, var)| (var, val))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = check(text, &env);
    assert!(
        out.status.success(),
        "yatagarasu check refused the complete example:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_and_provider_examples_are_accepted() {
    // Complete configs (with `buckets:`) must load; fragments must at least
    // use only known keys in their place (checked by the reference page).
    for doc in ["README.md", "docs/providers.md"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
        let text = std::fs::read_to_string(&path).unwrap();
        let blocks = fenced_yaml(&text);
        let complete: Vec<_> = blocks
            .iter()
            .filter(|b| b.starts_with("buckets:") || b.starts_with("server:"))
            .collect();
        assert!(
            doc != "README.md" || !complete.is_empty(),
            "{doc}: no complete config example found"
        );
        for block in complete {
            if let Err(e) = load_str(block, doc, &lookup) {
                panic!("{doc}: the example\n{block}\ndoes not load:\n{e}");
            }
        }
    }
}

fn fenced_yaml(text: &str) -> Vec<String> {
    text.split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_key_the_code_accepts_is_in_the_reference() {
    let accepted = accepted_keys();
    assert!(
        accepted.contains_key("buckets[].s3.replicas[].name") && accepted.contains_key("server.address"),
        "the tracer found too little: {accepted:?}"
    );
    let page = reference_page();
    let (blocks, _) = yaml_blocks(&page);
    let mut shown = BTreeSet::new();
    for block in &blocks {
        for value in yaml_rust2::YamlLoader::load_from_str(block).unwrap() {
            shown_keys(&value, "", &mut shown);
        }
    }
    // A struct used at several places (`jwt` and `buckets[].auth.jwt`,
    // `health_check` and `buckets[].s3.health_check`) is documented once.
    let shown_fields: BTreeSet<&str> = accepted
        .iter()
        .filter(|(path, _)| shown.contains(*path))
        .map(|(_, field)| field.as_str())
        .collect();
    let missing: Vec<_> = accepted
        .iter()
        .filter(|(path, field)| !shown.contains(*path) && !shown_fields.contains(field.as_str()))
        .map(|(path, field)| format!("{path} ({field})"))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted by the code but not in docs/configuration.md (add them to the complete example):\n  {}",
        missing.join("\n  ")
    );
}

/// Every key path the config structs accept, with its `Struct.field`.
fn accepted_keys() -> BTreeMap<String, String> {
    let keys = RefCell::new(BTreeMap::new());
    let tracer = Tracer {
        path: String::new(),
        keys: &keys,
        depth: 0,
    };
    if let Err(e) = Config::deserialize(tracer) {
        panic!("tracing the config structs failed: {e}");
    }
    keys.into_inner()
}

/// A deserializer that offers every field of every struct it is asked for,
/// one element of every list, one entry of every map and the first variant of
/// every enum, recording each struct field's key path.
struct Tracer<'a> {
    path: String,
    keys: &'a RefCell<BTreeMap<String, String>>,
    depth: usize,
}

impl<'a> Tracer<'a> {
    fn child(&self, segment: &str) -> Self {
        let path = match (self.path.is_empty(), segment.starts_with('[')) {
            (true, _) | (false, true) => format!("{}{segment}", self.path),
            (false, false) => format!("{}.{segment}", self.path),
        };
        Tracer {
            path,
            keys: self.keys,
            depth: self.depth + 1,
        }
    }

    fn record(&self, ty: &str, fields: &[&str]) {
        let mut keys = self.keys.borrow_mut();
        for f in fields {
            let p = self.child(f).path;
            keys.insert(p, format!("{ty}.{f}"));
        }
    }
}

struct Expecting<'v, V>(&'v V);

impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
}

macro_rules! scalar {
    ($($method:ident => $visit:ident($value:expr);)*) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            v.$visit($value)
        })*
    };
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let expecting = Expecting(&v).to_string();
        if let Some(name) = expecting.strip_prefix("internally tagged enum ") {
            let Some((ty, tag, variant, fields)) = TAGGED_ENUMS.iter().find(|(ty, ..)| *ty == name) else {
                return Err(de::Error::custom(format!(
                    "{}: add the internally tagged enum {name} to TAGGED_ENUMS",
                    self.path
                )));
            };
            self.record(ty, fields);
            return v.visit_map(de::value::MapDeserializer::<_, DeError>::new(std::iter::once((
                *tag, *variant,
            ))));
        }
        // Custom string handling (`de::string`), `serde_json::Value`, untagged enums.
        v.visit_str("1")
    }

    scalar! {
        deserialize_bool => visit_bool(true);
        deserialize_i8 => visit_i64(1);
        deserialize_i16 => visit_i64(1);
        deserialize_i32 => visit_i64(1);
        deserialize_i64 => visit_i64(1);
        deserialize_u8 => visit_u64(1);
        deserialize_u16 => visit_u64(1);
        deserialize_u32 => visit_u64(1);
        deserialize_u64 => visit_u64(1);
        deserialize_f32 => visit_f64(1.0);
        deserialize_f64 => visit_f64(1.0);
        deserialize_char => visit_char('1');
        deserialize_str => visit_str("1");
        deserialize_string => visit_str("1");
        deserialize_bytes => visit_bytes(b"1");
        deserialize_byte_buf => visit_bytes(b"1");
        deserialize_identifier => visit_str("1");
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.depth > 32 {
            return v.visit_none();
        }
        v.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let element = self.child("[]");
        v.visit_seq(Elements { next: vec![element] })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, DeError> {
        let next = (0..len).map(|_| self.child("[]")).collect();
        v.visit_seq(Elements { next })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_tuple(len, v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let value = self.child("<key>");
        v.visit_map(Fields {
            keys: vec!["1"],
            values: vec![value],
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        if self.depth > 32 {
            return Err(de::Error::custom(format!("{}: recursion too deep", self.path)));
        }
        self.record(name, fields);
        let values = fields.iter().map(|f| self.child(f)).collect();
        v.visit_map(Fields {
            keys: fields.to_vec(),
            values,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_enum(Variant {
            name: variants[0],
            tracer: self,
        })
    }
}

struct Elements<'a> {
    next: Vec<Tracer<'a>>,
}

impl<'de> SeqAccess<'de> for Elements<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.next.pop() {
            Some(t) => seed.deserialize(t).map(Some),
            None => Ok(None),
        }
    }
}

/// A struct's fields in order (or a map's one entry), each value traced.
struct Fields<'a> {
    keys: Vec<&'static str>,
    values: Vec<Tracer<'a>>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let key: StrDeserializer<'_, DeError> = self.keys.remove(0).into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        seed.deserialize(self.values.remove(0))
    }
}

struct Variant<'a> {
    name: &'static str,
    tracer: Tracer<'a>,
}

impl<'de, 'a> EnumAccess<'de> for Variant<'a> {
    type Error = DeError;
    type Variant = Tracer<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Tracer<'a>), DeError> {
        let name: StrDeserializer<'_, DeError> = self.name.into_deserializer();
        Ok((seed.deserialize(name)?, self.tracer))
    }
}

impl<'de> VariantAccess<'de> for Tracer<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_tuple(len, v)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], v: V) -> Result<V::Value, DeError> {
        self.deserialize_struct("variant", fields, v)
    }
}
