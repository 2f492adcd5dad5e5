//! SQL under construction with its bound parameters: [`Sql`] binds values, whole columns
//! and key parts; [`KeySql`] writes a scope's key columns as SQL in db-sync's byte order
//! (tuples, ORDER BY, ranges, `one_of`, NULL checks); the connector builds its WHERE
//! clauses (a scope's filter and a key range) from both.

use sqlx::Arguments;
use sqlx::postgres::PgArguments;

use super::types::{cast_for, select_expr_quoted, text_of};
use super::{ConnectorError, PostgresConnector, quote_ident};
use crate::model::{ColumnType, Key, KeyRange, Row, TableSchema, TableScope, Value};

/// SQL under construction with its bound parameters.
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) args: PgArguments,
    n: usize,
}

impl Sql {
    pub(super) fn new(text: impl Into<String>) -> Sql {
        Sql { text: text.into(), args: PgArguments::default(), n: 0 }
    }

    /// Binds `value` and returns its placeholder, cast to `cast` when given.
    pub(super) fn bind(&mut self, value: &Value, cast: Option<&str>) -> String {
        self.n += 1;
        let result = match value {
            Value::Null => self.args.add(Option::<String>::None),
            Value::Bool(b) => self.args.add(*b),
            Value::Int(i) => self.args.add(*i),
            Value::Float(f) => self.args.add(*f),
            Value::Text(s) => self.args.add(s.clone()),
            Value::Bytes(b) => self.args.add(b.clone()),
        };
        result.expect("binding a plain value cannot fail");
        match cast {
            Some(t) => format!("${}::{t}", self.n),
            None => format!("${}", self.n),
        }
    }

    /// Binds column `i` of `rows` as one array parameter, typed by what the values hold.
    /// Returns the placeholder and whether it went as text (to be cast to the column type).
    pub(super) fn bind_column(&mut self, rows: &[Row], i: usize, t: ColumnType) -> (String, bool) {
        self.n += 1;
        let values = rows.iter().map(|r| &r[i]);
        let all = |f: fn(&Value) -> bool| rows.iter().all(|r| r[i].is_null() || f(&r[i]));
        let mut as_text = false;
        let result = if t == ColumnType::Integer && all(|v| matches!(v, Value::Int(_))) {
            self.args.add(values.map(|v| if let Value::Int(x) = v { Some(*x) } else { None }).collect::<Vec<_>>())
        } else if t == ColumnType::Float && all(|v| matches!(v, Value::Int(_) | Value::Float(_))) {
            self.args.add(
                values
                    .map(|v| match v {
                        Value::Int(x) => Some(*x as f64),
                        Value::Float(x) => Some(*x),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )
        } else if t == ColumnType::Boolean && all(|v| matches!(v, Value::Bool(_))) {
            self.args.add(values.map(|v| if let Value::Bool(x) = v { Some(*x) } else { None }).collect::<Vec<_>>())
        } else if t == ColumnType::Blob && all(|v| matches!(v, Value::Bytes(_))) {
            self.args
                .add(values.map(|v| if let Value::Bytes(x) = v { Some(x.clone()) } else { None }).collect::<Vec<_>>())
        } else {
            as_text = true;
            self.args.add(values.map(text_of).collect::<Vec<Option<String>>>())
        };
        result.expect("binding an array cannot fail");
        (format!("${}", self.n), as_text)
    }

    /// Binds part `part` of every key as one array parameter: `bigint[]` when every part is
    /// an integer, `text[]` otherwise. Returns the placeholder.
    fn bind_key_part(&mut self, keys: &[Key], part: usize) -> String {
        self.n += 1;
        let parts = keys.iter().map(|k| &k.parts()[part]);
        let result = if keys.iter().all(|k| matches!(k.parts()[part], Key::Int(_))) {
            self.args.add(parts.map(|k| if let Key::Int(i) = k { *i } else { 0 }).collect::<Vec<i64>>())
        } else if keys.iter().all(|k| matches!(k.parts()[part], Key::Bytes(_))) {
            self.args.add(
                parts.map(|k| if let Key::Bytes(b) = k { b.clone() } else { Vec::new() }).collect::<Vec<Vec<u8>>>(),
            )
        } else {
            self.args.add(
                parts
                    .map(|k| match k {
                        Key::Int(i) => i.to_string(),
                        Key::Text(s) => s.clone(),
                        Key::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                        Key::Parts(_) => unreachable!("key parts are integers, text or bytes"),
                    })
                    .collect::<Vec<String>>(),
            )
        };
        result.expect("binding an array cannot fail");
        format!("${}", self.n)
    }
}

/// The key columns of a scope as PostgreSQL SQL. Each compares in db-sync's byte order:
/// integers as they are, text with `COLLATE "C"`, UUIDs natively (their byte order is the
/// order of their lower-case text); a compound key compares as a row value, part by part.
pub(super) struct KeySql {
    /// Quoted column, type family and declared type of each key column, in key order.
    columns: Vec<(String, ColumnType, String)>,
}

impl KeySql {
    fn expr((column, t, declared): &(String, ColumnType, String)) -> String {
        if matches!(t, ColumnType::Integer | ColumnType::Blob) || declared == "uuid" {
            column.clone()
        } else {
            format!("{column} COLLATE \"C\"")
        }
    }

    /// The key in a comparison: `k`, `k COLLATE "C"`, or `(a, b COLLATE "C")`.
    pub(super) fn tuple(&self) -> String {
        match self.columns.as_slice() {
            [one] => Self::expr(one),
            many => format!("({})", many.iter().map(Self::expr).collect::<Vec<_>>().join(", ")),
        }
    }

    /// The key's ORDER BY list.
    pub(super) fn order(&self) -> String {
        self.columns.iter().map(Self::expr).collect::<Vec<_>>().join(", ")
    }

    /// The key columns as selected (integers as `int8`, the rest as text).
    pub(super) fn select(&self) -> String {
        self.columns.iter().map(|(c, t, _)| select_expr_quoted(c, *t)).collect::<Vec<_>>().join(", ")
    }

    /// The key columns as a plain list (`ON CONFLICT`, `GROUP BY`).
    pub(super) fn list(&self) -> String {
        self.columns.iter().map(|(c, ..)| c.clone()).collect::<Vec<_>>().join(", ")
    }

    fn cast(declared: &str) -> Option<&str> {
        (declared == "uuid").then_some("uuid")
    }

    /// Binds one key value: `$1` or `($1, $2)`.
    pub(super) fn bind(&self, sql: &mut Sql, key: &Key) -> String {
        let placeholders: Vec<String> =
            key.values().zip(&self.columns).map(|(v, (_, _, declared))| sql.bind(&v, Self::cast(declared))).collect();
        match placeholders.as_slice() {
            [one] => one.clone(),
            many => format!("({})", many.join(", ")),
        }
    }

    /// A condition true for rows whose key is one of `keys`: `k = ANY($1)`, or
    /// `(a, b) IN (SELECT * FROM unnest($1::int8[], $2::text[]))`.
    pub(super) fn one_of(&self, sql: &mut Sql, keys: &[Key]) -> String {
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, _, declared))| {
                let p = sql.bind_key_part(keys, i);
                match Self::cast(declared) {
                    Some(t) => format!("{p}::{t}[]"),
                    None => p,
                }
            })
            .collect();
        match (self.columns.as_slice(), arrays.as_slice()) {
            ([(column, ..)], [array]) => format!("{column} = ANY({array})"),
            _ => format!("({}) IN (SELECT * FROM unnest({}))", self.list(), arrays.join(", ")),
        }
    }

    pub(super) fn any_null(&self) -> String {
        format!("({})", self.columns.iter().map(|(c, ..)| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR "))
    }

    pub(super) fn no_null(&self) -> String {
        self.columns.iter().map(|(c, ..)| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ")
    }
}

impl PostgresConnector {
    /// WHERE clause for a scope's filter and a key range.
    pub(super) async fn where_clause(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        sql: &mut Sql,
    ) -> Result<String, ConnectorError> {
        let schema = self.schema_of(&scope.table).await?;
        let key = self.key_sql_of(&schema, scope)?;
        let mut parts = Vec::new();
        for (column, value) in &scope.filter {
            let c = schema.column(column).ok_or_else(|| ConnectorError::Schema(format!("no column {column}")))?;
            let p = sql.bind(value, cast_for(c.column_type, &c.declared_type).as_deref());
            parts.push(format!("{} = {p}", quote_ident(column)));
        }
        if scope.skip_null_keys {
            parts.push(key.no_null());
        }
        if !scope.skip_keys.is_empty() {
            parts.push(format!("NOT ({})", key.one_of(sql, &scope.skip_keys)));
        }
        if let Some(after) = &range.after {
            let p = key.bind(sql, after);
            parts.push(format!("{} > {p}", key.tuple()));
        }
        if let Some(upto) = &range.upto {
            let p = key.bind(sql, upto);
            parts.push(format!("{} <= {p}", key.tuple()));
        }
        Ok(if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) })
    }

    /// The scope's key columns as SQL.
    pub(super) async fn key_sql(&self, scope: &TableScope) -> Result<KeySql, ConnectorError> {
        let schema = self.schema_of(&scope.table).await?;
        self.key_sql_of(&schema, scope)
    }

    /// [`Self::key_sql`] from the table's schema at hand.
    pub(super) fn key_sql_of(&self, schema: &TableSchema, scope: &TableScope) -> Result<KeySql, ConnectorError> {
        let columns = scope
            .key_columns()
            .into_iter()
            .map(|name| {
                let c = schema.column(name).ok_or_else(|| {
                    ConnectorError::Schema(format!("{}: no key column {name} in {}", self.endpoint, scope.table))
                })?;
                Ok((quote_ident(name), c.column_type, c.declared_type.clone()))
            })
            .collect::<Result<_, ConnectorError>>()?;
        Ok(KeySql { columns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text keys sort with `COLLATE "C"`, integers without.
    #[test]
    fn key_order() {
        let key = |columns: &[(&str, ColumnType, &str)]| KeySql {
            columns: columns.iter().map(|(c, t, d)| (quote_ident(c), *t, d.to_string())).collect(),
        };
        assert_eq!(key(&[("k", ColumnType::Integer, "bigint")]).tuple(), "\"k\"");
        assert_eq!(key(&[("k", ColumnType::Text, "text")]).tuple(), "\"k\" COLLATE \"C\"");
        assert_eq!(key(&[("k", ColumnType::Text, "uuid")]).tuple(), "\"k\"");
        let compound = key(&[("a", ColumnType::Integer, "integer"), ("b", ColumnType::Text, "text")]);
        assert_eq!(compound.tuple(), "(\"a\", \"b\" COLLATE \"C\")");
        assert_eq!(compound.order(), "\"a\", \"b\" COLLATE \"C\"");
        let mut sql = Sql::new("");
        let keys = [Key::Parts(vec![Key::Int(1), Key::Text("x".into())])];
        assert_eq!(compound.one_of(&mut sql, &keys), "(\"a\", \"b\") IN (SELECT * FROM unnest($1, $2))");
        assert_eq!(compound.bind(&mut sql, &keys[0]), "($3, $4)");
    }
}
