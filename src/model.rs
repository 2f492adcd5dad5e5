//! Plain data shared by every layer: keys, values, rows, key ranges, table scopes and
//! schemas. Nothing here does I/O; connectors turn these into SQL or HTTP, the engine
//! compares them.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A primary-key value. Keys are compared by the engine, never by a database, so both
/// sides agree on order: integers numerically, text by UTF-8 bytes (what SQLite's BINARY
/// collation and PostgreSQL's `COLLATE "C"` do), bytes by their bytes. A compound key
/// (`"primary_key_field": ["order_id", "line_no"]`) holds its parts in key-column order and
/// compares part by part.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A text key, ordered by its UTF-8 bytes.
    Text(String),
    /// A compound key: one integer, text or bytes part per key column, compared in order.
    Parts(Vec<Key>),
    /// A bytes key (`bytea`, `BLOB`), ordered by its bytes.
    Bytes(Vec<u8>),
}

impl Key {
    /// The parts of the key, one per key column (a single-column key is its own part).
    pub fn parts(&self) -> &[Key] {
        match self {
            Key::Parts(parts) => parts,
            key => std::slice::from_ref(key),
        }
    }

    /// The key's parts as bindable values, one per key column.
    pub fn values(&self) -> impl Iterator<Item = Value> + '_ {
        self.parts().iter().map(|part| match part {
            Key::Int(i) => Value::Int(*i),
            Key::Text(s) => Value::Text(s.clone()),
            Key::Bytes(b) => Value::Bytes(b.clone()),
            Key::Parts(_) => unreachable!("key parts are integers, text or bytes"),
        })
    }

    /// The key held by a value, if the value can be a key.
    pub fn from_value(value: &Value) -> Option<Key> {
        match value {
            Value::Int(i) => Some(Key::Int(*i)),
            Value::Text(s) => Some(Key::Text(s.clone())),
            Value::Bytes(b) => Some(Key::Bytes(b.clone())),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(Key::Int(*f as i64)),
            _ => None,
        }
    }

    /// The key of one or more key-column values (a single value is a simple key).
    pub fn from_values<'a>(mut values: impl ExactSizeIterator<Item = &'a Value>) -> Option<Key> {
        if values.len() == 1 {
            return Key::from_value(values.next()?);
        }
        values.map(Key::from_value).collect::<Option<Vec<Key>>>().map(Key::Parts)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => write!(f, "{s:?}"),
            Key::Bytes(b) => write!(f, "x'{}'", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            Key::Parts(parts) => {
                let parts: Vec<String> = parts.iter().map(Key::to_string).collect();
                write!(f, "({})", parts.join(", "))
            }
        }
    }
}

/// A cell value, independent of any backend. Connectors map their native types onto
/// these variants and back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// Text (also dates, times and decimals that a backend stores as text).
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl Value {
    /// True for SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }

    /// Total order used for modify IDs and cursors: NULL first, then numbers (integers and
    /// floats compared numerically), then text, then bytes.
    pub fn cmp_total(&self, other: &Value) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Bool(_) | Value::Int(_) | Value::Float(_) => 1,
                Value::Text(_) => 2,
                Value::Bytes(_) => 3,
            }
        }
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (a, b) if rank(a) == 1 && rank(b) == 1 => a.as_f64().unwrap_or(0.0).total_cmp(&b.as_f64().unwrap_or(0.0)),
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Equality as the sync sees it: the same data, whatever the storage class, and never
    /// through a lossy type. An integer equals a float only when the float is that whole
    /// number exactly (SQLite stores REAL columns holding whole numbers either way);
    /// floats compare by bit pattern (-0.0 is not 0.0), and NaN equals NaN so that an
    /// unchanged NaN is not rewritten forever.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Bool(a), Value::Int(b)) | (Value::Int(b), Value::Bool(a)) => i64::from(*a) == *b,
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (Value::Int(i), Value::Float(f)) | (Value::Float(f), Value::Int(i)) => float_integer(*f) == Some(*i),
            (a, b) => a == b,
        }
    }

    /// Approximate bytes this value occupies on the wire, for the byte counters.
    pub fn wire_size(&self) -> usize {
        match self {
            Value::Null => 1,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 8,
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

/// The integer a float holds exactly, if it is a whole number within 64 bits (every whole
/// double in `-2^63..2^63` converts to `i64` exactly; 2^63 itself is out of range).
pub fn float_integer(f: f64) -> Option<i64> {
    const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-TWO_TO_63..TWO_TO_63).contains(&f)).then_some(f as i64)
}

/// One row: values in the order of the [`TableScope::columns`] it was read with.
pub type Row = Vec<Value>;

/// A half-open key interval `(after, upto]`: keys greater than `after` (or all, when
/// `None`) and at most `upto` (or all, when `None`). Splitting at a midpoint `m` gives
/// `(after, m]` and `(m, upto]` with nothing lost or counted twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    /// Exclusive lower bound.
    pub after: Option<Key>,
    /// Inclusive upper bound.
    pub upto: Option<Key>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        Self::default()
    }

    /// Keys strictly after `after`.
    pub fn after(after: Option<Key>) -> Self {
        Self { after, upto: None }
    }

    /// True when `key` lies inside the range.
    pub fn contains(&self, key: &Key) -> bool {
        self.after.as_ref().is_none_or(|a| key > a) && self.upto.as_ref().is_none_or(|u| key <= u)
    }
}

/// What a connector needs to address one side of a synced table: the table, the columns
/// to read or write (in order), the key and modify-ID columns, and the record-type filter.
#[derive(Clone, Debug, PartialEq)]
pub struct TableScope {
    /// Table name on this side (quoted by the connector).
    pub table: String,
    /// Columns in row order. Always contains the key columns.
    pub columns: Vec<String>,
    /// Indexes of the primary-key columns in `columns`, in key order (one for a simple
    /// key, several for a compound key).
    pub key_indexes: Vec<usize>,
    /// Index of the modify-ID column in `columns`, if the table has one.
    pub modify_index: Option<usize>,
    /// Equality filters (`column = value`) selecting one record type; applied to every
    /// read, count and delete on this side.
    pub filter: Vec<(String, Value)>,
    /// Leave out rows whose key is NULL (`--skip-bad-keys` after the source had some).
    pub skip_null_keys: bool,
    /// Keys left out of every read, count and delete on this side (`--skip-bad-keys`: keys
    /// that several source rows share).
    pub skip_keys: Vec<Key>,
}

impl TableScope {
    /// Names of the key columns, in key order.
    pub fn key_columns(&self) -> Vec<&str> {
        self.key_indexes.iter().map(|i| self.columns[*i].as_str()).collect()
    }

    /// The key columns as people read them: `id`, or `(order_id, line_no)`.
    pub fn key_text(&self) -> String {
        match self.key_columns().as_slice() {
            [one] => one.to_string(),
            many => format!("({})", many.join(", ")),
        }
    }

    /// True when column `i` is part of the key.
    pub fn is_key(&self, i: usize) -> bool {
        self.key_indexes.contains(&i)
    }

    /// Name of the modify-ID column.
    pub fn modify_column(&self) -> Option<&str> {
        self.modify_index.map(|i| self.columns[i].as_str())
    }

    /// The key of a row read with this scope.
    pub fn key_of(&self, row: &Row) -> Option<Key> {
        Key::from_values(self.key_indexes.iter().map(|i| &row[*i]))
    }
}

/// Broad type family of a column, enough to decide whether values convert safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    /// Whole numbers.
    Integer,
    /// Floating point.
    Float,
    /// Exact decimal.
    Decimal,
    /// Boolean.
    Boolean,
    /// Text of any length.
    Text,
    /// Raw bytes.
    Blob,
    /// Calendar date.
    Date,
    /// Time of day.
    Time,
    /// Date and time.
    Timestamp,
    /// JSON document.
    Json,
    /// Anything else; passed through unchanged.
    Other,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Decimal => "decimal",
            ColumnType::Boolean => "boolean",
            ColumnType::Text => "text",
            ColumnType::Blob => "blob",
            ColumnType::Date => "date",
            ColumnType::Time => "time",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
            ColumnType::Other => "other",
        };
        f.write_str(name)
    }
}

/// What a column holds exactly, as its backend stores it: widths, digits, lengths and the
/// values the backend cannot keep. Connectors fill it when they describe a table; the
/// default holds every value of its family exactly (the in-memory connector). The
/// transform converts each source value to this form before writing and comparing, so a
/// value the column cannot hold is a data error, never a silent change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Storage {
    /// Integers: width in bits (16, 32 or 64); `None` = 64.
    pub int_bits: Option<u8>,
    /// Floats: width in bits (32 for PostgreSQL `real`); `None` = 64.
    pub float_bits: Option<u8>,
    /// Decimals: significant digits in all (`numeric(p, s)`'s `p`); `None` = unlimited.
    pub precision: Option<u32>,
    /// Decimals: digits after the point (`numeric(p, s)`'s `s`); `None` = as given.
    pub scale: Option<u32>,
    /// Decimals stored under SQLite's NUMERIC affinity: as a 64-bit integer or a double,
    /// so only decimals one of those holds exactly fit.
    pub numeric_affinity: bool,
    /// Text: most characters (`varchar(n)`, `char(n)`), where the backend enforces it.
    pub max_chars: Option<u32>,
    /// Text: `char(n)`, padded with spaces; trailing spaces do not count.
    pub padded: bool,
    /// Text: a UUID column (stored as 16 bytes, read as lower-case hyphenated text).
    pub uuid: bool,
    /// Text: U+0000 cannot be stored (PostgreSQL).
    pub no_nul: bool,
    /// Times and timestamps: the column keeps an instant or offset (`timestamptz`, or
    /// text that keeps the offset as written); otherwise it holds a wall-clock time.
    pub time_zone: bool,
    /// Times and timestamps: digits of the second's fraction kept (PostgreSQL's
    /// precision, 6 by default); `None` = as written (text).
    pub fraction_digits: Option<u8>,
    /// Floats (and any column of the backend): NaN cannot be stored (SQLite reads it
    /// back as NULL).
    pub no_nan: bool,
    /// Floats: -0.0 reads back as 0 (SQLite REAL and NUMERIC affinity).
    pub no_negative_zero: bool,
}

/// One column as a connector describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSchema {
    /// Column name as stored.
    pub name: String,
    /// Declared type as the backend spells it.
    pub declared_type: String,
    /// Type family.
    pub column_type: ColumnType,
    /// False when the column is NOT NULL.
    pub nullable: bool,
    /// True when the column has a default value.
    pub has_default: bool,
    /// What the column holds exactly.
    pub storage: Storage,
}

/// A table as a connector describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSchema {
    /// Table name.
    pub name: String,
    /// Columns in table order.
    pub columns: Vec<ColumnSchema>,
    /// Primary keys and unique indexes usable as the sync key: the columns of each (one
    /// or more), primary key first.
    pub unique_keys: Vec<Vec<String>>,
}

impl TableSchema {
    /// The column with this name, if any.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// True when a primary key or unique index covers exactly `columns` (in any order).
    pub fn is_unique(&self, columns: &[String]) -> bool {
        self.unique_keys.iter().any(|u| u.len() == columns.len() && columns.iter().all(|c| u.contains(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Integer keys sort numerically, text keys by bytes, and integers before text.
    #[test]
    fn key_order_is_backend_independent() {
        let mut keys =
            vec![Key::Text("b".into()), Key::Int(10), Key::Text("B".into()), Key::Int(-3), Key::Text("é".into())];
        keys.sort();
        assert_eq!(
            keys,
            vec![Key::Int(-3), Key::Int(10), Key::Text("B".into()), Key::Text("b".into()), Key::Text("é".into()),]
        );
    }

    /// Compound keys compare part by part, each part in the simple keys' order.
    #[test]
    fn compound_keys_order_part_by_part() {
        let k = |a: i64, b: &str| Key::Parts(vec![Key::Int(a), Key::Text(b.into())]);
        let mut keys = vec![k(2, "a"), k(1, "b"), k(1, "B"), k(10, ""), k(1, "é")];
        keys.sort();
        assert_eq!(keys, vec![k(1, "B"), k(1, "b"), k(1, "é"), k(2, "a"), k(10, "")]);
        assert_eq!(k(1, "x").to_string(), "(1, \"x\")");
        let row = [Value::Int(7), Value::Text("x".into()), Value::Int(3)];
        assert_eq!(
            Key::from_values([&row[2], &row[1]].into_iter()),
            Some(Key::Parts(vec![Key::Int(3), Key::Text("x".into())]))
        );
        assert_eq!(Key::from_values([&row[0]].into_iter()), Some(Key::Int(7)));
        assert_eq!(Key::from_values([&row[0], &Value::Null].into_iter()), None);
    }

    /// A range split at a midpoint covers every key exactly once.
    #[test]
    fn range_split_is_exact() {
        let whole = KeyRange { after: Some(Key::Int(0)), upto: Some(Key::Int(100)) };
        let lower = KeyRange { after: whole.after.clone(), upto: Some(Key::Int(50)) };
        let upper = KeyRange { after: Some(Key::Int(50)), upto: whole.upto.clone() };
        for k in -5..110 {
            let key = Key::Int(k);
            let hits = usize::from(lower.contains(&key)) + usize::from(upper.contains(&key));
            assert_eq!(hits, usize::from(whole.contains(&key)), "key {k}");
        }
    }

    /// Values that hold the same data in different storage classes compare equal.
    #[test]
    fn same_as_crosses_storage_classes() {
        assert!(Value::Int(3).same_as(&Value::Float(3.0)));
        assert!(!Value::Int(3).same_as(&Value::Float(3.5)));
        assert!(!Value::Int(3).same_as(&Value::Text("3".into())));
        assert!(Value::Null.same_as(&Value::Null));
        assert!(!Value::Null.same_as(&Value::Int(0)));
        assert!(Value::Float(f64::NAN).same_as(&Value::Float(f64::NAN)));
        assert!(!Value::Int(9_007_199_254_740_993).same_as(&Value::Float(9_007_199_254_740_992.0)));
        assert!(!Value::Float(-0.0).same_as(&Value::Float(0.0)));
    }

    /// Modify IDs order numerically across integer and float storage.
    #[test]
    fn cmp_total_orders_numbers_numerically() {
        assert_eq!(Value::Int(2).cmp_total(&Value::Float(10.0)), Ordering::Less);
        assert_eq!(Value::Null.cmp_total(&Value::Int(-1)), Ordering::Less);
        assert_eq!(Value::Text("a".into()).cmp_total(&Value::Int(5)), Ordering::Greater);
    }
}
