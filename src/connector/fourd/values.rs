//! 4D attribute values on the REST wire, to and from db-sync's [`Value`]s
//! (`docs/4d-rest.md` §6, from the `4d/docs` pages `REST/$method.md`, `REST/manData.md`,
//! `Concepts/dt_date.md` and `Concepts/dt_time.md`).
//!
//! | 4D type | read as | written from |
//! |---|---|---|
//! | `long`, `word`, `byte`, `long64` | `Int` (from the JSON token, never through a double) | `Int`, whole `Float`, integer text |
//! | `number` | `Float` (the token's shortest round-trip form, bit for bit) | `Float`, `Int` a double holds exactly |
//! | `string` | `Text` | `Text` |
//! | `uuid` | `Text`, lower-case with dashes (4D sends 32 hex digits) | `Text` in either form, sent as 32 upper-case hex digits |
//! | `bool` | `Bool` | `Bool`, 0/1 |
//! | `date` | `Text` `YYYY-MM-DD`; `0!0!0` (the empty date) as NULL | `Text` `YYYY-MM-DD`, sent as `dd!mm!yyyy` |
//! | `duration` | `Text` `HH:MM:SS[.mmm]` (4D Time, in `time_unit` on the wire) | `Text` in that form |
//! | `object` | `Text` (the JSON document) | `Text` holding JSON |

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde_json::Value as Json;

use crate::model::{ColumnType, Storage, Value};

/// Unit of 4D Time (`duration`) values on the wire: no 4D page shows one; milliseconds is
/// the default (`docs/4d-rest.md` §6, an assumption), seconds the alternative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds since midnight.
    Millis,
    /// Seconds since midnight.
    Seconds,
}

/// The 4D attribute types db-sync syncs, from `$catalog`'s `type`
/// (`REST/$catalog.md`; `object` from `API/DataClassClass.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeType {
    /// `long` (32 bits), `word` (16), `byte` (8) or `long64` (64): the width in bits.
    Integer(u8),
    /// `number`: a double.
    Real,
    /// `string`: Alpha or Text.
    Text,
    /// `uuid`: 32 hex digits.
    Uuid,
    /// `bool`.
    Bool,
    /// `date` (date only).
    Date,
    /// `duration`: a 4D Time.
    Time,
    /// `object`: a JSON object.
    Object,
}

impl AttributeType {
    /// The type of a storage attribute, `None` for pictures, BLOBs and unknown types.
    pub fn parse(name: &str) -> Option<AttributeType> {
        Some(match name {
            "long" => AttributeType::Integer(32),
            "word" => AttributeType::Integer(16),
            "byte" => AttributeType::Integer(8),
            "long64" => AttributeType::Integer(64),
            "number" => AttributeType::Real,
            "string" | "text" => AttributeType::Text,
            "uuid" => AttributeType::Uuid,
            "bool" | "boolean" => AttributeType::Bool,
            "date" => AttributeType::Date,
            "duration" | "time" => AttributeType::Time,
            "object" => AttributeType::Object,
            _ => return None,
        })
    }

    /// The column db-sync sees: type family and what it holds exactly.
    pub fn column(self, unit: TimeUnit) -> (ColumnType, Storage) {
        let storage = Storage::default();
        match self {
            // Storage widths are 16, 32 or 64; a byte attribute is checked at 16 and
            // refused by 4D beyond 255.
            AttributeType::Integer(bits) => (ColumnType::Integer, Storage { int_bits: Some(bits.max(16)), ..storage }),
            // JSON has no NaN or infinities.
            AttributeType::Real => (ColumnType::Float, Storage { no_nan: true, ..storage }),
            AttributeType::Text => (ColumnType::Text, storage),
            AttributeType::Uuid => (ColumnType::Text, Storage { uuid: true, ..storage }),
            AttributeType::Bool => (ColumnType::Boolean, storage),
            AttributeType::Date => (ColumnType::Date, Storage { fraction_digits: Some(0), ..storage }),
            AttributeType::Time => {
                let digits = if unit == TimeUnit::Millis { 3 } else { 0 };
                (ColumnType::Time, Storage { fraction_digits: Some(digits), ..storage })
            }
            AttributeType::Object => (ColumnType::Json, storage),
        }
    }

    /// True for the integer types, whose order 4D and db-sync agree on.
    pub fn is_integer(self) -> bool {
        matches!(self, AttributeType::Integer(_))
    }
}

/// Reads one attribute value from a 4D answer. `zone` turns an ISO date with a time of day
/// into the calendar date of that zone.
pub fn read(json: &Json, t: AttributeType, unit: TimeUnit, zone: &TimeZone) -> Result<Value, String> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    let unexpected = || format!("unexpected {} for a {t:?} attribute", short(json));
    match t {
        AttributeType::Integer(_) => match json {
            Json::Number(n) => {
                let text = n.to_string();
                text.parse::<i64>().map(Value::Int).or_else(|_| match text.parse::<f64>() {
                    Ok(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Value::Int(f as i64)),
                    _ => Err(unexpected()),
                })
            }
            _ => Err(unexpected()),
        },
        AttributeType::Real => match json {
            Json::Number(n) => n.to_string().parse::<f64>().map(Value::Float).map_err(|_| unexpected()),
            _ => Err(unexpected()),
        },
        AttributeType::Text => match json {
            Json::String(s) => Ok(Value::Text(s.clone())),
            _ => Err(unexpected()),
        },
        AttributeType::Uuid => match json {
            Json::String(s) => Ok(Value::Text(uuid_dashed(s).unwrap_or_else(|| s.clone()))),
            _ => Err(unexpected()),
        },
        AttributeType::Bool => match json {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::Number(n) if n.to_string() == "0" || n.to_string() == "1" => Ok(Value::Bool(n.to_string() == "1")),
            _ => Err(unexpected()),
        },
        AttributeType::Date => match json {
            Json::String(s) => read_date(s, zone).map(|d| d.map_or(Value::Null, |d| Value::Text(d.to_string()))),
            _ => Err(unexpected()),
        },
        AttributeType::Time => match json {
            Json::Number(n) => {
                let amount: i64 = n.to_string().parse().map_err(|_| unexpected())?;
                Ok(Value::Text(time_text(amount, unit)))
            }
            _ => Err(unexpected()),
        },
        AttributeType::Object => Ok(Value::Text(json.to_string())),
    }
}

/// Writes one value for an attribute of type `t`, or says why 4D cannot hold it.
pub fn write(value: &Value, t: AttributeType, unit: TimeUnit) -> Result<Json, String> {
    if value.is_null() {
        return Ok(Json::Null);
    }
    let cannot = || format!("{} value {} cannot be written to a 4D {t:?} attribute", value.kind(), short(value));
    match t {
        AttributeType::Integer(bits) => {
            let i = match value {
                Value::Int(i) => *i,
                Value::Bool(b) => i64::from(*b),
                Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => *f as i64,
                Value::Text(s) => s.trim().parse().map_err(|_| cannot())?,
                _ => return Err(cannot()),
            };
            let (min, max) = match bits {
                8 => (0, 255),
                16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
                32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
                _ => (i64::MIN, i64::MAX),
            };
            if i < min || i > max {
                return Err(format!("{i} does not fit a {bits}-bit 4D integer attribute"));
            }
            Ok(Json::from(i))
        }
        AttributeType::Real => {
            let f = match value {
                Value::Float(f) => *f,
                Value::Int(i) if (*i as f64) as i64 == *i => *i as f64,
                Value::Text(s) => s.trim().parse().map_err(|_| cannot())?,
                _ => return Err(cannot()),
            };
            if !f.is_finite() {
                return Err(format!("{f} cannot travel to 4D: JSON has no NaN or infinity"));
            }
            Ok(Json::from(f))
        }
        AttributeType::Text => match value {
            Value::Text(s) => Ok(Json::String(s.clone())),
            Value::Int(i) => Ok(Json::String(i.to_string())),
            _ => Err(cannot()),
        },
        AttributeType::Uuid => match value {
            Value::Text(s) => {
                let hex: String = s.chars().filter(|c| *c != '-').collect();
                if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    Ok(Json::String(hex.to_ascii_uppercase()))
                } else {
                    Err(format!("{} is not a UUID", short(value)))
                }
            }
            _ => Err(cannot()),
        },
        AttributeType::Bool => match value {
            Value::Bool(b) => Ok(Json::Bool(*b)),
            Value::Int(0) => Ok(Json::Bool(false)),
            Value::Int(1) => Ok(Json::Bool(true)),
            _ => Err(cannot()),
        },
        AttributeType::Date => match value {
            Value::Text(s) => {
                let date = read_date(s, &TimeZone::UTC)?.ok_or_else(cannot)?;
                Ok(Json::String(format!("{:02}!{:02}!{:04}", date.day(), date.month(), date.year())))
            }
            _ => Err(cannot()),
        },
        AttributeType::Time => match value {
            Value::Text(s) => {
                let amount = parse_time(s, unit).ok_or_else(cannot)?;
                Ok(Json::from(amount))
            }
            _ => Err(cannot()),
        },
        AttributeType::Object => match value {
            Value::Text(s) => serde_json::from_str(s).map_err(|e| format!("{} is not JSON: {e}", short(value))),
            _ => Err(cannot()),
        },
    }
}

/// A 4D date: `d!m!yyyy` (one or two digits), the empty date `0!0!0` / `00!00!0000` as
/// `None`, `YYYY-MM-DD`, or ISO with a time (midnight without an offset keeps its date; an
/// instant becomes the date in `zone`).
pub fn read_date(text: &str, zone: &TimeZone) -> Result<Option<Date>, String> {
    let bad = || format!("{text:?} is not a 4D date (d!m!yyyy or YYYY-MM-DD)");
    if let Some((d, rest)) = text.split_once('!') {
        let (m, y) = rest.split_once('!').ok_or_else(bad)?;
        let (d, m, y): (i8, i8, i16) =
            (d.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, y.parse().map_err(|_| bad())?);
        if d == 0 && m == 0 && y == 0 {
            return Ok(None);
        }
        return Date::new(y, m, d).map(Some).map_err(|_| bad());
    }
    if text.len() == 10 {
        return text.parse::<Date>().map(Some).map_err(|_| bad());
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(Some(zone.to_datetime(ts).date()));
    }
    match text.parse::<jiff::civil::DateTime>() {
        Ok(dt) if dt.time() == jiff::civil::Time::midnight() => Ok(Some(dt.date())),
        _ => Err(bad()),
    }
}

/// `HH:MM:SS` with `.mmm` for milliseconds; hours may pass 24 (a 4D Time is a duration),
/// negative amounts keep their sign.
pub fn time_text(amount: i64, unit: TimeUnit) -> String {
    let (sign, amount) = if amount < 0 { ("-", amount.unsigned_abs()) } else { ("", amount as u64) };
    let (seconds, millis) = match unit {
        TimeUnit::Millis => (amount / 1000, Some(amount % 1000)),
        TimeUnit::Seconds => (amount, None),
    };
    let base = format!("{sign}{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60);
    match millis {
        Some(ms) => format!("{base}.{ms:03}"),
        None => base,
    }
}

/// The amount in `unit` of `HH:MM[:SS[.fraction]]`; a fraction finer than the unit is
/// refused (the exact-values transform has already rounded it to the column's digits).
pub fn parse_time(text: &str, unit: TimeUnit) -> Option<i64> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (clock, fraction) = match text.split_once('.') {
        Some((c, f)) => (c, f),
        None => (text, ""),
    };
    let mut parts = clock.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let s: i64 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
    if parts.next().is_some() || m > 59 || s > 59 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let seconds = h * 3600 + m * 60 + s;
    let digits = fraction.trim_end_matches('0');
    let amount = match unit {
        TimeUnit::Seconds if digits.is_empty() => seconds,
        TimeUnit::Millis if digits.len() <= 3 => seconds * 1000 + format!("{digits:0<3}").parse::<i64>().ok()?,
        _ => return None,
    };
    Some(if negative { -amount } else { amount })
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower case) from 32 hex digits in either case.
pub fn uuid_dashed(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// A value for an error message, cut at 40 characters.
fn short(value: &impl std::fmt::Display) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 { format!("{}…", text.chars().take(40).collect::<String>()) } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(json: &str, t: AttributeType) -> Value {
        read(&serde_json::from_str(json).unwrap(), t, TimeUnit::Millis, &TimeZone::UTC).unwrap()
    }

    #[test]
    fn integers_keep_every_digit() {
        assert_eq!(r("9007199254740993", AttributeType::Integer(64)), Value::Int(9_007_199_254_740_993));
        assert_eq!(r("-9223372036854775808", AttributeType::Integer(64)), Value::Int(i64::MIN));
        assert_eq!(
            write(&Value::Int(i64::MAX), AttributeType::Integer(64), TimeUnit::Millis).unwrap().to_string(),
            "9223372036854775807"
        );
        assert!(
            write(&Value::Int(40000), AttributeType::Integer(16), TimeUnit::Millis).unwrap_err().contains("16-bit")
        );
    }

    #[test]
    fn reals_round_trip_bit_for_bit() {
        for f in [0.1 + 0.2, 5e-324, f64::MAX, -0.0, 1.0 / 3.0] {
            let json = write(&Value::Float(f), AttributeType::Real, TimeUnit::Millis).unwrap();
            let Value::Float(back) = r(&json.to_string(), AttributeType::Real) else { panic!() };
            assert_eq!(back.to_bits(), f.to_bits(), "{f}");
        }
        assert!(write(&Value::Float(f64::NAN), AttributeType::Real, TimeUnit::Millis).is_err());
    }

    #[test]
    fn dates_in_4d_form() {
        assert_eq!(r("\"3!7!2014\"", AttributeType::Date), Value::Text("2014-07-03".into()));
        assert_eq!(r("\"03!07!2014\"", AttributeType::Date), Value::Text("2014-07-03".into()));
        assert_eq!(r("\"0!0!0\"", AttributeType::Date), Value::Null);
        assert_eq!(r("\"00!00!0000\"", AttributeType::Date), Value::Null);
        assert_eq!(r("\"2014-07-03T00:00:00\"", AttributeType::Date), Value::Text("2014-07-03".into()));
        assert_eq!(r("\"2014-07-03T23:30:00Z\"", AttributeType::Date), Value::Text("2014-07-03".into()));
        let w = write(&Value::Text("2014-07-03".into()), AttributeType::Date, TimeUnit::Millis).unwrap();
        assert_eq!(w, Json::String("03!07!2014".into()));
        assert!(write(&Value::Text("2014-02-30".into()), AttributeType::Date, TimeUnit::Millis).is_err());
    }

    #[test]
    fn times_and_uuids() {
        assert_eq!(r("45296123", AttributeType::Time), Value::Text("12:34:56.123".into()));
        assert_eq!(parse_time("12:34:56.123", TimeUnit::Millis), Some(45_296_123));
        assert_eq!(parse_time("36:00:00", TimeUnit::Seconds), Some(129_600));
        assert_eq!(parse_time("12:34:56.1234", TimeUnit::Millis), None);
        assert_eq!(time_text(129_600, TimeUnit::Seconds), "36:00:00");
        assert_eq!(
            r("\"0F1E2D3C4B5A69788796A5B4C3D2E1F0\"", AttributeType::Uuid),
            Value::Text("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into())
        );
        let w =
            write(&Value::Text("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()), AttributeType::Uuid, TimeUnit::Millis);
        assert_eq!(w.unwrap(), Json::String("0F1E2D3C4B5A69788796A5B4C3D2E1F0".into()));
    }
}
