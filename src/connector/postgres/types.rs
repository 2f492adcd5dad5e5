//! PostgreSQL types in db-sync's terms: type names to column families ([`column_type`])
//! and to what a column holds exactly ([`storage`]), how each family travels between
//! PostgreSQL and db-sync ([`Wire`]), the casts and SELECT expressions that carry it,
//! and values and keys decoded from result rows.

use std::fmt::Write as _;

use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::quote_ident;
use crate::model::{ColumnType, Key, Storage, Value};

/// How a column travels between PostgreSQL and db-sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wire {
    Int,
    Float,
    Bool,
    Bytes,
    Text,
}

/// Type family of a PostgreSQL type name (`pg_type.typname`).
pub fn column_type(typname: &str) -> ColumnType {
    match typname {
        "int2" | "int4" | "int8" | "oid" => ColumnType::Integer,
        "float4" | "float8" => ColumnType::Float,
        "numeric" | "money" => ColumnType::Decimal,
        "bool" => ColumnType::Boolean,
        "text" | "varchar" | "bpchar" | "name" | "citext" | "uuid" => ColumnType::Text,
        "bytea" => ColumnType::Blob,
        "date" => ColumnType::Date,
        "time" | "timetz" => ColumnType::Time,
        "timestamp" | "timestamptz" => ColumnType::Timestamp,
        "json" | "jsonb" => ColumnType::Json,
        _ => ColumnType::Other,
    }
}

/// What a column of PostgreSQL type `typname`, declared as `declared` (`format_type`'s
/// spelling, such as `numeric(30,2)` or `timestamp(3) without time zone`), holds exactly
/// (PostgreSQL's manual, chapter 8 "Data Types"): integer and float widths, numeric
/// precision and scale, varchar/char lengths, fraction digits of times (6 unless
/// declared), time zones. Text types cannot hold U+0000.
pub fn storage(typname: &str, declared: &str) -> Storage {
    // The numbers in the declared type's parentheses: `numeric(30,2)` -> [30, 2].
    let args: Vec<u32> = declared
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inner, _)| inner.split(',').filter_map(|a| a.trim().parse().ok()).collect())
        .unwrap_or_default();
    let first = args.first().copied();
    let mut storage = Storage::default();
    match typname {
        "int2" => storage.int_bits = Some(16),
        "int4" => storage.int_bits = Some(32),
        "int8" => storage.int_bits = Some(64),
        "float4" => storage.float_bits = Some(32),
        "float8" => storage.float_bits = Some(64),
        "numeric" => {
            storage.precision = first;
            storage.scale = first.map(|_| args.get(1).copied().unwrap_or(0));
        }
        "varchar" => storage.max_chars = first,
        "bpchar" => {
            storage.max_chars = Some(first.unwrap_or(1));
            storage.padded = true;
        }
        "uuid" => storage.uuid = true,
        // A date keeps no time of day: text with one is refused, not cut.
        "date" => storage.fraction_digits = Some(0),
        "time" | "timestamp" => storage.fraction_digits = Some(first.unwrap_or(6).min(6) as u8),
        "timetz" | "timestamptz" => {
            storage.fraction_digits = Some(first.unwrap_or(6).min(6) as u8);
            storage.time_zone = true;
        }
        _ => {}
    }
    storage.no_nul = matches!(typname, "text" | "varchar" | "bpchar" | "name" | "citext" | "json" | "jsonb");
    storage
}

pub(super) fn wire(t: ColumnType) -> Wire {
    match t {
        ColumnType::Integer => Wire::Int,
        ColumnType::Float => Wire::Float,
        ColumnType::Boolean => Wire::Bool,
        ColumnType::Blob => Wire::Bytes,
        _ => Wire::Text,
    }
}

/// A key from the first `width` columns of a row selected with
/// [`KeySql::select`](super::sql::KeySql::select).
pub(super) fn key_from_row(row: &PgRow, width: usize) -> Result<Key, sqlx::Error> {
    let mut parts = Vec::with_capacity(width);
    for i in 0..width {
        let null = || sqlx::Error::ColumnDecode { index: i.to_string(), source: "NULL key".into() };
        parts.push(match row.try_get::<Option<i64>, _>(i) {
            Ok(n) => Key::Int(n.ok_or_else(null)?),
            Err(_) => match row.try_get::<Option<String>, _>(i) {
                Ok(t) => Key::Text(t.ok_or_else(null)?),
                Err(_) => Key::Bytes(row.try_get::<Option<Vec<u8>>, _>(i)?.ok_or_else(null)?),
            },
        });
    }
    Ok(if width == 1 { parts.pop().expect("one part") } else { Key::Parts(parts) })
}

pub(super) fn select_expr(column: &str, t: ColumnType) -> String {
    select_expr_quoted(&quote_ident(column), t)
}

/// [`select_expr`] of a quoted column.
pub(super) fn select_expr_quoted(c: &str, t: ColumnType) -> String {
    let c = c.to_string();
    match wire(t) {
        Wire::Int => format!("{c}::int8"),
        Wire::Float => format!("{c}::float8"),
        Wire::Bool | Wire::Bytes => c,
        Wire::Text => format!("{c}::text"),
    }
}

/// The cast a text-bound parameter needs to compare with or fill a column.
pub(super) fn cast_for(t: ColumnType, declared: &str) -> Option<String> {
    (wire(t) == Wire::Text && needs_cast(t, declared)).then(|| declared.to_string())
}

/// Whether text must be cast to fill a column of this type: every type but the text
/// ones. Never to `varchar(n)` or `char(n)`: an explicit cast would cut a long value
/// where assignment refuses it.
pub(super) fn needs_cast(t: ColumnType, declared: &str) -> bool {
    t != ColumnType::Text || declared == "uuid"
}

/// Column `i` of a row read with [`select_expr`]: the SQL casts every column to the
/// type its wire form decodes, so the per-value type check is skipped (a value of
/// another type would still fail to decode, by its length or its UTF-8).
pub(super) fn decode(row: &PgRow, i: usize, w: Wire) -> Result<Value, sqlx::Error> {
    Ok(match w {
        Wire::Int => row.try_get_unchecked::<Option<i64>, _>(i)?.map_or(Value::Null, Value::Int),
        Wire::Float => row.try_get_unchecked::<Option<f64>, _>(i)?.map_or(Value::Null, Value::Float),
        Wire::Bool => row.try_get_unchecked::<Option<bool>, _>(i)?.map_or(Value::Null, Value::Bool),
        Wire::Bytes => row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?.map_or(Value::Null, Value::Bytes),
        Wire::Text => row.try_get_unchecked::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
    })
}

/// A value as PostgreSQL's text input of its column reads it.
pub(super) fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) if f.is_nan() => Some("NaN".into()),
        Value::Float(f) if f.is_infinite() => Some(if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()),
        Value::Float(f) => Some(f.to_string()),
        Value::Text(s) => Some(s.clone()),
        Value::Bytes(b) => Some(b.iter().fold(String::from("\\x"), |mut s, byte| {
            let _ = write!(s, "{byte:02x}");
            s
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as PostgreSQL's text input reads them (bytea in hex form).
    #[test]
    fn text_input_format() {
        assert_eq!(text_of(&Value::Bytes(vec![0, 255])).as_deref(), Some("\\x00ff"));
        assert_eq!(text_of(&Value::Float(f64::NAN)).as_deref(), Some("NaN"));
        assert_eq!(text_of(&Value::Null), None);
        assert_eq!(text_of(&Value::Bool(true)).as_deref(), Some("true"));
    }

    /// Type names map onto families.
    #[test]
    fn type_families() {
        assert_eq!(column_type("int4"), ColumnType::Integer);
        assert_eq!(column_type("numeric"), ColumnType::Decimal);
        assert_eq!(column_type("timestamptz"), ColumnType::Timestamp);
        assert_eq!(column_type("jsonb"), ColumnType::Json);
    }
}
