//! 4D attribute types and their values on the wire (docs/4d-rest.md §6).
//!
//! Storage types come from `docs/REST/$catalog.md` (attribute `type`) and
//! `docs/API/DataClassClass.md` (which also names `object`). Date forms come from
//! `docs/REST/manData.md` ("Retrieving Date attributes", `d!m!yyyy` for "Date only" attributes)
//! and `docs/REST/$method.md` (`dd!mm!yyyy` and JS dates accepted on write).

use rusqlite::types::{Value as Sql, ValueRef};
use serde_json::{Map, Number, Value};

use crate::TimeUnit;

/// A 4D storage attribute type, named as `$catalog` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    Bool,
    Blob,
    Byte,
    Date,
    Duration,
    Image,
    Long,
    Long64,
    Number,
    Object,
    String,
    Uuid,
    Word,
}

impl AttrType {
    /// The type named by a column's declared SQLite type: its first word, case-insensitive.
    pub fn from_decl(decl: &str) -> Option<AttrType> {
        let word = decl.split_whitespace().next()?.to_ascii_lowercase();
        Some(match word.as_str() {
            "bool" => AttrType::Bool,
            "blob" => AttrType::Blob,
            "byte" => AttrType::Byte,
            "date" => AttrType::Date,
            "duration" => AttrType::Duration,
            "image" => AttrType::Image,
            "long" => AttrType::Long,
            "long64" => AttrType::Long64,
            "number" => AttrType::Number,
            "object" => AttrType::Object,
            "string" => AttrType::String,
            "uuid" => AttrType::Uuid,
            "word" => AttrType::Word,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AttrType::Bool => "bool",
            AttrType::Blob => "blob",
            AttrType::Byte => "byte",
            AttrType::Date => "date",
            AttrType::Duration => "duration",
            AttrType::Image => "image",
            AttrType::Long => "long",
            AttrType::Long64 => "long64",
            AttrType::Number => "number",
            AttrType::Object => "object",
            AttrType::String => "string",
            AttrType::Uuid => "uuid",
            AttrType::Word => "word",
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(self, AttrType::Byte | AttrType::Word | AttrType::Long | AttrType::Long64)
    }

    /// Text compared as 4D compares text (folded, `@` wildcard).
    pub fn is_text(self) -> bool {
        matches!(self, AttrType::String | AttrType::Uuid)
    }

    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, AttrType::Number | AttrType::Duration)
    }

    /// Inclusive range of an integer type. Byte is 8 bits, Word (Integer) 16, Long 32, Long64 64.
    fn int_range(self) -> (i64, i64) {
        match self {
            AttrType::Byte => (i8::MIN as i64, u8::MAX as i64),
            AttrType::Word => (i16::MIN as i64, i16::MAX as i64),
            AttrType::Long => (i32::MIN as i64, i32::MAX as i64),
            _ => (i64::MIN, i64::MAX),
        }
    }
}

/// Formats a stored `YYYY-MM-DD` date as 4D answers a "Date only" attribute: `d!m!yyyy`,
/// unpadded (`docs/REST/manData.md`). NULL and unreadable text give the empty date `0!0!0`.
pub fn format_date(stored: Option<&str>) -> String {
    match stored.and_then(parse_iso_date) {
        Some((y, m, d)) => format!("{d}!{m}!{y}"),
        None => "0!0!0".to_string(),
    }
}

fn parse_iso_date(s: &str) -> Option<(i32, u32, u32)> {
    let s = s.get(..10)?;
    let b = s.as_bytes();
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i32 = s[..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    valid_date(y, m, d).then_some((y, m, d))
}

fn valid_date(y: i32, m: u32, d: u32) -> bool {
    if !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    d <= days
}

/// Parses a date as 4D accepts it on write (`docs/REST/$method.md`): `dd!mm!yyyy` or `d!m!yyyy`,
/// the empty date `0!0!0`/`00!00!0000`, `YYYY-MM-DD`, or a JS date `YYYY-MM-DDTHH:MM:SS[.fff]Z`
/// (its UTC date part). `Ok(None)` is the empty date, stored as NULL.
pub fn parse_date(s: &str) -> Result<Option<String>, String> {
    let bad = || format!("\"{s}\" is not a date (d!m!yyyy, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)");
    if s.contains('!') {
        let parts: Vec<&str> = s.split('!').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit())) {
            return Err(bad());
        }
        let d: u32 = parts[0].parse().map_err(|_| bad())?;
        let m: u32 = parts[1].parse().map_err(|_| bad())?;
        let y: i32 = parts[2].parse().map_err(|_| bad())?;
        if d == 0 && m == 0 && y == 0 {
            return Ok(None);
        }
        if !valid_date(y, m, d) || parts[0].len() > 2 || parts[1].len() > 2 {
            return Err(bad());
        }
        return Ok(Some(format!("{y:04}-{m:02}-{d:02}")));
    }
    if s.len() == 10 || (s.len() > 10 && s.as_bytes()[10] == b'T') {
        if s.len() > 10 {
            let t = &s[11..];
            let ok = t.ends_with('Z')
                && t.len() >= 9
                && t.as_bytes()[2] == b':'
                && t.as_bytes()[5] == b':'
                && t[..t.len() - 1].bytes().all(|c| c.is_ascii_digit() || c == b':' || c == b'.');
            if !ok {
                return Err(bad());
            }
        }
        let (y, m, d) = parse_iso_date(s).ok_or_else(bad)?;
        if (y, m, d) == (0, 0, 0) {
            return Ok(None);
        }
        return Ok(Some(format!("{y:04}-{m:02}-{d:02}")));
    }
    Err(bad())
}

/// Parses `HH:MM:SS` into the time unit (a convenience for durations given as text).
pub fn parse_time(s: &str, unit: TimeUnit) -> Option<i64> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 3 {
        return None;
    }
    let h: i64 = parts[0].parse().ok()?;
    let m: i64 = parts[1].parse().ok()?;
    let sec: i64 = parts[2].parse().ok()?;
    if !(0..60).contains(&m) || !(0..60).contains(&sec) || h < 0 {
        return None;
    }
    let secs = h * 3600 + m * 60 + sec;
    Some(match unit {
        TimeUnit::Millis => secs * 1000,
        TimeUnit::Seconds => secs,
    })
}

/// A stored SQLite value as 4D puts it on the wire for an attribute of type `t`.
pub fn to_wire(t: AttrType, v: ValueRef<'_>) -> Value {
    match (t, v) {
        (AttrType::Date, ValueRef::Null) => Value::String("0!0!0".into()),
        (_, ValueRef::Null) => Value::Null,
        (AttrType::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (AttrType::Bool, ValueRef::Real(f)) => Value::Bool(f != 0.0),
        (AttrType::Bool, ValueRef::Text(t)) => Value::Bool(matches!(t, b"1" | b"true" | b"True")),
        (AttrType::Date, ValueRef::Text(s)) => Value::String(format_date(std::str::from_utf8(s).ok())),
        (AttrType::Date, _) => Value::String("0!0!0".into()),
        (AttrType::Object, ValueRef::Text(s)) => {
            serde_json::from_slice(s).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(s).into_owned()))
        }
        (AttrType::String | AttrType::Uuid, ValueRef::Text(s)) => {
            Value::String(String::from_utf8_lossy(s).into_owned())
        }
        (AttrType::String | AttrType::Uuid, ValueRef::Integer(i)) => Value::String(i.to_string()),
        (AttrType::String | AttrType::Uuid, ValueRef::Real(f)) => Value::String(f.to_string()),
        (_, ValueRef::Integer(i)) => Value::Number(i.into()),
        (t, ValueRef::Real(f)) if t.is_integer() && f.fract() == 0.0 && f.abs() < 9.2e18 => {
            Value::Number((f as i64).into())
        }
        (_, ValueRef::Real(f)) => Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        (_, ValueRef::Text(s)) => {
            let s = String::from_utf8_lossy(s);
            serde_json::from_str::<Number>(&s).map(Value::Number).unwrap_or(Value::String(s.into_owned()))
        }
        (_, ValueRef::Blob(_)) => Value::Null,
    }
}

/// The deferred form of a picture or blob (`docs/REST/manData.md`, "Retrieving … pictures/blobs").
pub fn deferred(dataclass: &str, key: &str, attr: &str, t: AttrType) -> Value {
    let uri = if t == AttrType::Image {
        format!("/rest/{dataclass}({key})/{attr}?$imageformat=best&$version=1&$expand={attr}")
    } else {
        format!("/rest/{dataclass}({key})/{attr}?$binary=true&$expand={attr}")
    };
    let mut d = Map::new();
    d.insert("uri".into(), Value::String(uri));
    let mut o = Map::new();
    o.insert("__deferred".into(), Value::Object(d));
    Value::Object(o)
}

/// An integer from a JSON number token, never through f64 (so long64 keeps every digit).
pub fn json_i64(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    // `1.0`, `1e3`: integral values written as reals.
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// Converts a value sent by a client to what is stored for an attribute of type `t`.
/// `Err` holds a validation message (errCode 1569).
pub fn from_wire(t: AttrType, v: &Value, unit: TimeUnit) -> Result<Sql, String> {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let wrong = || format!("{} is not a valid {} value", kind(v), t.name());
    if v.is_null() {
        return Ok(Sql::Null);
    }
    match t {
        AttrType::Byte | AttrType::Word | AttrType::Long | AttrType::Long64 => {
            let Value::Number(n) = v else { return Err(wrong()) };
            let i = json_i64(n).ok_or_else(|| format!("{n} is not an integer"))?;
            let (lo, hi) = t.int_range();
            if i < lo || i > hi {
                return Err(format!("{i} is out of range for a {} attribute", t.name()));
            }
            Ok(Sql::Integer(i))
        }
        AttrType::Number => match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Sql::Real(i as f64)),
                None => n.as_f64().map(Sql::Real).ok_or_else(wrong),
            },
            _ => Err(wrong()),
        },
        AttrType::Duration => match v {
            Value::Number(n) => json_i64(n).map(Sql::Integer).ok_or_else(|| format!("{n} is not a whole duration")),
            Value::String(s) => parse_time(s, unit).map(Sql::Integer).ok_or_else(wrong),
            _ => Err(wrong()),
        },
        AttrType::String => match v {
            Value::String(s) => Ok(Sql::Text(s.clone())),
            _ => Err(wrong()),
        },
        AttrType::Uuid => match v {
            Value::String(s) => {
                let hex: String = s.chars().filter(|c| *c != '-').collect();
                if hex.len() == 32 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    Ok(Sql::Text(hex))
                } else {
                    Err(format!("\"{s}\" is not a UUID (32 hexadecimal digits)"))
                }
            }
            _ => Err(wrong()),
        },
        AttrType::Bool => match v {
            Value::Bool(b) => Ok(Sql::Integer(*b as i64)),
            _ => Err(wrong()),
        },
        AttrType::Date => match v {
            Value::String(s) => Ok(parse_date(s)?.map(Sql::Text).unwrap_or(Sql::Null)),
            _ => Err(wrong()),
        },
        AttrType::Object => match v {
            Value::Object(_) => Ok(Sql::Text(v.to_string())),
            _ => Err(wrong()),
        },
        AttrType::Image | AttrType::Blob => {
            Err(format!("{} attributes are written with $upload, which the emulator does not offer", t.name()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates() {
        assert_eq!(format_date(Some("2014-07-03")), "3!7!2014");
        assert_eq!(format_date(None), "0!0!0");
        assert_eq!(parse_date("03!07!2014").unwrap().as_deref(), Some("2014-07-03"));
        assert_eq!(parse_date("3!7!2014").unwrap().as_deref(), Some("2014-07-03"));
        assert_eq!(parse_date("0!0!0").unwrap(), None);
        assert_eq!(parse_date("00!00!0000").unwrap(), None);
        assert_eq!(parse_date("2014-07-03T00:00:00Z").unwrap().as_deref(), Some("2014-07-03"));
        assert_eq!(parse_date("2014-07-03T21:25:05.123Z").unwrap().as_deref(), Some("2014-07-03"));
        assert_eq!(parse_date("2014-07-03").unwrap().as_deref(), Some("2014-07-03"));
        assert!(parse_date("31!2!2014").is_err());
        assert!(parse_date("2014-07-03T21:25").is_err());
        assert!(parse_date("hello").is_err());
    }

    #[test]
    fn wire_values() {
        let big: Value = serde_json::from_str("9007199254740993").unwrap();
        assert_eq!(from_wire(AttrType::Long64, &big, TimeUnit::Millis).unwrap(), Sql::Integer(9007199254740993));
        assert_eq!(to_wire(AttrType::Long64, ValueRef::Integer(9007199254740993)).to_string(), "9007199254740993");
        assert!(from_wire(AttrType::Word, &json!(40000), TimeUnit::Millis).is_err());
        assert!(from_wire(AttrType::Long, &json!("12"), TimeUnit::Millis).is_err());
        assert!(from_wire(AttrType::Bool, &json!(1), TimeUnit::Millis).is_err());
        assert_eq!(from_wire(AttrType::Duration, &json!("01:00:01"), TimeUnit::Seconds).unwrap(), Sql::Integer(3601));
        assert_eq!(to_wire(AttrType::Number, ValueRef::Real(0.1)).to_string(), "0.1");
        assert_eq!(to_wire(AttrType::Bool, ValueRef::Integer(1)), json!(true));
        assert_eq!(to_wire(AttrType::Object, ValueRef::Text(br#"{"a":1}"#)), json!({"a": 1}));
    }
}
