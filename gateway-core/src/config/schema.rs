//! The JSON Schema (draft 2020-12) of a configuration file, generated from the config types.
//!
//! It describes the *shape* of a file (sections, fields, types, enums, unit strings, addresses) for
//! editors and CI; the semantic checks (references between elements, conflicts, ranges, key material)
//! stay in the compiler (`gw validate`). The committed copy is `schema/gw.schema.json`; regenerate it
//! with `cargo run -q -p gateway-cli -- schema > schema/gw.schema.json`.
use super::*;
use schemars::generate::SchemaSettings;
use schemars::transform::{transform_subschemas, Transform};
use schemars::Schema;

/// The command that regenerates the committed schema (named by the staleness test).
pub const REGENERATE: &str = "cargo run -q -p gateway-cli -- schema > schema/gw.schema.json";

// Schema only: the loader reads the file section by section and each list element on its own
// (`load::load`), so no type of its own has this shape. `sections_are_the_loaders` keeps the two in step.
/// A gw configuration file: listeners, upstreams, routes and policies. Field by field reference:
/// `docs/config.md`. The schema checks the shape of a file; `gw validate` also checks references,
/// conflicts and ranges.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "gw configuration")]
#[allow(dead_code)]
struct Document {
    /// Process-wide settings.
    #[serde(default)]
    server: ServerConfig,
    /// Public listeners (at least one).
    #[serde(default)]
    listeners: Option<Vec<ListenerConfig>>,
    /// The admin listener: `/metrics`, `/healthz`, `/readyz` and the admin API.
    #[serde(default)]
    #[schemars(with = "AdminConfig")]
    admin: Option<AdminConfig>,
    /// Access log and metrics.
    #[serde(default)]
    observability: ObservabilityConfig,
    /// Upstream services.
    #[serde(default)]
    upstreams: Option<Vec<UpstreamConfig>>,
    /// Routes, tried in order of specificity.
    #[serde(default)]
    routes: Option<Vec<RouteConfig>>,
    /// Named policies (`type: rate_limit` or `type: jwt`), referenced by name from routes, upstreams
    /// and `global_policies`.
    #[serde(default)]
    policies: Option<Vec<PolicyConfig>>,
    /// Policies (by name) that apply to every route.
    #[serde(default)]
    global_policies: Vec<String>,
}

/// Schema of `match.methods`: the methods the compiler knows (upper case).
pub(crate) fn methods_schema(_: &mut schemars::SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "enum": crate::compile::METHODS },
        "default": []
    })
}

/// Adds the `maximum` that an integer's `format` implies (`uint32` → 4294967295), so a value that
/// does not fit the field is a schema error as it is a load error.
#[derive(Clone)]
struct IntegerBounds;

impl Transform for IntegerBounds {
    fn transform(&mut self, schema: &mut Schema) {
        let max = match schema.get("format").and_then(|f| f.as_str()) {
            Some("uint8") => Some(u64::from(u8::MAX)),
            Some("uint16") => Some(u64::from(u16::MAX)),
            Some("uint32") => Some(u64::from(u32::MAX)),
            Some("uint64" | "uint") => Some(u64::MAX),
            _ => None,
        };
        if let Some(max) = max {
            schema.insert("maximum".into(), max.into());
        }
        transform_subschemas(self, schema);
    }
}

/// Lets an empty value (`hosts:` or `hosts: ~`, YAML null) stand for an empty list or mapping, as
/// the loader reads it (serde_yaml deserializes null as an empty sequence or map): lists, maps and
/// objects without required fields also accept null. Drops `"default": null` (an unset option).
#[derive(Clone)]
struct NullAsEmpty;

impl Transform for NullAsEmpty {
    fn transform(&mut self, schema: &mut Schema) {
        let no_required = schema
            .get("required")
            .and_then(|r| r.as_array())
            .is_none_or(|r| r.is_empty());
        // `None` of an optional field is its absence, not a value to suggest
        if schema.get("default").is_some_and(|d| d.is_null()) {
            schema.remove("default");
        }
        let ty = schema.get("type").and_then(|t| t.as_str());
        if ty == Some("array") || (ty == Some("object") && no_required) {
            let ty = ty.unwrap_or_default().to_string();
            schema.insert("type".into(), serde_json::json!([ty, "null"]));
        }
        transform_subschemas(self, schema);
    }
}

/// The schema as a JSON value.
pub fn json_schema() -> serde_json::Value {
    let generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .with_transform(IntegerBounds)
        .with_transform(NullAsEmpty)
        .into_generator();
    let mut root = generator.into_root_schema_for::<Document>().to_value();
    // the document itself must be a mapping: an empty file is an error
    root["type"] = "object".into();
    root
}

/// The schema as pretty-printed JSON with a final newline: the text of `schema/gw.schema.json`.
pub fn json_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A validator for one definition (or one property) of the generated schema, so each pattern is
    /// checked exactly as it is published, by an independent JSON Schema implementation.
    fn validator(pointer: &str) -> jsonschema::Validator {
        let root = json_schema();
        let sub = root
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{pointer}"))
            .clone();
        let schema = json!({ "$defs": root["$defs"], "allOf": [sub] });
        jsonschema::validator_for(&schema).expect("the schema compiles")
    }

    /// Compares the schema's verdict on each string with the parser's. `range` lists strings with a
    /// valid syntax that the loader refuses for their size (a bound no pattern states).
    fn agree(pointer: &str, parse: impl Fn(&str) -> bool, table: &[&str], range: &[&str]) {
        let v = validator(pointer);
        let mut wrong = Vec::new();
        for s in table.iter().chain(range) {
            let by_schema = v.is_valid(&json!(s));
            let by_parser = parse(s) || range.contains(s);
            if by_schema != by_parser {
                wrong.push(format!("{s:?}: schema {by_schema}, parser {}", parse(s)));
            }
        }
        for s in range {
            assert!(!parse(s), "{s:?} is listed as out of range but parses");
        }
        let accepted = table.iter().filter(|s| parse(s)).count();
        assert!(
            accepted >= 5 && table.len() - accepted >= 5,
            "the table needs valid and invalid strings"
        );
        assert!(wrong.is_empty(), "{pointer}:\n{}", wrong.join("\n"));
    }

    const ENV: &[&str] = &["${T}", "${GW_TIMEOUT:-5s}", "x${A_1}y"];

    #[test]
    fn duration_pattern_matches_the_parser() {
        let table = [
            "500ms",
            "60s",
            "5m",
            "1h",
            "2d",
            "1w",
            "1M",
            "1m30s",
            "1m 30s",
            " 60s ",
            "5 s",
            "1 0s",
            "1.5s",
            "1. 5s",
            "1 .5s",
            "0.5ms",
            "10us",
            "10\u{b5}s",
            "3ns",
            "1nanos",
            "2 hours 3 minutes",
            "1hr",
            "3secs",
            "5min",
            "365d",
            "1\u{a0}s",
            "1\u{85}s",
            "\t2s\n",
            // invalid
            "",
            " ",
            "60",
            "1.5",
            "0",
            "s",
            "5x",
            "5 sm",
            "1.5ns",
            "1.s",
            "-1s",
            "+1s",
            "1,5s",
            "1s-",
            "1e3s",
            "5\u{feff}s",
            "5S",
            "1m30",
            "ms",
            "1..5s",
            "\u{b5}",
            "5\u{3bc}s",
        ];
        let table: Vec<&str> = table.iter().chain(ENV).copied().collect();
        let range = [
            "366d",
            "8761h",
            "365d 1s",
            "1y",
            "100y",
            "18446744073709551615s",
        ];
        let parse = |s: &str| ENV.contains(&s) || units::parse_duration(s).is_ok();
        agree("/$defs/Duration", parse, &table, &range);
    }

    #[test]
    fn size_pattern_matches_the_parser() {
        let table = [
            "1B", "512KiB", "1MiB", "1GiB", "10MB", "1KB", "1kB", "1GB", "1.5MiB", "1.MiB",
            ".5KiB", "512 KiB", " 1B ", "0B", "007B", // invalid
            "", "1", "1024", "KiB", "1XB", "1kiB", "1 K iB", ".KiB", "1.2.3B", "-1B", "+1B",
            "1e3B", "1 B B", "1KiB2",
        ];
        let table: Vec<&str> = table.iter().chain(ENV).copied().collect();
        let range = [
            "1025GiB",
            "18446744073709551615B",
            "99999999999999999999999GiB",
        ];
        let parse = |s: &str| ENV.contains(&s) || units::parse_size(s).is_ok();
        agree("/$defs/Size", parse, &table, &range);
    }

    #[test]
    fn socket_address_pattern_matches_the_parser() {
        let table = [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "1.2.3.4:65535",
            "127.0.0.1:080",
            "255.255.255.255:1",
            "[::1]:80",
            "[::]:8080",
            "[2001:db8::7]:443",
            "[::1%3]:80",
            "[::1%04294967295]:80",
            "[::ffff:1.2.3.4]:80",
            "[1:2:3:4:5:6:7::]:80",
            "[1:2:3:4:5:6:7:8]:80",
            "[0000:0:0:0:0:0:0:1]:80",
            "[fe80::a:B:c]:1",
            // invalid
            "localhost:80",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:+80",
            "127.0.0.1:65536",
            "01.2.3.4:80",
            "256.0.0.1:80",
            "1.2.3:80",
            "::1:80",
            "[::1]",
            "[::1%eth0]:80",
            "[::1%4294967296]:80",
            "[1:2:3:4:5:6:7::8]:80",
            "[00000::1]:80",
            "[1::2::3]:80",
            "127.0.0.1: 80",
            " 127.0.0.1:80",
            "[127.0.0.1]:80",
            "[::1.2.3.4.5]:80",
        ];
        let table: Vec<&str> = table.iter().chain(ENV).copied().collect();
        let parse = |s: &str| ENV.contains(&s) || s.parse::<std::net::SocketAddr>().is_ok();
        agree(
            "/$defs/ListenerConfig/properties/address",
            parse,
            &table,
            &[],
        );
        agree("/$defs/AdminConfig/properties/address", parse, &table, &[]);
    }

    #[test]
    fn endpoint_address_pattern_matches_the_compiler() {
        let table = [
            "127.0.0.1:3001",
            "users.internal:8080",
            "svc-1:80",
            "x1:1",
            "a:65535",
            "a:0080",
            "a:+80",
            "[::1]:80",
            "::1:80",
            "[2001:db8::7]:8080",
            "[[::1]]:80",
            "[::1:80",
            "[1.2.3.4]:80",
            "1.2.3.4]:80",
            "[api.internal:80",
            "10.0.0.1.nip.io:80",
            "0xdead.example:80",
            "0a:1",
            "0X1g:1",
            "00x:1",
            "1x.b2c:1",
            "a.0y:1",
            // invalid
            "nohost",
            "h:0",
            "h:65536",
            "h:",
            ":80",
            "999.1.1.1:80",
            "1.2.3:80",
            "01.2.3.4:80",
            "0x7f.1:80",
            "2130706433:80",
            "a.b.1:80",
            "1..1.1:80",
            "[1.2.3.4:80",
            "a_b:80",
            "a..b:80",
            "a.:80",
            "[::ffff:1.2.3.4]:80",
            "::ffff:1.2.3.4:80",
            "h:-1",
            "h: 80",
            "0x:1",
            "0xAB:1",
            "a.0X1:1",
            "[::1%3]:80",
            "h:80 ",
        ];
        let table: Vec<&str> = table.iter().chain(ENV).copied().collect();
        let parse = |s: &str| ENV.contains(&s) || crate::compile::endpoint_address(s).is_ok();
        agree(
            "/$defs/EndpointConfig/properties/address",
            parse,
            &table,
            &[],
        );
    }

    /// The document's sections are the loader's, no more and no less.
    #[test]
    fn sections_are_the_loaders() {
        let root = json_schema();
        let mut props: Vec<&str> = root["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        props.sort_unstable();
        let mut top = load::TOP_LEVEL.to_vec();
        top.sort_unstable();
        assert_eq!(props, top);
        assert_eq!(root["additionalProperties"], Value::Bool(false));
        assert_eq!(
            root["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema")
        );
    }

    /// Serde's attributes show in the schema: unknown fields are refused everywhere, tagged enums
    /// are `oneOf` with a `const` tag, defaults and field docs are carried.
    #[test]
    fn serde_attributes_show() {
        let root = json_schema();
        let defs = root["$defs"].as_object().expect("$defs");
        let mut open = Vec::new();
        for (name, def) in defs {
            let objects: Vec<&Value> = match def.get("oneOf") {
                Some(Value::Array(v)) => v.iter().collect(),
                _ => vec![def],
            };
            for o in objects {
                if o.get("type") == Some(&json!("object"))
                    && o.get("additionalProperties") != Some(&Value::Bool(false))
                {
                    open.push(name.clone());
                }
            }
        }
        assert!(
            open.is_empty(),
            "objects that accept unknown fields: {open:?}"
        );
        let lb = &defs["LoadBalancingConfig"]["oneOf"];
        let tags: Vec<&Value> = lb
            .as_array()
            .expect("oneOf")
            .iter()
            .map(|v| &v["properties"]["type"]["const"])
            .collect();
        assert_eq!(
            tags,
            [
                "round_robin",
                "random",
                "least_connections",
                "fastest",
                "consistent_hash"
            ]
        );
        let server = &defs["ServerConfig"]["properties"];
        // left out: one per CPU (no fixed default), and `null` means the same
        assert_eq!(server["threads"]["type"], json!(["integer", "null"]));
        assert!(server["threads"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("one per CPU")));
        assert_eq!(server["grace_period"]["default"], json!("5s"));
        assert!(server["grace_period"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("SIGTERM")));
        assert_eq!(defs["JwtMode"]["enum"], json!(["required", "optional"]));
        let jwt = defs["PolicyConfig"]["oneOf"][1]["properties"].clone();
        assert_eq!(jwt["mode"]["default"], json!("required"));
        assert_eq!(jwt["leeway"]["default"], json!("30s"));
        assert_eq!(
            defs["EndpointConfig"]["properties"]["weight"]["maximum"],
            json!(u32::MAX)
        );
    }
}
