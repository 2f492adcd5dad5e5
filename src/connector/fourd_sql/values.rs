//! 4D SQL column types and values: `_USER_COLUMNS.DATA_TYPE` codes to db-sync's column
//! types, wire cells to values and back (`docs/4d-sql.md` §6.3, §9.6), and the catalog
//! queries that describe a table. Dates, times and UUIDs take the same forms as over REST
//! (`connector::fourd::values`), so a table reads the same through either protocol.

use std::collections::HashMap;

use super::wire::{Cell, VkType};
use crate::connector::fourd::values::{TimeUnit, parse_time, time_text, uuid_dashed};
use crate::model::{ColumnSchema, ColumnType, Storage, TableSchema, Value};

/// The 4D field types db-sync syncs over SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// Boolean (1).
    Bool,
    /// Integer, 16-bit (3).
    Int16,
    /// Longint (4).
    Int32,
    /// Integer 64-bit (5).
    Int64,
    /// Real (6), a binary64.
    Real,
    /// Date (8): a calendar date; 4D's empty date reads as NULL.
    Date,
    /// Time (9): milliseconds, read as `HH:MM:SS.mmm` (hours may pass 24).
    Time,
    /// Alpha and Text (10, 14, 19, 20).
    Text,
    /// UUID (13): 32 hex digits on the wire, dashed lower case in db-sync.
    Uuid,
    /// BLOB (18).
    Blob,
}

impl SqlType {
    /// The type of a `DATA_TYPE` code; `Err` says why a column is left out (pictures convert
    /// formats, Float's wire format is undocumented, objects' wire type is unknown) or that
    /// the code is unknown.
    pub fn from_code(code: i64) -> Result<SqlType, String> {
        Ok(match code {
            1 => SqlType::Bool,
            3 => SqlType::Int16,
            4 => SqlType::Int32,
            5 => SqlType::Int64,
            6 => SqlType::Real,
            8 => SqlType::Date,
            9 => SqlType::Time,
            10 | 14 | 19 | 20 => SqlType::Text,
            13 => SqlType::Uuid,
            18 => SqlType::Blob,
            7 => {
                return Err("a 4D Float, whose SQL wire format is undocumented (read it as REAL through a view)".into());
            }
            12 => return Err("a picture (4D converts picture formats, so it cannot arrive exactly)".into()),
            21 => return Err("an object (4D's SQL wire type for objects is undocumented)".into()),
            other => return Err(format!("a 4D type db-sync does not know (DATA_TYPE {other})")),
        })
    }

    /// The SQL name of the type, for messages and `check`.
    pub fn name(self) -> &'static str {
        match self {
            SqlType::Bool => "BOOLEAN",
            SqlType::Int16 => "SMALLINT",
            SqlType::Int32 => "INT",
            SqlType::Int64 => "INT64",
            SqlType::Real => "REAL",
            SqlType::Date => "TIMESTAMP (4D Date)",
            SqlType::Time => "DURATION (4D Time)",
            SqlType::Text => "VARCHAR",
            SqlType::Uuid => "UUID",
            SqlType::Blob => "BLOB",
        }
    }

    /// db-sync's column type and what the column holds exactly.
    pub fn column(self) -> (ColumnType, Storage) {
        let storage = Storage::default();
        match self {
            SqlType::Bool => (ColumnType::Boolean, storage),
            SqlType::Int16 => (ColumnType::Integer, Storage { int_bits: Some(16), ..storage }),
            SqlType::Int32 => (ColumnType::Integer, Storage { int_bits: Some(32), ..storage }),
            SqlType::Int64 => (ColumnType::Integer, storage),
            SqlType::Real => (ColumnType::Float, storage),
            SqlType::Date => (ColumnType::Date, Storage { fraction_digits: Some(0), ..storage }),
            SqlType::Time => (ColumnType::Time, Storage { fraction_digits: Some(3), ..storage }),
            SqlType::Text => (ColumnType::Text, storage),
            SqlType::Uuid => (ColumnType::Text, Storage { uuid: true, ..storage }),
            SqlType::Blob => (ColumnType::Blob, storage),
        }
    }

    /// The wire type its values are sent as.
    pub fn vk(self) -> VkType {
        match self {
            SqlType::Bool => VkType::Boolean,
            SqlType::Int16 => VkType::Word,
            SqlType::Int32 => VkType::Long,
            SqlType::Int64 => VkType::Long8,
            SqlType::Real => VkType::Real,
            SqlType::Date => VkType::Timestamp,
            SqlType::Time => VkType::Duration,
            SqlType::Text | SqlType::Uuid => VkType::String,
            SqlType::Blob => VkType::Blob,
        }
    }

    /// True for the integer types, whose order 4D and db-sync agree on.
    pub fn is_integer(self) -> bool {
        matches!(self, SqlType::Int16 | SqlType::Int32 | SqlType::Int64)
    }
}

/// A cell of a column of type `t` as a db-sync value.
pub fn read(cell: &Cell, t: SqlType) -> Result<Value, String> {
    let unexpected = || {
        let shown = match cell {
            Cell::Text(s) => format!("the text {s:?}"),
            Cell::Bytes(b) => format!("{} bytes", b.len()),
            other => format!("{other:?}"),
        };
        format!("4D sent {shown} for a {} column", t.name())
    };
    Ok(match (t, cell) {
        (_, Cell::Null) => Value::Null,
        (SqlType::Bool, Cell::Bool(b)) => Value::Bool(*b),
        (SqlType::Int16 | SqlType::Int32 | SqlType::Int64, Cell::I16(i)) => Value::Int(i64::from(*i)),
        (SqlType::Int16 | SqlType::Int32 | SqlType::Int64, Cell::I32(i)) => Value::Int(i64::from(*i)),
        (SqlType::Int16 | SqlType::Int32 | SqlType::Int64, Cell::I64(i)) => Value::Int(*i),
        (SqlType::Real, Cell::Real(f)) => Value::Float(*f),
        (SqlType::Date, Cell::Timestamp { year: 0, month: 0, day: 0, .. }) => Value::Null,
        (SqlType::Date, Cell::Timestamp { year, month, day, millis }) => {
            if *millis != 0 {
                return Err(format!("4D sent a time of day ({millis} ms) in a Date column"));
            }
            let date = jiff::civil::Date::new(*year, *month as i8, *day as i8)
                .map_err(|_| format!("4D sent an impossible date {year:04}-{month:02}-{day:02}"))?;
            Value::Text(date.to_string())
        }
        (SqlType::Time, Cell::Duration(ms)) => Value::Text(time_text(*ms, TimeUnit::Millis)),
        (SqlType::Text, Cell::Text(s)) => Value::Text(s.clone()),
        (SqlType::Uuid, Cell::Text(s)) => Value::Text(uuid_dashed(s).ok_or_else(unexpected)?),
        (SqlType::Blob, Cell::Bytes(b)) => Value::Bytes(b.clone()),
        _ => return Err(unexpected()),
    })
}

/// A db-sync value as a parameter for a column of type `t`, or why 4D cannot hold it.
pub fn write(value: &Value, t: SqlType) -> Result<(VkType, Cell), String> {
    if value.is_null() {
        return Ok((t.vk(), Cell::Null));
    }
    let cannot = || format!("{} value {} cannot be written to a 4D {} column", value.kind(), short(value), t.name());
    let cell = match t {
        SqlType::Int16 | SqlType::Int32 | SqlType::Int64 => {
            let i = match value {
                Value::Int(i) => *i,
                Value::Bool(b) => i64::from(*b),
                Value::Text(s) => s.trim().parse().map_err(|_| cannot())?,
                _ => return Err(cannot()),
            };
            let fits = match t {
                SqlType::Int16 => i16::try_from(i).map(Cell::I16).ok(),
                SqlType::Int32 => i32::try_from(i).map(Cell::I32).ok(),
                _ => Some(Cell::I64(i)),
            };
            fits.ok_or_else(|| format!("{i} does not fit a 4D {} column", t.name()))?
        }
        SqlType::Real => match value {
            Value::Float(f) => Cell::Real(*f),
            Value::Int(i) if (*i as f64) as i64 == *i => Cell::Real(*i as f64),
            Value::Text(s) => Cell::Real(s.trim().parse().map_err(|_| cannot())?),
            _ => return Err(cannot()),
        },
        SqlType::Bool => match value {
            Value::Bool(b) => Cell::Bool(*b),
            Value::Int(0) => Cell::Bool(false),
            Value::Int(1) => Cell::Bool(true),
            _ => return Err(cannot()),
        },
        SqlType::Date => match value {
            Value::Text(s) => {
                let date: jiff::civil::Date = s.trim().get(..10).and_then(|d| d.parse().ok()).ok_or_else(cannot)?;
                if s.trim().len() > 10 {
                    return Err(cannot());
                }
                Cell::Timestamp { year: date.year(), month: date.month() as u8, day: date.day() as u8, millis: 0 }
            }
            _ => return Err(cannot()),
        },
        SqlType::Time => match value {
            Value::Text(s) => Cell::Duration(parse_time(s.trim(), TimeUnit::Millis).ok_or_else(cannot)?),
            _ => return Err(cannot()),
        },
        SqlType::Text => match value {
            Value::Text(s) => Cell::Text(s.clone()),
            Value::Int(i) => Cell::Text(i.to_string()),
            _ => return Err(cannot()),
        },
        SqlType::Uuid => match value {
            Value::Text(s) => {
                let hex: String = s.chars().filter(|c| *c != '-').collect();
                if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("{} is not a UUID", short(value)));
                }
                Cell::Text(hex.to_ascii_uppercase())
            }
            _ => return Err(cannot()),
        },
        SqlType::Blob => match value {
            Value::Bytes(b) => Cell::Bytes(b.clone()),
            _ => return Err(cannot()),
        },
    };
    Ok((t.vk(), cell))
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 { format!("{}…", text.chars().take(40).collect::<String>()) } else { text }
}

/// A 4D SQL name in brackets, a `]` inside doubled (§9.1).
pub fn quote(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

/// Columns of a table: `COLUMN_NAME`, `DATA_TYPE`, `NULLABLE`, in column order; one
/// parameter, the table name.
pub const COLUMNS_SQL: &str =
    "SELECT COLUMN_NAME, DATA_TYPE, NULLABLE FROM _USER_COLUMNS WHERE TABLE_NAME = ? ORDER BY COLUMN_ID";

/// The primary key's columns, in key order; one parameter, the table name (§9.6).
pub const KEY_SQL: &str = "SELECT c.COLUMN_NAME FROM _USER_CONSTRAINTS k, _USER_CONS_COLUMNS c \
     WHERE k.CONSTRAINT_ID = c.CONSTRAINT_ID AND k.CONSTRAINT_TYPE = 'P' AND k.TABLE_NAME = ? ORDER BY c.COLUMN_POSITION";

/// A table's schema and its columns' 4D types from the rows of [`COLUMNS_SQL`] and
/// [`KEY_SQL`]. Columns db-sync cannot sync exactly are left out, each with its reason in
/// the second list; `None` when the table has no columns (it does not exist).
#[allow(clippy::type_complexity)]
pub fn schema_of(
    table: &str,
    columns: &[Vec<Cell>],
    key: &[Vec<Cell>],
) -> Result<Option<(TableSchema, HashMap<String, SqlType>, Vec<String>)>, String> {
    if columns.is_empty() {
        return Ok(None);
    }
    let text = |c: &Cell| match c {
        Cell::Text(s) => Ok(s.clone()),
        other => Err(format!("the 4D catalog sent {other:?} for a name")),
    };
    let int = |c: &Cell| match c {
        Cell::I16(i) => Ok(i64::from(*i)),
        Cell::I32(i) => Ok(i64::from(*i)),
        Cell::I64(i) => Ok(*i),
        other => Err(format!("the 4D catalog sent {other:?} for a type code")),
    };
    let key_columns: Vec<String> = key.iter().filter_map(|r| r.first()).map(text).collect::<Result<_, _>>()?;
    let mut types = HashMap::new();
    let mut schema_columns = Vec::new();
    let mut left_out = Vec::new();
    for row in columns {
        let [name, code, nullable] = row.as_slice() else {
            return Err(format!("the 4D catalog sent a row of {} cells for a column", row.len()));
        };
        let (name, code) = (text(name)?, int(code)?);
        let t = match SqlType::from_code(code) {
            Ok(t) => t,
            Err(why) => {
                left_out.push(format!("`{table}`.`{name}` is {why}"));
                continue;
            }
        };
        let (column_type, storage) = t.column();
        let nullable = match nullable {
            Cell::Bool(b) => *b,
            other => int(other)? != 0,
        };
        types.insert(name.clone(), t);
        schema_columns.push(ColumnSchema {
            nullable: nullable && !key_columns.contains(&name),
            name,
            // Alpha (10, 19) and Text (14, 20) are one type to db-sync; the name tells them apart.
            declared_type: if matches!(code, 14 | 20) { "TEXT".to_string() } else { t.name().to_string() },
            column_type,
            has_default: false,
            storage,
        });
    }
    let unique_keys = if key_columns.is_empty() { Vec::new() } else { vec![key_columns] };
    Ok(Some((TableSchema { name: table.to_string(), columns: schema_columns, unique_keys }, types, left_out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type reads and writes back to the same cell, and values 4D cannot hold are
    /// refused with the type named.
    #[test]
    fn values_round_trip_exactly() {
        let cases: Vec<(SqlType, Cell, Value)> = vec![
            (SqlType::Bool, Cell::Bool(true), Value::Bool(true)),
            (SqlType::Int16, Cell::I16(-32768), Value::Int(-32768)),
            (SqlType::Int32, Cell::I32(i32::MAX), Value::Int(i64::from(i32::MAX))),
            (SqlType::Int64, Cell::I64(i64::MIN), Value::Int(i64::MIN)),
            (SqlType::Real, Cell::Real(0.1 + 0.2), Value::Float(0.1 + 0.2)),
            (
                SqlType::Date,
                Cell::Timestamp { year: 2024, month: 2, day: 29, millis: 0 },
                Value::Text("2024-02-29".into()),
            ),
            (SqlType::Time, Cell::Duration(90_000_001), Value::Text("25:00:00.001".into())),
            (SqlType::Time, Cell::Duration(-1), Value::Text("-00:00:00.001".into())),
            (SqlType::Text, Cell::Text("é😀\0x".into()), Value::Text("é😀\0x".into())),
            (
                SqlType::Uuid,
                Cell::Text("0123456789ABCDEF0123456789ABCDEF".into()),
                Value::Text("01234567-89ab-cdef-0123-456789abcdef".into()),
            ),
            (SqlType::Blob, Cell::Bytes(vec![]), Value::Bytes(vec![])),
            (SqlType::Int64, Cell::Null, Value::Null),
        ];
        for (t, cell, value) in cases {
            assert_eq!(read(&cell, t).unwrap(), value, "{t:?}");
            assert_eq!(write(&value, t).unwrap(), (t.vk(), cell), "{t:?}");
        }
        let nan = read(&Cell::Real(f64::NAN), SqlType::Real).unwrap();
        assert!(matches!(nan, Value::Float(f) if f.is_nan()));
        assert_eq!(
            read(&Cell::Timestamp { year: 0, month: 0, day: 0, millis: 0 }, SqlType::Date).unwrap(),
            Value::Null
        );

        let refused = |v: Value, t: SqlType| write(&v, t).unwrap_err();
        assert!(refused(Value::Int(40_000), SqlType::Int16).contains("SMALLINT"));
        assert!(refused(Value::Int(1 << 40), SqlType::Int32).contains("does not fit"));
        assert!(refused(Value::Int((1 << 53) + 1), SqlType::Real).contains("REAL"));
        assert!(refused(Value::Text("2024-02-29T10:00".into()), SqlType::Date).contains("Date"));
        assert!(refused(Value::Text("12:00:00.0001".into()), SqlType::Time).contains("Time"));
        assert!(refused(Value::Text("not-a-uuid".into()), SqlType::Uuid).contains("not a UUID"));
        assert!(refused(Value::Int(2), SqlType::Bool).contains("BOOLEAN"));
        assert!(read(&Cell::Timestamp { year: 2024, month: 2, day: 30, millis: 0 }, SqlType::Date).is_err());
        assert!(read(&Cell::Timestamp { year: 2024, month: 2, day: 1, millis: 5 }, SqlType::Date).is_err());
        assert!(read(&Cell::Text("1".into()), SqlType::Int64).is_err());
    }

    #[test]
    fn names_are_bracketed() {
        assert_eq!(quote("Order Lines"), "[Order Lines]");
        assert_eq!(quote("a]b"), "[a]]b]");
    }

    /// A catalog answer becomes a schema; pictures, floats and objects are left out with
    /// their reason; the key is never nullable.
    #[test]
    fn schema_from_the_catalog() {
        let t = |s: &str| Cell::Text(s.into());
        let columns = vec![
            vec![t("ID"), Cell::I32(5), Cell::Bool(true)],
            vec![t("name"), Cell::I32(10), Cell::Bool(true)],
            vec![t("photo"), Cell::I32(12), Cell::Bool(true)],
            vec![t("amount"), Cell::I32(7), Cell::Bool(false)],
            vec![t("born"), Cell::I64(8), Cell::I64(0)],
        ];
        let (schema, types, left_out) = schema_of("People", &columns, &[vec![t("ID")]]).unwrap().unwrap();
        assert_eq!(schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["ID", "name", "born"]);
        assert!(!schema.columns[0].nullable && schema.columns[1].nullable && !schema.columns[2].nullable);
        assert_eq!(schema.unique_keys, vec![vec!["ID".to_string()]]);
        assert_eq!(types["born"], SqlType::Date);
        assert_eq!(left_out.len(), 2);
        assert!(left_out[0].contains("`People`.`photo` is a picture"), "{left_out:?}");
        assert!(left_out[1].contains("Float"), "{left_out:?}");
        assert_eq!(schema_of("Nope", &[], &[]).unwrap(), None);
        assert!(
            schema_of("T", &[vec![t("x"), Cell::I32(99), Cell::Bool(true)]], &[]).unwrap().unwrap().2[0].contains("99")
        );
    }
}
