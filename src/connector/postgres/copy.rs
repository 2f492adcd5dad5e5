//! COPY … FROM STDIN: rows in COPY text format ([`copy_row`], [`copy_value`]), in binary
//! format for tables of plain column types ([`Binary`], [`copy_row_binary`]), and the
//! routine that streams them to the server ([`PostgresConnector::copy_in`]).

use super::{PostgresConnector, quote_ident};
use crate::model::{Row, TableScope, Value};

/// Size of the pieces a COPY's data is sent in.
const COPY_CHUNK: usize = 32 * 1024;

/// How a column travels in a binary COPY: the types whose binary form is plain (fixed
/// width numbers, a flag byte, or the bytes themselves). A table with any other column
/// type is copied in text format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Binary {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    /// `text`, `varchar(n)`, `char(n)`: UTF-8 bytes; the server still applies the length.
    Text,
    Bytea,
}

/// The binary form of a column of type `declared` (`format_type`'s spelling).
pub(super) fn binary_kind(declared: &str) -> Option<Binary> {
    Some(match declared {
        "smallint" => Binary::Int2,
        "integer" => Binary::Int4,
        "bigint" => Binary::Int8,
        "real" => Binary::Float4,
        "double precision" => Binary::Float8,
        "boolean" => Binary::Bool,
        "text" => Binary::Text,
        "bytea" => Binary::Bytea,
        d if d.starts_with("character varying") || d.starts_with("character(") || d == "character" => Binary::Text,
        _ => return None,
    })
}

/// Start of a binary COPY's data: signature, flags, header extension length.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// End of a binary COPY's data: a tuple of -1 fields.
const COPY_BINARY_TRAILER: &[u8] = &[0xff, 0xff];

/// Appends one row in COPY binary format. Returns false, leaving `out` partly written,
/// when a value has no exact binary form in its column (an integer out of the column's
/// range, a double out of `real`'s, a value of another family): such a batch goes in
/// text format, so that the server judges it as it would any other.
fn copy_row_binary(out: &mut Vec<u8>, row: &Row, kinds: &[Binary]) -> bool {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&(row.len() as i16).to_be_bytes());
    for (value, kind) in row.iter().zip(kinds) {
        match (value, kind) {
            (Value::Null, _) => out.extend_from_slice(&(-1i32).to_be_bytes()),
            (Value::Int(i), Binary::Int2) => match i16::try_from(*i) {
                Ok(x) => field(out, &x.to_be_bytes()),
                Err(_) => return false,
            },
            (Value::Int(i), Binary::Int4) => match i32::try_from(*i) {
                Ok(x) => field(out, &x.to_be_bytes()),
                Err(_) => return false,
            },
            (Value::Int(i), Binary::Int8) => field(out, &i.to_be_bytes()),
            (Value::Float(f), Binary::Float4) => {
                let x = *f as f32;
                // `real` refuses what overflows or underflows it; the cast would not.
                if f.is_finite() && (!x.is_finite() || (x == 0.0 && *f != 0.0)) {
                    return false;
                }
                field(out, &x.to_be_bytes())
            }
            (Value::Int(i), Binary::Float4) => field(out, &(*i as f32).to_be_bytes()),
            (Value::Float(f), Binary::Float8) => field(out, &f.to_be_bytes()),
            (Value::Int(i), Binary::Float8) => field(out, &(*i as f64).to_be_bytes()),
            (Value::Bool(b), Binary::Bool) => field(out, &[u8::from(*b)]),
            (Value::Text(s), Binary::Text) => field(out, s.as_bytes()),
            (Value::Bytes(b), Binary::Bytea) => field(out, b),
            _ => return false,
        }
    }
    true
}

/// Appends one row in COPY text format.
fn copy_row(out: &mut Vec<u8>, row: &Row) {
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        copy_value(out, value);
    }
    out.push(b'\n');
}

/// Appends one value in COPY text format.
fn copy_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
        Value::Float(f) if f.is_infinite() => out.extend_from_slice(if *f > 0.0 { b"Infinity" } else { b"-Infinity" }),
        // The shortest text that reads back as the same double ("1.0", "1e-7", "1e16").
        Value::Float(f) => out.extend_from_slice(zmij::Buffer::new().format_finite(*f).as_bytes()),
        Value::Text(s) => {
            let mut rest = s.as_str();
            while let Some(at) = rest.find(['\\', '\t', '\n', '\r']) {
                out.extend_from_slice(&rest.as_bytes()[..at]);
                out.extend_from_slice(match rest.as_bytes()[at] {
                    b'\\' => b"\\\\",
                    b'\t' => b"\\t",
                    b'\n' => b"\\n",
                    _ => b"\\r",
                });
                rest = &rest[at + 1..];
            }
            out.extend_from_slice(rest.as_bytes());
        }
        Value::Bytes(b) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\\\x");
            for byte in b {
                out.extend_from_slice(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]);
            }
        }
    }
}

impl PostgresConnector {
    /// COPYs `rows` into the scope's table, in binary format with the columns' `binary`
    /// forms, else in text. Returns false, having sent nothing that stays, when a value
    /// has no binary form in its column.
    pub(super) async fn copy_in(
        &self,
        scope: &TableScope,
        rows: &[Row],
        binary: Option<&[Binary]>,
    ) -> Result<bool, sqlx::Error> {
        let columns = scope.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let format = if binary.is_some() { " (FORMAT binary)" } else { "" };
        let copy = format!("COPY {} ({columns}) FROM STDIN{format}", self.table_ref(&scope.table));
        let logged =
            self.log_sql(super::super::sql_log::StatementKind::Write, &copy, || super::super::sql_log::rows_text(rows));
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.pool().acquire().await?;
        let mut copy_in = conn.copy_in_raw(&copy).await?;
        // Rows go out in pieces of about COPY_CHUNK bytes as they are encoded, so the
        // server parses one piece while the next is being written; PostgreSQL also takes
        // pieces of its input buffer's size much faster than one large message.
        let mut data = Vec::with_capacity(COPY_CHUNK + 4096);
        if binary.is_some() {
            data.extend_from_slice(COPY_BINARY_HEADER);
        }
        for (i, row) in rows.iter().enumerate() {
            match binary {
                Some(kinds) => {
                    if !copy_row_binary(&mut data, row, kinds) {
                        copy_in.abort("a value has no binary form; sending the batch as text").await?;
                        return Ok(false);
                    }
                }
                None => copy_row(&mut data, row),
            }
            let last = i + 1 == rows.len();
            if last && binary.is_some() {
                data.extend_from_slice(COPY_BINARY_TRAILER);
            }
            if data.len() >= COPY_CHUNK || last {
                if let Err(e) = copy_in.send(data.as_slice()).await {
                    let _ = copy_in.abort("send failed").await;
                    return Err(e);
                }
                data.clear();
            }
        }
        crate::failpoint::hit("mid_write");
        let copied = copy_in.finish().await?;
        logged.done(super::super::sql_log::Rows::Affected(copied));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// COPY text format escapes what it must and writes NULL and bytea as PostgreSQL reads them.
    #[test]
    fn copy_text_format() {
        let mut out = Vec::new();
        for v in [
            Value::Text("a\tb\\c\nd\ré".into()),
            Value::Null,
            Value::Bytes(vec![0, 255]),
            Value::Bool(true),
            Value::Float(f64::NAN),
        ] {
            copy_value(&mut out, &v);
            out.push(b'|');
        }
        assert_eq!(String::from_utf8(out).unwrap(), "a\\tb\\\\c\\nd\\ré|\\N|\\\\x00ff|t|NaN|");
    }

    /// Numbers go out as text that reads back as the same value.
    #[test]
    fn copy_numbers() {
        let text = |v: Value| {
            let mut out = Vec::new();
            copy_value(&mut out, &v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(Value::Int(i64::MIN)), "-9223372036854775808");
        for f in [0.1, -2.5, 1.0, 1e-7, 123456789.125, 1e300, f64::MIN_POSITIVE, -0.0] {
            let out = text(Value::Float(f));
            let back: f64 = out.parse().unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "{f} went out as {out}");
        }
    }

    /// Binary COPY rows: field count, then each field's length and big-endian bytes (-1
    /// for NULL); a value without an exact binary form refuses the row.
    #[test]
    fn copy_binary_rows() {
        use Binary::*;
        let kinds = [Int2, Int4, Int8, Float4, Float8, Bool, Text, Bytea];
        let row = vec![
            Value::Int(-2),
            Value::Int(70000),
            Value::Null,
            Value::Float(1.5),
            Value::Int(3),
            Value::Bool(true),
            Value::Text("é".into()),
            Value::Bytes(vec![0, 255]),
        ];
        let mut out = Vec::new();
        assert!(copy_row_binary(&mut out, &row, &kinds));
        let mut expected = vec![0, 8];
        for field in [
            &[0xff, 0xfe][..],
            &70000i32.to_be_bytes(),
            &[],
            &1.5f32.to_be_bytes(),
            &3.0f64.to_be_bytes(),
            &[1],
            "é".as_bytes(),
            &[0, 255],
        ] {
            if field.is_empty() {
                expected.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                expected.extend_from_slice(&(field.len() as i32).to_be_bytes());
                expected.extend_from_slice(field);
            }
        }
        assert_eq!(out, expected);
        for (value, kind) in [
            (Value::Int(40000), Int2),
            (Value::Int(1 << 40), Int4),
            (Value::Float(1e300), Float4),
            (Value::Float(1e-50), Float4),
            (Value::Text("1".into()), Int8),
            (Value::Int(1), Text),
        ] {
            assert!(!copy_row_binary(&mut Vec::new(), &vec![value.clone()], &[kind]), "{value:?} as {kind:?}");
        }
        assert_eq!(binary_kind("character varying(5)"), Some(Text));
        assert_eq!(binary_kind("numeric(10,2)"), None);
        assert_eq!(COPY_BINARY_HEADER.len(), 19);
    }
}
