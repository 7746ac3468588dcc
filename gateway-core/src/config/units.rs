//! Durations and sizes: always written with an explicit unit (`500ms`, `60s`, `5m`, `1h`; `512KiB`, `1MiB`, `10MB`).
//!
//! A bare number is rejected with a hint, because a bare `60` could mean seconds or milliseconds and the
//! classic gateway bug is a per-minute limit silently applied per second.
//!
//! Both are bounded when read, so no later arithmetic (`Instant + timeout`, `base_ejection × k`) can
//! overflow: a duration is at most [`MAX_DURATION`] (365 days; no field needs more: the longest
//! meaningful ones, rate-limit windows and ejection times, are hours), a size at most [`MAX_SIZE`]
//! (1 TiB). A larger value is an error at the value's line and column.
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration parsed from a human string with a unit (`humantime` syntax: `500ms`, `60s`, `1m 30s`, `2h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn get(self) -> Duration {
        self.0
    }
    pub fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Longest duration accepted anywhere in the configuration: 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Largest size accepted anywhere in the configuration: 1 TiB.
pub const MAX_SIZE: u64 = 1 << 40;

/// Parses `60s`, `500ms`, `1m30s` (at most [`MAX_DURATION`]). Bare numbers are an error that says
/// which unit to add.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; write it with a unit, e.g. \"60s\" or \"500ms\"".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "duration {t:?} has no unit; write e.g. \"{t}s\" or \"{t}ms\""
        ));
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration {t:?}: {e}; e.g. \"60s\", \"500ms\", \"5m\""))?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration {t:?} is too long: the maximum is 365 days (\"365d\")"
        ));
    }
    Ok(d)
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, e.g. \"60s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit; write e.g. \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit; write e.g. \"{v}s\""
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit; write e.g. \"{v}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes parsed from a string with a unit: `B`, `KB`/`MB`/`GB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB` (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!(
            "invalid size {t:?}; e.g. \"1MiB\", \"512KiB\", \"100B\""
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "size {t:?} has no unit; write e.g. \"{t}B\", \"{t}KiB\" or \"{t}MiB\""
        ));
    }
    let mult: u64 = match unit {
        "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {t:?}; use B, KB, MB, GB, KiB, MiB or GiB"
            ))
        }
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size {t:?}"))?;
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > MAX_SIZE as f64 {
        return Err(format!(
            "size {t:?} is out of range: the maximum is 1 TiB (\"1024GiB\")"
        ));
    }
    Ok(v as u64)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size with a unit, e.g. \"1MiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "size {v} has no unit; write e.g. \"{v}B\" or \"{v}KiB\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "size {v} has no unit; write e.g. \"{v}B\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whitespace as Rust's `char::is_whitespace` (and so `str::trim` and `humantime`) sees it: Unicode
/// `White_Space`. Spelled out because ECMA-262's `\s` differs (it has U+FEFF, lacks U+0085).
const WS: &str = r"[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// A string holding a `${NAME}` or `${NAME:-default}` reference: its value is only known when the
/// file is loaded (see `config::load`), so the schema accepts it wherever a unit string is expected.
pub const ENV_REF_PATTERN: &str = r".*\$\{[A-Za-z0-9_]+(?::-[^}]*)?\}.*";

/// Units of `humantime` other than nanoseconds (a fraction of a nanosecond is an error).
const DURATION_UNITS: &str = "usec|us|\\u00B5s|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y";

/// The ECMA-262 pattern of a duration string: exactly the syntax [`parse_duration`] accepts (one or
/// more `<number><unit>` spans, whitespace allowed between and inside them as `humantime` allows), or
/// a string with an environment reference. The 365-day bound is not a pattern: it is stated in the
/// description and checked when the file is loaded.
pub fn duration_pattern() -> String {
    let span = format!(
        "[0-9](?:[0-9]|{WS})*(?:\\.{WS}*[0-9](?:[0-9]|{WS})*(?:{DURATION_UNITS})|(?:nanos|nsec|ns|{DURATION_UNITS}))"
    );
    format!("^(?:(?:{WS}*{span})+{WS}*|{ENV_REF_PATTERN})$")
}

/// The ECMA-262 pattern of a size string: exactly the syntax [`parse_size`] accepts, or a string with
/// an environment reference. The 1 TiB bound is checked when the file is loaded.
pub fn size_pattern() -> String {
    format!(
        "^(?:{WS}*(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+){WS}*(?:B|KB|kB|MB|GB|KiB|MiB|GiB){WS}*|{ENV_REF_PATTERN})$"
    )
}

/// Written as `humantime` formats it (`5s`, `300ms`, `1m 30s`): the defaults shown in the schema.
impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Written in bytes (`1048576B`).
impl serde::Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}B", self.0))
    }
}

impl schemars::JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": duration_pattern(),
            "patternErrorMessage": "a duration with a unit, e.g. \"60s\", \"500ms\" or \"1m30s\"",
            "description": "A duration with a unit: `500ms`, `60s`, `5m`, `1h`, `1m30s` (ns, us, ms, s, m, h, d, w, M, y and their long forms). A bare number is an error. At most 365 days.",
            "examples": ["500ms", "60s", "5m", "1h"]
        })
    }
}

impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": size_pattern(),
            "patternErrorMessage": "a size with a unit, e.g. \"512KiB\", \"1MiB\" or \"10MB\"",
            "description": "A size with a unit: `B`, `KB`/`MB`/`GB` (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024), e.g. `512KiB`, `10MB`. A bare number is an error. At most 1 TiB.",
            "examples": ["512KiB", "1MiB", "10MB"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("60").unwrap_err().contains("no unit"));
        assert!(parse_duration("sixty").is_err());
    }

    /// Issue 11 item 9: absurd values are refused when read, so no later arithmetic overflows.
    #[test]
    fn durations_and_sizes_are_bounded() {
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("8760h").unwrap(), MAX_DURATION);
        for big in [
            "18446744073709551615s",
            "366d",
            "365d 1s",
            "100y",
            "18446744073709551615ns 400d",
        ] {
            let e = parse_duration(big).unwrap_err();
            assert!(
                e.contains("too long") || e.contains("invalid"),
                "{big}: {e}"
            );
        }
        assert!(parse_duration("18446744073709551615s")
            .unwrap_err()
            .contains("365 days"));
        assert_eq!(parse_size("1024GiB").unwrap(), MAX_SIZE);
        for big in [
            "1025GiB",
            "18446744073709551615B",
            "99999999999999999999999GiB",
        ] {
            assert!(
                parse_size(big).unwrap_err().contains("out of range"),
                "{big}"
            );
        }
        // a deserialized value carries the same error
        let e = serde_yaml::from_str::<Dur>("18446744073709551615s").unwrap_err();
        assert!(e.to_string().contains("365 days"), "{e}");
    }

    #[test]
    fn sizes_need_units() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 * 1024);
        assert!(parse_size("1024").unwrap_err().contains("no unit"));
        assert!(parse_size("1XB").unwrap_err().contains("unknown size unit"));
    }
}
