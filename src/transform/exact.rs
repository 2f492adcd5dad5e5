//! Values converted to the exact form a target column holds, and compared in that form.
//!
//! Rules (the product's "exact values" contract): integers stay integers (64-bit, never
//! through a double); decimals keep every digit (`bigdecimal`) and compare by value at the
//! column's scale; floats round-trip bit for bit and compare at the column's width; text is
//! byte-exact; dates, times and timestamps keep their fraction digits up to what the
//! column keeps. A value the column cannot hold (too wide, too many digits, NaN where NaN
//! reads back as NULL, …) is an error naming what does not fit; the engine reports it as a
//! data error for the row and column, and never writes a changed value instead.
//!
//! Two documented conversions are not errors:
//! - a double going into a 32-bit `real` column is rounded to the nearest `real` (floats
//!   compare at the target column's width);
//! - a time or timestamp with more fraction digits than the column keeps is rounded to the
//!   column's precision (half up; PostgreSQL keeps microseconds), and an instant with an
//!   offset going into a column without time zone becomes the wall-clock time of the config's
//!   `timezone` (default UTC); a wall-clock time going into a column with time zone is read
//!   in that zone.
//!
//! Nothing here does I/O.

use std::str::FromStr;

use bigdecimal::{BigDecimal, RoundingMode, ToPrimitive, Zero};
use jiff::SignedDuration;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};

use crate::model::{ColumnType, Storage, Value, float_integer};

/// A target column as conversion and comparison need it: its family and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetColumn {
    /// Type family.
    pub family: ColumnType,
    /// What it holds exactly.
    pub storage: Storage,
}

/// Converts `value` to what column `to` will hold, exactly, or says why it cannot.
/// `zone` reads wall-clock times into instants and back (the config's `timezone`).
pub fn convert(value: Value, to: &TargetColumn, zone: &TimeZone) -> Result<Value, String> {
    use ColumnType as T;
    let s = &to.storage;
    if let Value::Float(f) = &value
        && f.is_nan()
        && s.no_nan
    {
        return Err("NaN cannot be stored in this column (the target would read it back as NULL)".into());
    }
    let converted = match (value, to.family) {
        (value @ Value::Null, _) | (value, T::Other) => Ok(value),
        (value, T::Integer) => to_integer(value, s.int_bits.unwrap_or(64)),
        (value, T::Float) => to_float(value, s),
        (value, T::Decimal) => to_decimal(value, s),
        (value, T::Boolean) => match boolean(&value) {
            Some(b) => Ok(Value::Bool(b)),
            None => Err(format!("{} {} is not a boolean", value.kind(), shown(&value))),
        },
        (value, T::Text) => to_text(value, s),
        (value @ Value::Bytes(_), T::Blob) => Ok(value),
        (Value::Text(t), T::Blob) => Ok(Value::Bytes(t.into_bytes())),
        (value, T::Date | T::Time | T::Timestamp) => to_temporal(value, to, zone),
        (Value::Text(t), T::Json) => Ok(Value::Text(t)),
        (Value::Int(i), T::Json) => Ok(Value::Text(i.to_string())),
        (Value::Bool(b), T::Json) => Ok(Value::Text(b.to_string())),
        (Value::Float(f), T::Json) if f.is_finite() => Ok(Value::Text(f.to_string())),
        (value, t) => Err(format!("{} value cannot convert to {t}", value.kind())),
    }?;
    // SQLite's NUMERIC affinity (columns declared JSON, DATE, BOOLEAN, … as well as
    // NUMERIC) turns text that reads as a number into an integer or a double, losing
    // digits: such text goes in as the number it is, exactly, or is refused.
    match converted {
        Value::Text(t) if s.numeric_affinity && to.family != T::Decimal => match decimal_text(&t) {
            Some(d) => affinity_number(&d),
            None => Ok(Value::Text(t)),
        },
        converted => Ok(converted),
    }
}

/// The number in decimal text: an integer or real literal (`12`, `-1.5`, `.5`, `1e3`),
/// spaces around it allowed; nothing else (`1_000`, `0x10`, `inf`). This is also what
/// SQLite's NUMERIC affinity reads as a number.
fn decimal_text(t: &str) -> Option<BigDecimal> {
    let b = t.trim().as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        i += usize::from(matches!(b.get(i), Some(b'+' | b'-')));
        if digits(&mut i) == 0 {
            return None;
        }
    }
    (i == b.len()).then(|| BigDecimal::from_str(t.trim()).ok()).flatten()
}

/// A number as SQLite's NUMERIC affinity keeps it: a whole number as a 64-bit integer,
/// else the double that reads back as the same decimal; anything else is refused.
fn affinity_number(d: &BigDecimal) -> Result<Value, String> {
    if d.is_integer()
        && let Some(i) = d.to_i64()
    {
        return Ok(Value::Int(i));
    }
    let f: f64 = d.to_plain_string().parse().map_err(|_| format!("{d} is not a number"))?;
    if !f.is_finite() {
        return Err(format!("{d} is beyond a double's range, and SQLite's NUMERIC affinity would store it as one"));
    }
    match BigDecimal::from_str(&f.to_string()) {
        Ok(back) if back == *d => Ok(if f == 0.0 && f.is_sign_negative() { Value::Int(0) } else { Value::Float(f) }),
        _ => Err(format!(
            "{d} has more digits than this column keeps (SQLite's NUMERIC affinity stores a 64-bit integer \
             or a double); declare the column TEXT to keep every digit"
        )),
    }
}

/// Whether `converted` (a source value after [`convert`]) and `stored` (the target's value
/// as read back) hold the same data in column `to`: integers exactly, decimals by value,
/// floats by bit pattern at the column's width (all NaNs alike), text byte for byte
/// (`char(n)` without trailing spaces, UUIDs in any spelling), times as instants or
/// wall-clock times, JSON as documents (key order and spacing aside, numbers by value).
pub fn same(converted: &Value, stored: &Value, to: &TargetColumn, zone: &TimeZone) -> bool {
    use ColumnType as T;
    match (converted, stored) {
        (Value::Null, Value::Null) => return true,
        (Value::Null, _) | (_, Value::Null) => return false,
        _ => {}
    }
    match to.family {
        T::Integer => match (exact_integer(converted), exact_integer(stored)) {
            (Some(a), Some(b)) => a == b,
            _ => converted.same_as(stored),
        },
        T::Float => match (float_of(converted), float_of(stored)) {
            (Some(a), Some(b)) if to.storage.float_bits == Some(32) => same_f32(a as f32, b as f32),
            (Some(a), Some(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            _ => converted.same_as(stored),
        },
        T::Decimal => match (decimal_of(converted), decimal_of(stored)) {
            (Some(a), Some(b)) => a == b,
            _ => match (special_number(converted), special_number(stored)) {
                (Some(a), Some(b)) => a == b,
                _ => converted.same_as(stored),
            },
        },
        T::Boolean => boolean(converted).is_some() && boolean(converted) == boolean(stored),
        T::Text => match (converted, stored) {
            (Value::Text(a), Value::Text(b)) if to.storage.padded => a.trim_end_matches(' ') == b.trim_end_matches(' '),
            (Value::Text(a), Value::Text(b)) if to.storage.uuid => match (uuid(a), uuid(b)) {
                (Some(a), Some(b)) => a == b,
                _ => a == b,
            },
            _ => converted.same_as(stored),
        },
        T::Blob => match (converted, stored) {
            (Value::Bytes(a), Value::Text(b)) | (Value::Text(b), Value::Bytes(a)) => a == b.as_bytes(),
            _ => converted.same_as(stored),
        },
        T::Date | T::Time | T::Timestamp => match (converted, stored) {
            (Value::Text(a), Value::Text(b)) => match (TimeText::parse(a), TimeText::parse(b)) {
                (Some(a), Some(b)) => a.same_moment(&b, zone),
                _ => a == b,
            },
            _ => converted.same_as(stored),
        },
        T::Json => match (converted, stored) {
            (Value::Text(a), Value::Text(b)) => {
                match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)) {
                    (Ok(a), Ok(b)) => same_json(&a, &b),
                    _ => a == b,
                }
            }
            _ => converted.same_as(stored),
        },
        T::Other => converted.same_as(stored),
    }
}

/// Two JSON documents hold the same data: objects compare key by key (order aside),
/// arrays element by element, numbers by value (`1.0` equals `1`, `1e2` equals `100`:
/// jsonb rewrites both spellings), strings and literals exactly.
pub fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        (J::Array(x), J::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_json(v, w)),
        (J::Number(x), J::Number(y)) => {
            match (BigDecimal::from_str(&x.to_string()), BigDecimal::from_str(&y.to_string())) {
                (Ok(x), Ok(y)) => x == y,
                _ => x == y,
            }
        }
        (a, b) => a == b,
    }
}

/// A value for an error message: text quoted and cut at 40 characters.
fn shown(v: &Value) -> String {
    match v {
        Value::Text(t) if t.chars().count() > 40 => format!("{:?}…", t.chars().take(40).collect::<String>()),
        v => v.to_string(),
    }
}

fn to_integer(value: Value, bits: u8) -> Result<Value, String> {
    let i = match &value {
        Value::Int(i) => *i,
        Value::Bool(b) => i64::from(*b),
        Value::Float(f) => float_integer(*f).ok_or_else(|| format!("float {f:?} is not a 64-bit whole number"))?,
        Value::Text(t) => match t.trim().parse::<i64>() {
            Ok(i) => i,
            Err(_) => match decimal_text(t) {
                Some(d) if d.is_integer() => {
                    d.to_i64().ok_or_else(|| format!("{t} does not fit in a 64-bit integer"))?
                }
                Some(_) => return Err(format!("{t} is not a whole number")),
                None => return Err(format!("text {} is not an integer", shown(&value))),
            },
        },
        Value::Bytes(_) | Value::Null => return Err(format!("{} value cannot convert to integer", value.kind())),
    };
    let fits = match bits {
        16 => i16::try_from(i).is_ok(),
        32 => i32::try_from(i).is_ok(),
        _ => true,
    };
    if !fits {
        return Err(format!("{i} does not fit in a {bits}-bit integer column"));
    }
    Ok(Value::Int(i))
}

/// An integer (or whole-number float, integer text, boolean) as an exact integer.
fn exact_integer(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Float(f) => float_integer(*f).map(i128::from),
        Value::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

fn width_name(bits: u8) -> &'static str {
    if bits == 32 { "real (32-bit float)" } else { "double (64-bit float)" }
}

fn to_float(value: Value, s: &Storage) -> Result<Value, String> {
    let bits = s.float_bits.unwrap_or(64);
    let f = match &value {
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Int(i) => {
            let exact =
                if bits == 32 { (*i as f32) as i128 == i128::from(*i) } else { (*i as f64) as i128 == i128::from(*i) };
            if !exact {
                return Err(format!("integer {i} has no exact {} form", width_name(bits)));
            }
            *i as f64
        }
        Value::Text(t) => match special_float(t) {
            Some(f) => f,
            None => {
                let d = decimal_text(t).ok_or_else(|| format!("text {} is not a number", shown(&value)))?;
                let f: f64 = t.trim().parse().map_err(|_| format!("text {} is not a number", shown(&value)))?;
                let back = if bits == 32 {
                    BigDecimal::from_str(&(f as f32).to_string())
                } else {
                    BigDecimal::from_str(&f.to_string())
                };
                if !f.is_finite() || back.ok().as_ref() != Some(&d) {
                    return Err(format!("{t} has no exact {} form", width_name(bits)));
                }
                f
            }
        },
        Value::Bytes(_) | Value::Null => return Err(format!("{} value cannot convert to float", value.kind())),
    };
    if f.is_nan() && s.no_nan {
        return Err("NaN cannot be stored in this column (the target would read it back as NULL)".into());
    }
    let f = if bits == 32 {
        let x = f as f32;
        if f.is_finite() && x.is_infinite() {
            return Err(format!("{f:?} is too large for a {}", width_name(32)));
        }
        if f != 0.0 && x == 0.0 {
            return Err(format!("{f:?} is too small for a {}", width_name(32)));
        }
        f64::from(x)
    } else {
        f
    };
    if f == 0.0 && f.is_sign_negative() && s.no_negative_zero {
        return Err("-0.0 cannot be stored in this column (the target reads it back as 0)".into());
    }
    Ok(Value::Float(f))
}

/// `NaN`, `Infinity`, `-Infinity` (and `inf`, `+inf` spellings) as a float.
fn special_float(t: &str) -> Option<f64> {
    // Exactly PostgreSQL's output spellings: SQLite keeps `inf` or `infinity` as text, so
    // reading them as a number would change the value.
    match t {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// A float bit pattern compared at 32 bits (all NaNs alike).
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// A value as a float, for comparing float columns (integers only when exact).
fn float_of(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => ((*i as f64) as i128 == i128::from(*i)).then_some(*i as f64),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Text(t) => special_float(t).or_else(|| t.trim().parse().ok()),
        _ => None,
    }
}

/// A finite number as an exact decimal: integers, a float's shortest round-trip digits,
/// decimal text.
fn decimal_of(v: &Value) -> Option<BigDecimal> {
    match v {
        Value::Int(i) => Some(BigDecimal::from(*i)),
        Value::Bool(b) => Some(BigDecimal::from(i64::from(*b))),
        Value::Float(f) if f.is_finite() => BigDecimal::from_str(&f.to_string()).ok(),
        Value::Text(t) => decimal_text(t),
        _ => None,
    }
}

/// NaN and the infinities, as PostgreSQL's numeric spells them.
fn special_number(v: &Value) -> Option<&'static str> {
    let f = match v {
        Value::Float(f) => *f,
        Value::Text(t) => special_float(t)?,
        _ => return None,
    };
    Some(if f.is_nan() {
        "NaN"
    } else if f == f64::INFINITY {
        "Infinity"
    } else if f == f64::NEG_INFINITY {
        "-Infinity"
    } else {
        return None;
    })
}

fn to_decimal(value: Value, s: &Storage) -> Result<Value, String> {
    if let Some(special) = special_number(&value) {
        return match (s.numeric_affinity, special) {
            (true, "NaN") => Err("NaN cannot be stored in this column (the target would read it back as NULL)".into()),
            (true, "Infinity") => Ok(Value::Float(f64::INFINITY)),
            (true, _) => Ok(Value::Float(f64::NEG_INFINITY)),
            (false, special) => Ok(Value::Text(special.to_string())),
        };
    }
    let Some(mut d) = decimal_of(&value) else {
        return Err(format!("{} {} is not a number", value.kind(), shown(&value)));
    };
    let mut rescaled = false;
    if let Some(scale) = s.scale {
        let at_scale = d.with_scale_round(i64::from(scale), RoundingMode::HalfUp);
        if at_scale != d {
            return Err(format!("{d} has more than {scale} digits after the point"));
        }
        if let Some(precision) = s.precision
            && at_scale.digits() > u64::from(precision)
            && !at_scale.is_zero()
        {
            return Err(format!("{d} does not fit numeric({precision},{scale})"));
        }
        rescaled = true;
        d = at_scale;
    }
    if s.numeric_affinity {
        return affinity_number(&d);
    }
    Ok(match value {
        // Keep an integer as it is, and decimal text as written when the column has no
        // scale of its own (PostgreSQL's unconstrained numeric keeps the written scale).
        Value::Int(i) if !rescaled => Value::Int(i),
        Value::Text(t) if !rescaled => Value::Text(t.trim().to_string()),
        _ => Value::Text(d.to_plain_string()),
    })
}

fn to_text(value: Value, s: &Storage) -> Result<Value, String> {
    let mut t = match value {
        Value::Text(t) => t,
        Value::Int(i) => i.to_string(),
        Value::Float(f) => match special_number(&Value::Float(f)) {
            Some(special) => special.to_string(),
            None => f.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Bytes(b) if s.uuid && b.len() == 16 => b.iter().map(|x| format!("{x:02x}")).collect(),
        Value::Bytes(b) if s.uuid => return Err(format!("{} bytes are not a UUID (16 bytes)", b.len())),
        Value::Bytes(b) => String::from_utf8(b).map_err(|_| "bytes are not valid UTF-8 text".to_string())?,
        Value::Null => return Ok(Value::Null),
    };
    if s.uuid {
        t = uuid(&t).ok_or_else(|| format!("text {} is not a UUID", shown(&Value::Text(t.clone()))))?;
    }
    if s.no_nul && t.contains('\0') {
        return Err("text holds the character U+0000, which this column cannot store".into());
    }
    if let Some(max) = s.max_chars {
        let max = max as usize;
        if t.chars().count() > max {
            // PostgreSQL cuts spaces beyond the length and refuses anything else.
            if t.trim_end_matches(' ').chars().count() > max {
                return Err(format!("text of {} characters is longer than the column's {max}", t.chars().count()));
            }
            t = t.chars().take(max).collect();
        }
    }
    Ok(Value::Text(t))
}

/// A UUID in its canonical spelling (lower-case, hyphenated) from 32 hex digits, bare or
/// hyphenated 8-4-4-4-12, optionally in braces, in any case (the usual spellings; others
/// that PostgreSQL's `uuid` input also takes are refused rather than guessed).
pub fn uuid(t: &str) -> Option<String> {
    let t = t.trim();
    let t = match t.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => t,
    };
    let hex: String = match t.len() {
        32 => t.to_string(),
        36 if [8, 13, 18, 23].iter().all(|i| t.as_bytes()[*i] == b'-') => t.replace('-', ""),
        _ => return None,
    };
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// A boolean from the spellings the backends use.
pub fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        Value::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "1" => Some(true),
            "f" | "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A date, time or timestamp written as text: `YYYY-MM-DD`, `HH:MM[:SS[.f]]`, or both
/// joined by `T` or a space, with 0 to 9 fraction digits and an optional offset (`Z`,
/// `±hh`, `±hh:mm`, `±hhmm`). Other spellings (`infinity`, years beyond 9999, `BC`) are
/// not parsed and compare as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeText {
    /// The calendar date, if written.
    pub date: Option<Date>,
    /// The time of day, if written.
    pub time: Option<Time>,
    /// The offset, if written.
    pub offset: Option<Offset>,
}

impl TimeText {
    /// Parses `s`; `None` when it is not one of the forms above.
    pub fn parse(s: &str) -> Option<TimeText> {
        let s = s.trim();
        let (date, rest) = if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') && s.as_bytes().get(7) == Some(&b'-')
        {
            // Year 0 does not exist in SQL (PostgreSQL refuses it; 1 BC is its year before 1).
            let year: i16 = digits(&s[..4])?;
            if year < 1 {
                return None;
            }
            let date = Date::new(year, digits(&s[5..7])?, digits(&s[8..10])?).ok()?;
            match s.as_bytes().get(10) {
                None => return Some(TimeText { date: Some(date), time: None, offset: None }),
                Some(b'T' | b't' | b' ') => (Some(date), &s[11..]),
                _ => return None,
            }
        } else {
            (None, s)
        };
        let b = rest.as_bytes();
        if b.len() < 5 || b[2] != b':' {
            return None;
        }
        let hour: i8 = digits(&rest[..2])?;
        let minute: i8 = digits(&rest[3..5])?;
        let mut at = 5;
        let mut second = 0i8;
        let mut nanos = 0i32;
        if b.get(at) == Some(&b':') {
            second = digits(rest.get(at + 1..at + 3)?)?;
            at += 3;
            if b.get(at) == Some(&b'.') {
                let end = rest[at + 1..].find(|c: char| !c.is_ascii_digit()).map_or(rest.len(), |n| at + 1 + n);
                let fraction = &rest[at + 1..end];
                if fraction.is_empty() || fraction.len() > 9 {
                    return None;
                }
                nanos = fraction.parse::<i32>().ok()? * 10i32.pow(9 - fraction.len() as u32);
                at = end;
            }
        }
        let time = Time::new(hour, minute, second, nanos).ok()?;
        let offset = match &rest[at..] {
            "" => None,
            "Z" | "z" => Some(Offset::UTC),
            o => {
                let sign = match o.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let o = o[1..].replace(':', "");
                let (h, m, sec) = match o.len() {
                    2 => (digits::<i32>(&o)?, 0, 0),
                    4 => (digits::<i32>(&o[..2])?, digits::<i32>(&o[2..])?, 0),
                    6 => (digits::<i32>(&o[..2])?, digits::<i32>(&o[2..4])?, digits::<i32>(&o[4..])?),
                    _ => return None,
                };
                Some(Offset::from_seconds(sign * (h * 3600 + m * 60 + sec)).ok()?)
            }
        };
        Some(TimeText { date, time: Some(time), offset })
    }

    /// The moment as a UTC wall-clock time, reading a time without offset in `zone` (a
    /// date alone is its midnight). Civil arithmetic, so every year from 1 to 9999 works
    /// (jiff's instants stop a day short of year 10000).
    fn utc_civil(&self, zone: &TimeZone) -> Option<DateTime> {
        let dt = self.date?.to_datetime(self.time.unwrap_or(Time::midnight()));
        let offset = match self.offset {
            Some(offset) => offset,
            None if *zone == TimeZone::UTC => Offset::UTC,
            None => zone.to_offset(zone.to_ambiguous_timestamp(dt).compatible().ok()?),
        };
        dt.checked_sub(SignedDuration::from_secs(i64::from(offset.seconds()))).ok()
    }

    /// Same moment: two instants (or an instant and a wall-clock time read in `zone`)
    /// compare as instants, two wall-clock values as they are written.
    fn same_moment(&self, other: &TimeText, zone: &TimeZone) -> bool {
        match (self.offset, other.offset) {
            (None, None) => {
                self.date == other.date
                    && self.time.unwrap_or(Time::midnight()) == other.time.unwrap_or(Time::midnight())
            }
            _ if self.date.is_none() || other.date.is_none() => {
                // Times of day with offsets: the same time in UTC.
                let utc = |t: &TimeText| {
                    let seconds = t.offset.map_or(0, |o| o.seconds());
                    t.time.map(|time| time.wrapping_sub(SignedDuration::from_secs(i64::from(seconds))))
                };
                utc(self) == utc(other)
            }
            _ => self.utc_civil(zone).is_some() && self.utc_civil(zone) == other.utc_civil(zone),
        }
    }
}

fn digits<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `dt` rounded (half up) to `digits` fraction digits of the second.
fn round_fraction(dt: DateTime, digits: u8) -> Option<DateTime> {
    let step = 10i64.pow(9 - u32::from(digits.min(9)));
    let nanos = i64::from(dt.subsec_nanosecond());
    let rounded = (nanos + step / 2) / step * step;
    dt.checked_add(SignedDuration::from_nanos(rounded - nanos)).ok()
}

/// True for `[-]H…H:MM[:SS[.f]]` negative or with 24 hours or more (a duration, as a 4D
/// Time reads).
fn outside_a_day(text: &str) -> bool {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let Some((hours, rest)) = text.split_once(':') else { return false };
    let hours_ok = hours.len() >= 2 && hours.bytes().all(|b| b.is_ascii_digit());
    hours_ok
        && (negative || hours.parse::<u64>().map_or(true, |h| h >= 24))
        && TimeText::parse(&format!("00:{rest}")).is_some_and(|t| t.date.is_none() && t.offset.is_none())
}

/// `HH:MM:SS` with the fraction's significant digits.
fn time_text(t: Time) -> String {
    t.strftime("%H:%M:%S%.f").to_string()
}

fn to_temporal(value: Value, to: &TargetColumn, zone: &TimeZone) -> Result<Value, String> {
    use ColumnType as T;
    let s = &to.storage;
    let text = match value {
        Value::Text(t) => t,
        // Dates and times kept as numbers (unix time, julian days) pass through; a column
        // that cannot hold them refuses the row.
        value @ (Value::Int(_) | Value::Float(_)) => return Ok(value),
        value => return Err(format!("{} value cannot convert to {}", value.kind(), to.family)),
    };
    let Some(digits) = s.fraction_digits else {
        // Text storage (SQLite): kept as written; compared as a moment.
        return Ok(Value::Text(text));
    };
    let Some(parsed) = TimeText::parse(&text) else {
        // PostgreSQL's `infinity` is stored as written; another spelling PostgreSQL would
        // read differently (`2024-1-1`, `24:00:00`, `1:2:3`) would be rewritten on every
        // run, since it could never compare equal to what the column holds.
        // Exactly as PostgreSQL writes it back: `Infinity` or `infinity ` would be rewritten.
        let special = matches!(text.as_str(), "infinity" | "-infinity");
        if special && to.family != T::Time {
            return Ok(Value::Text(text));
        }
        if to.family == T::Time && outside_a_day(&text) {
            return Err(format!(
                "{} is a duration outside a day (negative, or 24 hours or more): db-sync's times are times of day \
                 (00:00:00 to 23:59:59.999999), so such a duration (a 4D Time may hold one) cannot be synced",
                shown(&Value::Text(text.clone()))
            ));
        }
        return Err(format!(
            "{} is not a {} db-sync reads exactly (YYYY-MM-DD, HH:MM[:SS[.fraction]] or both, with an optional \
             offset)",
            shown(&Value::Text(text.clone())),
            to.family
        ));
    };
    let bad = |what: &str| format!("{} {what}", shown(&Value::Text(text.clone())));
    let out = match to.family {
        T::Date => match (parsed.date, parsed.time, parsed.offset) {
            (Some(date), None, None) => date.strftime("%Y-%m-%d").to_string(),
            (Some(date), Some(time), None) if time == Time::midnight() => date.strftime("%Y-%m-%d").to_string(),
            (None, ..) => return Err(bad("is not a date")),
            _ => return Err(bad("has a time of day or an offset, which a date column would drop")),
        },
        T::Time => {
            let time = parsed.time.ok_or_else(|| bad("is not a time"))?;
            if parsed.date.is_some() {
                return Err(bad("has a date, which a time column would drop"));
            }
            let rounded = round_fraction(Date::constant(2000, 1, 1).to_datetime(time), digits)
                .ok_or_else(|| bad("cannot be rounded"))?;
            if rounded.date() != Date::constant(2000, 1, 1) {
                return Err(bad(&format!("rounds past midnight at {digits} fraction digits")));
            }
            match (parsed.offset, s.time_zone) {
                (None, _) => time_text(rounded.time()),
                (Some(o), true) => format!("{}{o}", time_text(rounded.time())),
                (Some(_), false) => return Err(bad("has an offset, which a time column without time zone would drop")),
            }
        }
        _ => {
            let date = parsed.date.ok_or_else(|| bad("has no date"))?;
            let dt = date.to_datetime(parsed.time.unwrap_or(Time::midnight()));
            if s.time_zone {
                let Some(utc) = parsed.utc_civil(zone).and_then(|utc| round_fraction(utc, digits)) else {
                    // Beyond year 9999 in UTC: the target judges the text as written.
                    return Ok(Value::Text(text));
                };
                format!("{}+00:00", utc.strftime("%Y-%m-%d %H:%M:%S%.f"))
            } else {
                let local = match parsed.offset {
                    None => dt,
                    Some(_) if *zone == TimeZone::UTC => {
                        parsed.utc_civil(zone).ok_or_else(|| bad("is out of range"))?
                    }
                    Some(o) => zone.to_datetime(o.to_timestamp(dt).map_err(|e| bad(&format!("is out of range: {e}")))?),
                };
                round_fraction(local, digits)
                    .ok_or_else(|| bad("is out of range"))?
                    .strftime("%Y-%m-%d %H:%M:%S%.f")
                    .to_string()
            }
        }
    };
    Ok(Value::Text(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(family: ColumnType, storage: Storage) -> TargetColumn {
        TargetColumn { family, storage }
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    /// Integers never pass through a double: 2^53 + 1 stays itself, and column widths are
    /// enforced.
    #[test]
    fn integers_are_exact() {
        let big = col(ColumnType::Integer, Storage::default());
        assert_eq!(convert(Value::Int(9_007_199_254_740_993), &big, &utc()), Ok(Value::Int(9_007_199_254_740_993)));
        assert!(!same(&Value::Int(9_007_199_254_740_993), &Value::Int(9_007_199_254_740_992), &big, &utc()));
        assert!(!same(&Value::Int(9_007_199_254_740_993), &Value::Float(9_007_199_254_740_992.0), &big, &utc()));
        assert_eq!(convert(Value::Text("9223372036854775807".into()), &big, &utc()), Ok(Value::Int(i64::MAX)));
        assert!(convert(Value::Text("9223372036854775808".into()), &big, &utc()).is_err());
        assert!(convert(Value::Float(1.5), &big, &utc()).is_err());
        assert!(convert(Value::Float(9.3e18), &big, &utc()).is_err());
        let int4 = col(ColumnType::Integer, Storage { int_bits: Some(32), ..Storage::default() });
        assert!(convert(Value::Int(1 << 31), &int4, &utc()).unwrap_err().contains("32-bit"));
        assert_eq!(convert(Value::Int(-(1 << 31)), &int4, &utc()), Ok(Value::Int(-(1 << 31))));
    }

    /// Decimals keep every digit, compare by value at the column's scale, and refuse
    /// digits the column would drop.
    #[test]
    fn decimals_keep_every_digit() {
        let n30_2 = col(ColumnType::Decimal, Storage { precision: Some(30), scale: Some(2), ..Storage::default() });
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(convert(text("12345678901234567.89"), &n30_2, &utc()), Ok(text("12345678901234567.89")));
        assert!(!same(&text("12345678901234567.89"), &text("12345678901234567.88"), &n30_2, &utc()));
        assert_eq!(convert(text("12.5"), &n30_2, &utc()), Ok(text("12.50")));
        assert!(same(&text("12.50"), &text("12.5"), &n30_2, &utc()));
        assert!(convert(text("12.345"), &n30_2, &utc()).unwrap_err().contains("2 digits after the point"));
        let n5_2 = col(ColumnType::Decimal, Storage { precision: Some(5), scale: Some(2), ..Storage::default() });
        assert!(convert(text("1234.5"), &n5_2, &utc()).unwrap_err().contains("numeric(5,2)"));
        let digits38 = "12345678901234567890123456789012345678";
        let numeric = col(ColumnType::Decimal, Storage::default());
        assert_eq!(convert(text(digits38), &numeric, &utc()), Ok(text(digits38)));
        assert_eq!(convert(Value::Float(0.1), &numeric, &utc()), Ok(text("0.1")));
        assert_eq!(convert(Value::Float(f64::NAN), &numeric, &utc()), Ok(text("NaN")));
        // SQLite's NUMERIC affinity: integers and doubles only.
        let affinity = col(ColumnType::Decimal, Storage { numeric_affinity: true, no_nan: true, ..Storage::default() });
        assert_eq!(convert(text("12.50"), &affinity, &utc()), Ok(Value::Float(12.5)));
        assert_eq!(convert(text("-42"), &affinity, &utc()), Ok(Value::Int(-42)));
        assert!(convert(text("12345678901234567.89"), &affinity, &utc()).unwrap_err().contains("TEXT"));
        assert!(same(&Value::Float(12.5), &text("12.50"), &affinity, &utc()));
    }

    /// Floats compare by bit pattern at the column's width: 0.1 + 0.2 is not 0.3, -0.0 is
    /// not 0.0, NaN equals NaN; values a column cannot hold are refused.
    #[test]
    fn floats_are_bit_exact() {
        let double = col(ColumnType::Float, Storage::default());
        assert!(!same(&Value::Float(0.1 + 0.2), &Value::Float(0.3), &double, &utc()));
        assert!(!same(&Value::Float(-0.0), &Value::Float(0.0), &double, &utc()));
        assert!(same(&Value::Float(f64::NAN), &Value::Float(f64::NAN), &double, &utc()));
        assert!(same(&Value::Float(5e-324), &Value::Float(5e-324), &double, &utc()));
        assert!(convert(Value::Int(9_007_199_254_740_993), &double, &utc()).is_err());
        assert_eq!(convert(Value::Text("0.1".into()), &double, &utc()), Ok(Value::Float(0.1)));
        assert!(convert(Value::Text("0.12345678901234567890".into()), &double, &utc()).is_err());
        let real = col(ColumnType::Float, Storage { float_bits: Some(32), ..Storage::default() });
        assert_eq!(convert(Value::Float(0.1), &real, &utc()), Ok(Value::Float(f64::from(0.1f32))));
        assert!(same(&Value::Float(f64::from(0.1f32)), &Value::Float(f64::from(0.1f32)), &real, &utc()));
        assert!(convert(Value::Float(1e300), &real, &utc()).unwrap_err().contains("too large"));
        let sqlite_real =
            col(ColumnType::Float, Storage { no_nan: true, no_negative_zero: true, ..Storage::default() });
        assert!(convert(Value::Float(f64::NAN), &sqlite_real, &utc()).unwrap_err().contains("NaN"));
        assert!(convert(Value::Float(-0.0), &sqlite_real, &utc()).unwrap_err().contains("-0.0"));
        assert_eq!(convert(Value::Float(f64::INFINITY), &sqlite_real, &utc()), Ok(Value::Float(f64::INFINITY)));
    }

    /// Text is byte-exact; lengths, NUL and UUID spellings follow the column.
    #[test]
    fn text_rules() {
        let text = col(ColumnType::Text, Storage::default());
        assert!(!same(&Value::Text("a".into()), &Value::Text("A".into()), &text, &utc()));
        assert!(!same(&Value::Text(String::new()), &Value::Null, &text, &utc()));
        let varchar = col(ColumnType::Text, Storage { max_chars: Some(3), no_nul: true, ..Storage::default() });
        assert!(convert(Value::Text("abcd".into()), &varchar, &utc()).unwrap_err().contains("longer"));
        assert_eq!(convert(Value::Text("ab   ".into()), &varchar, &utc()), Ok(Value::Text("ab ".into())));
        assert_eq!(convert(Value::Text("éèà".into()), &varchar, &utc()), Ok(Value::Text("éèà".into())));
        assert!(convert(Value::Text("a\0b".into()), &varchar, &utc()).unwrap_err().contains("U+0000"));
        let uuid_col = col(ColumnType::Text, Storage { uuid: true, ..Storage::default() });
        let dashed = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(
            convert(Value::Text("550E8400E29B41D4A716446655440000".into()), &uuid_col, &utc()),
            Ok(Value::Text(dashed.into()))
        );
        assert!(convert(Value::Text("not-a-uuid".into()), &uuid_col, &utc()).is_err());
        assert_eq!(uuid("{550E8400-E29B-41D4-A716-446655440000}").as_deref(), Some(dashed));
        assert!(uuid("{550e8400-e29b-41d4-a716-446655440000").is_none(), "unbalanced brace");
        assert!(uuid("550e-8400e29b41d4a716446655440000").is_none(), "hyphen out of place");
        assert!(convert(Value::Bytes(vec![0, 17]), &uuid_col, &utc()).unwrap_err().contains("2 bytes"));
        let padded = col(ColumnType::Text, Storage { padded: true, max_chars: Some(5), ..Storage::default() });
        assert!(same(&Value::Text("ab".into()), &Value::Text("ab   ".into()), &padded, &utc()));
    }

    /// Timestamps: every SQLite text form parses; fractions beyond the column's digits
    /// round; offsets into a column without time zone become wall-clock time in the zone.
    #[test]
    fn timestamps() {
        let ts6 = col(ColumnType::Timestamp, Storage { fraction_digits: Some(6), ..Storage::default() });
        let conv = |s: &str, c: &TargetColumn, z: &TimeZone| convert(Value::Text(s.into()), c, z).unwrap();
        assert_eq!(conv("2024-08-17 20:46:48.3386171", &ts6, &utc()), Value::Text("2024-08-17 20:46:48.338617".into()));
        assert_eq!(conv("2024-08-17T20:46:48.9999996", &ts6, &utc()), Value::Text("2024-08-17 20:46:49".into()));
        assert_eq!(conv("2024-08-17 20:46", &ts6, &utc()), Value::Text("2024-08-17 20:46:00".into()));
        assert_eq!(conv("2024-08-17T20:46:48Z", &ts6, &utc()), Value::Text("2024-08-17 20:46:48".into()));
        assert_eq!(conv("2024-08-17T20:46:48+02:00", &ts6, &utc()), Value::Text("2024-08-17 18:46:48".into()));
        let paris = TimeZone::get("Europe/Paris").unwrap();
        assert_eq!(conv("2024-08-17T18:46:48Z", &ts6, &paris), Value::Text("2024-08-17 20:46:48".into()));
        assert_eq!(conv("1900-01-01 00:00:00.000001", &ts6, &utc()), Value::Text("1900-01-01 00:00:00.000001".into()));
        assert_eq!(conv("9999-12-31 23:59:59.999999", &ts6, &utc()), Value::Text("9999-12-31 23:59:59.999999".into()));
        let tz6 =
            col(ColumnType::Timestamp, Storage { fraction_digits: Some(6), time_zone: true, ..Storage::default() });
        assert_eq!(conv("2024-03-01 12:00:00+0530", &tz6, &utc()), Value::Text("2024-03-01 06:30:00+00:00".into()));
        assert!(same(
            &conv("2024-03-01 12:00:00+02", &tz6, &utc()),
            &Value::Text("2024-03-01 10:00:00+00".into()),
            &tz6,
            &utc()
        ));
        // The rewritten-forever case: stored as 6 digits, compared as 6 digits.
        let stored = Value::Text("2024-08-17 20:46:48.338617".into());
        assert!(same(&conv("2024-08-17 20:46:48.3386171", &ts6, &utc()), &stored, &ts6, &utc()));
        assert!(!same(&Value::Text("2024-08-17 20:46:48.338618".into()), &stored, &ts6, &utc()));
        // Text storage keeps what was written and compares moments.
        let text_ts = col(ColumnType::Timestamp, Storage { time_zone: true, ..Storage::default() });
        assert_eq!(
            conv("2024-03-01T12:00:00+02:00", &text_ts, &utc()),
            Value::Text("2024-03-01T12:00:00+02:00".into())
        );
        assert!(same(
            &Value::Text("2024-03-01T12:00:00+02:00".into()),
            &Value::Text("2024-03-01 10:00:00Z".into()),
            &text_ts,
            &utc()
        ));
        assert!(!same(
            &Value::Text("2024-03-01 10:00:00.25".into()),
            &Value::Text("2024-03-01 10:00:00.2".into()),
            &text_ts,
            &utc()
        ));
        let date = col(ColumnType::Date, Storage { fraction_digits: Some(6), ..Storage::default() });
        assert!(convert(Value::Text("2024-03-01 10:00:00".into()), &date, &utc()).is_err());
        let time = col(ColumnType::Time, Storage { fraction_digits: Some(6), ..Storage::default() });
        assert_eq!(conv("13:30:00.5000000", &time, &utc()), Value::Text("13:30:00.5".into()));
        // A duration of a day or more (a 4D Time) is named as such; other bad text is not.
        for long in ["24:00:00", "25:00:00.001", "100:00", "838:59:59.000", "-00:00:05.000", "-25:00:00"] {
            let e = convert(Value::Text(long.into()), &time, &utc()).unwrap_err();
            assert!(e.contains("duration outside a day"), "{long}: {e}");
        }
        for bad in ["23:60:00", "ab:00:00", "25:00:00+02:00", "-1:00:00", "5:00"] {
            let e = convert(Value::Text(bad.into()), &time, &utc()).unwrap_err();
            assert!(!e.contains("duration outside a day"), "{bad}: {e}");
        }
        assert!(TimeText::parse("2024-13-01").is_none());
        assert!(TimeText::parse("infinity").is_none());
        // Spellings PostgreSQL reads differently are refused, never rewritten on every run.
        for odd in ["2024-1-1", "20240101", "2024-01-01 24:00:00", "2024-01-01 10:00:60"] {
            assert!(convert(Value::Text(odd.into()), &ts6, &utc()).is_err(), "{odd}");
        }
        assert!(convert(Value::Text("1:2:3".into()), &time, &utc()).is_err());
        assert_eq!(conv("infinity", &ts6, &utc()), Value::Text("infinity".into()));
        for odd in ["Infinity", "INFINITY", "-infinity ", "0000-01-01"] {
            assert!(convert(Value::Text(odd.into()), &ts6, &utc()).is_err(), "{odd}");
        }
    }

    /// SQLite's NUMERIC affinity (a column declared JSON or DATE) would turn text that
    /// reads as a number into an integer or a double: such text goes in as that number
    /// exactly, or is refused.
    #[test]
    fn numeric_affinity_text() {
        let json = col(ColumnType::Json, Storage { numeric_affinity: true, no_nan: true, ..Storage::default() });
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(convert(t("1"), &json, &utc()), Ok(Value::Int(1)));
        assert_eq!(convert(t("1.5"), &json, &utc()), Ok(Value::Float(1.5)));
        assert_eq!(convert(t("9007199254740993.0"), &json, &utc()), Ok(Value::Int(9_007_199_254_740_993)));
        assert!(convert(t("12345678901234567.89"), &json, &utc()).unwrap_err().contains("TEXT"));
        assert!(convert(t("1e400"), &json, &utc()).unwrap_err().contains("range"));
        assert_eq!(convert(t(r#"{"a": 1}"#), &json, &utc()), Ok(t(r#"{"a": 1}"#)));
        assert!(same(&Value::Int(1), &Value::Int(1), &json, &utc()));
        let date = col(ColumnType::Date, Storage { numeric_affinity: true, time_zone: true, ..Storage::default() });
        assert_eq!(convert(t("2024-01-01"), &date, &utc()), Ok(t("2024-01-01")));
        assert_eq!(convert(t("20240101"), &date, &utc()), Ok(Value::Int(20_240_101)));
        assert!(decimal_text("1e").is_none() && decimal_text(".").is_none() && decimal_text("0x10").is_none());
        assert!(decimal_text("1_000").is_none() && decimal_text("1__0").is_none() && decimal_text("inf").is_none());
        assert!(decimal_text(" -.5E+3 ").is_some());
        let numeric = col(ColumnType::Decimal, Storage { numeric_affinity: true, no_nan: true, ..Storage::default() });
        for odd in ["1_000", "inf", "+inf", "Inf", "1_"] {
            assert!(convert(t(odd), &numeric, &utc()).is_err(), "{odd}");
            assert!(convert(t(odd), &col(ColumnType::Integer, Storage::default()), &utc()).is_err(), "{odd}");
        }
    }

    /// JSON documents compare as documents, numbers by value and exactly.
    #[test]
    fn json_numbers_by_value() {
        let json = col(ColumnType::Json, Storage::default());
        let t = |s: &str| Value::Text(s.into());
        assert!(same(&t(r#"{"a": 1e2, "b": [1.0]}"#), &t(r#"{"b": [1], "a": 100}"#), &json, &utc()));
        assert!(!same(&t(r#"{"a": 12345678901234567.89}"#), &t(r#"{"a": 12345678901234567.88}"#), &json, &utc()));
    }
}
