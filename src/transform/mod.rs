//! Schema translation: which source column feeds which target column, whether its values
//! convert, and the conversion itself. Built once per table from the two schemas (pure,
//! no I/O); applied to every row the engine moves. Values convert to, and compare in,
//! the exact form the target column holds: see [`exact`].

pub mod exact;

use jiff::tz::TimeZone;

use crate::config::TableSpec;
use crate::model::{ColumnSchema, ColumnType, Row, TableSchema, TableScope, Value};
pub use exact::TargetColumn;

/// How a target column gets its value.
#[derive(Clone, Debug, PartialEq)]
enum ColumnSource {
    /// From this source column (index into the source scope), converted to `to`.
    Source { index: usize, to: TargetColumn },
    /// A fixed default for a NOT NULL target column that no source column feeds.
    Default(Value),
}

/// The mapping of one table entry between its two sides.
#[derive(Clone, Debug)]
pub struct TableMapping {
    /// Columns read from the source.
    pub source: TableScope,
    /// Columns written to the target, in the order [`TableMapping::convert`] produces.
    pub target: TableScope,
    columns: Vec<ColumnSource>,
    /// JSON columns keep the keys only the target has (`copy_all_json_keys: false`).
    merge_json: bool,
    /// Reads wall-clock times into instants and back (config `timezone`).
    zone: TimeZone,
    /// What the source schema promises about the key column.
    pub source_key: SourceKey,
    /// Lossy or skipped columns worth telling the user about.
    pub warnings: Vec<String>,
    /// Narrower columns of the same type family (`bigint` into `integer`, `text` into
    /// `varchar(50)`): `check` lists them; a run names them only in its log's info level,
    /// since a value that does not fit is isolated and reported anyway.
    pub narrowing: Vec<String>,
}

/// What the source schema promises about its key column: which key checks a run needs
/// before writing anything (see `Engine::check_keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceKey {
    /// The column may hold NULL (no NOT NULL constraint; SQLite lets a non-INTEGER primary
    /// key hold NULL).
    pub nullable: bool,
    /// A primary key or unique index guarantees one row per key.
    pub unique: bool,
}

/// Whether values of one type family convert to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convertibility {
    /// Always exact.
    Exact,
    /// Converts, but some values may lose precision or fail (reported per row).
    Lossy,
    /// Cannot convert.
    Impossible,
}

/// The conversion matrix between type families.
pub fn convertibility(from: ColumnType, to: ColumnType) -> Convertibility {
    use ColumnType::*;
    use Convertibility::*;
    if from == to || from == Other || to == Other {
        return Exact;
    }
    match (from, to) {
        (Blob, Text) | (Text, Blob) => Lossy,
        (Blob, _) | (_, Blob) => Impossible,
        (_, Text) => Exact,
        (Integer, Float | Decimal) | (Boolean, Integer | Float | Decimal) => Exact,
        (Float, Decimal) | (Decimal, Float) => Lossy,
        (Float | Decimal, Integer) | (Integer, Boolean) => Lossy,
        (Text, Date | Time | Timestamp | Json) => Lossy,
        // Decimals written as text (SQLite has no exact decimal type): each value is read
        // exactly or refused as a data error.
        (Text, Float | Decimal) => Lossy,
        (Date, Timestamp) | (Timestamp, Date) => Lossy,
        _ => Impossible,
    }
}

impl TableMapping {
    /// Builds the mapping and checks it against both schemas. Returns every problem found
    /// (not just the first), each naming the table, the column and the fix.
    pub fn build(
        spec: &TableSpec,
        source_schema: &TableSchema,
        target_schema: &TableSchema,
    ) -> Result<TableMapping, Vec<String>> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut narrowed = Vec::new();
        let t = &spec.name;
        let src_table = &spec.source_table;
        let tgt_table = &spec.target_table;

        let need_source = |column: &str, what: &str, problems: &mut Vec<String>| {
            if source_schema.column(column).is_none() {
                let names: Vec<&str> = source_schema.columns.iter().map(|c| c.name.as_str()).collect();
                let hint = crate::config::closest(column, &names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                problems
                    .push(format!("table {t}: {what} `{column}` is not a column of source table `{src_table}`{hint}"));
            }
        };
        for key in &spec.key_fields {
            need_source(key, "primary_key_field", &mut problems);
        }
        if let Some(m) = &spec.modify_field {
            need_source(m, "modify_id_field", &mut problems);
        }
        for (column, _) in &spec.filter {
            need_source(column, "`where` column", &mut problems);
            let target = spec.target_column(column);
            if target_schema.column(target).is_none() {
                problems.push(format!(
                    "table {t}: `where` column `{target}` is not a column of target table `{tgt_table}`; \
                     the target needs it to tell record types apart"
                ));
            }
        }
        for (source, target) in &spec.field_mapping {
            need_source(source, "field_mapping source", &mut problems);
            if target_schema.column(target).is_none() {
                problems.push(format!(
                    "table {t}: field_mapping target `{target}` is not a column of target table `{tgt_table}`"
                ));
            }
        }
        for column in &spec.exclude_fields {
            need_source(column, "exclude_fields entry", &mut problems);
        }
        let target_keys: Vec<String> = spec.key_fields.iter().map(|k| spec.target_column(k).to_string()).collect();
        for (key, target_key) in spec.key_fields.iter().zip(&target_keys) {
            let (Some(s), Some(tk)) = (source_schema.column(key), target_schema.column(target_key)) else { continue };
            let key_family = |c: &crate::model::ColumnSchema| match c.column_type {
                ColumnType::Integer => Some("integer"),
                // A text key may spell a UUID in ways (case, braces, no hyphens) that the
                // target's uuid column rewrites, so the two would never compare equal.
                ColumnType::Text if c.storage.uuid => Some("uuid"),
                ColumnType::Text => Some("text"),
                ColumnType::Blob => Some("bytes"),
                ColumnType::Other => None,
                _ => Some("unsupported"),
            };
            match (key_family(s), key_family(tk)) {
                (Some("unsupported"), _) | (_, Some("unsupported")) => problems.push(format!(
                    "table {t}: key column `{}` ({}) -> `{target_key}` ({}): db-sync keys are integer, text \
                     (uuid included) or bytes columns; use a key of one of those types",
                    s.name, s.declared_type, tk.declared_type
                )),
                // uuid → text is safe: a uuid reads as lower-case hyphenated text, whose
                // byte order is the uuid's.
                (Some("uuid"), Some("text")) => {}
                // Into a uuid key, only a uuid key: text of any declared type (SQLite's
                // `UUID`, an untyped column) may spell a UUID another way.
                (source, Some("uuid")) if source != Some("uuid") => problems.push(format!(
                    "table {t}: key column `{}` ({}) feeds the uuid key `{target_key}`: the target rewrites \
                     UUID spellings (case, braces, hyphens), so the keys would never compare equal; use a \
                     uuid key in the source, or a text key in the target",
                    s.name, s.declared_type
                )),
                (Some(a), Some(b)) if a != b => problems.push(format!(
                    "table {t}: key column `{}` is {a} ({}) in the source but `{target_key}` is {b} ({}) in the \
                     target; keys must have the same type on both sides, since they are compared and ordered \
                     as values",
                    s.name, s.declared_type, tk.declared_type
                )),
                _ => {}
            }
        }
        let missing: Vec<&String> = target_keys.iter().filter(|k| target_schema.column(k).is_none()).collect();
        for target_key in &missing {
            problems
                .push(format!("table {t}: key column `{target_key}` is not a column of target table `{tgt_table}`"));
        }
        if missing.is_empty() && !target_schema.is_unique(&target_keys) {
            let shown = match target_keys.as_slice() {
                [one] => format!("`{one}`"),
                many => format!("({})", many.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")),
            };
            problems.push(format!(
                "table {t}: target table `{tgt_table}` needs a primary key or unique index on {shown} \
                 so that writes are idempotent upserts"
            ));
        }

        let mut source_columns = Vec::new();
        let mut target_columns = Vec::new();
        let mut columns = Vec::new();
        for column in &source_schema.columns {
            if spec.exclude_fields.contains(&column.name) {
                continue;
            }
            let target_name = spec.target_column(&column.name);
            let Some(target_column) = target_schema.column(target_name) else {
                warnings.push(format!(
                    "table {t}: source column `{}` has no target column `{target_name}` and is not synced",
                    column.name
                ));
                continue;
            };
            match convertibility(column.column_type, target_column.column_type) {
                Convertibility::Impossible => problems.push(format!(
                    "table {t}: source column `{}` ({}) cannot convert to target column `{}` ({}); \
                     map it to a compatible column with field_mapping or list it in exclude_fields",
                    column.name, column.declared_type, target_name, target_column.declared_type
                )),
                Convertibility::Lossy => warnings.push(format!(
                    "table {t}: source column `{}` ({}) -> target `{}` ({}) may lose data; \
                     rows that do not convert are reported as data errors",
                    column.name, column.declared_type, target_name, target_column.declared_type
                )),
                Convertibility::Exact => {
                    if let Some(why) = narrowing(column, target_column) {
                        narrowed.push(format!(
                            "table {t}: source column `{}` ({}) -> target `{}` ({}) may lose data: {why}; \
                             rows that do not fit are reported as data errors",
                            column.name, column.declared_type, target_name, target_column.declared_type
                        ));
                    }
                }
            }
            let to = TargetColumn { family: target_column.column_type, storage: target_column.storage };
            columns.push(ColumnSource::Source { index: source_columns.len(), to });
            source_columns.push(column.name.clone());
            target_columns.push(target_name.to_string());
        }
        for column in &target_schema.columns {
            if target_columns.contains(&column.name) || column.nullable || column.has_default {
                continue;
            }
            if spec.settings.set_default_value {
                columns.push(ColumnSource::Default(default_for(column.column_type)));
                target_columns.push(column.name.clone());
            } else {
                problems.push(format!(
                    "table {t}: target column `{}` is NOT NULL without a default and no source column \
                     feeds it; map one with field_mapping or set \"set_default_value\": true",
                    column.name
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let index_of = |columns: &[String], name: &str| columns.iter().position(|c| c == name);
        let key_indexes: Vec<usize> =
            spec.key_fields.iter().map(|k| index_of(&source_columns, k).expect("key checked above")).collect();
        let modify_index = spec.modify_field.as_deref().and_then(|m| index_of(&source_columns, m));
        let source = TableScope {
            table: spec.source_table.clone(),
            columns: source_columns,
            key_indexes,
            modify_index,
            filter: spec.filter.clone(),
            skip_null_keys: false,
            skip_keys: Vec::new(),
        };
        let target = TableScope {
            table: spec.target_table.clone(),
            key_indexes: target_keys.iter().map(|k| index_of(&target_columns, k).expect("key checked above")).collect(),
            modify_index: spec.modify_field.as_deref().and_then(|m| index_of(&target_columns, spec.target_column(m))),
            filter: spec.filter.iter().map(|(c, v)| (spec.target_column(c).to_string(), v.clone())).collect(),
            columns: target_columns,
            skip_null_keys: false,
            skip_keys: Vec::new(),
        };
        let merge_json = !spec.settings.copy_all_json_keys;
        let zone = spec.settings.timezone.clone();
        let source_key = SourceKey {
            nullable: spec.key_fields.iter().any(|k| source_schema.column(k).is_none_or(|c| c.nullable)),
            unique: source_schema.is_unique(&spec.key_fields),
        };
        Ok(TableMapping { source, target, columns, merge_json, zone, source_key, warnings, narrowing: narrowed })
    }

    /// Converts a source row into a target row. An error names the column and value type.
    pub fn convert(&self, row: &Row) -> Result<Row, String> {
        self.convert_owned(row.clone())
    }

    /// [`TableMapping::convert`], taking the row: values that need no conversion move.
    pub fn convert_owned(&self, mut row: Row) -> Result<Row, String> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c {
                ColumnSource::Source { index, to } => {
                    // `build` walks the source columns once: each feeds one target
                    // column at most, so its value can move.
                    let value = std::mem::replace(&mut row[*index], Value::Null);
                    exact::convert(value, to, &self.zone)
                        .map_err(|e| format!("column `{}`: {e}", self.target.columns[i]))
                }
                ColumnSource::Default(v) => Ok(v.clone()),
            })
            .collect()
    }

    /// True when a converted source row and a target row hold the same data (columns
    /// filled with defaults are not compared: the target may legitimately hold others).
    /// Unless `copy_all_json_keys`, a JSON object in the target may hold keys the source's
    /// lacks: only the source's keys are compared.
    pub fn rows_equal(&self, converted: &Row, target: &Row) -> bool {
        self.columns.iter().enumerate().all(|(i, c)| match c {
            ColumnSource::Source { to, .. } if to.family == ColumnType::Json && self.merge_json => {
                json_covers(&converted[i], &target[i], to, &self.zone)
            }
            ColumnSource::Source { to, .. } => exact::same(&converted[i], &target[i], to, &self.zone),
            ColumnSource::Default(_) => true,
        })
    }

    /// Whether writing over existing target rows needs them ([`TableMapping::merge_into`]).
    pub fn merges_json(&self) -> bool {
        self.merge_json
            && self
                .columns
                .iter()
                .any(|c| matches!(c, ColumnSource::Source { to, .. } if to.family == ColumnType::Json))
    }

    /// The row to write over the target row `old`: `row` itself, except that unless
    /// `copy_all_json_keys`, where both hold JSON objects the target's keys that the
    /// source lacks are kept (the source's keys win, the target's key order stays).
    pub fn merge_into(&self, mut row: Row, old: &Row) -> Row {
        if !self.merge_json {
            return row;
        }
        for (i, c) in self.columns.iter().enumerate() {
            if let ColumnSource::Source { to, .. } = c
                && to.family == ColumnType::Json
                && let (Some(serde_json::Value::Object(new)), Some(serde_json::Value::Object(mut merged))) =
                    (json_of(&row[i]), json_of(&old[i]))
            {
                merged.extend(new);
                row[i] = Value::Text(serde_json::Value::Object(merged).to_string());
            }
        }
        row
    }
}

/// Why a column of declared type `to` may not hold every value of one of declared type
/// `from` of the same family: a narrower integer or float, fewer numeric digits, a shorter
/// text. Declared types as PostgreSQL's `format_type` or SQLite's DDL spell them.
fn narrowing(from_column: &ColumnSchema, to_column: &ColumnSchema) -> Option<String> {
    let (from, to) = (from_column.declared_type.as_str(), to_column.declared_type.as_str());
    // A type db-sync does not know (PostgreSQL `interval`, …) is passed on as its text.
    if from_column.column_type == ColumnType::Other
        && !matches!(to_column.column_type, ColumnType::Text | ColumnType::Other)
    {
        return Some(format!(
            "db-sync passes `{from}` values on as their text, and only text in the form a {} column reads converts",
            to_column.column_type
        ));
    }
    // 4D Time (`DURATION (4D Time)` over SQL, `duration` over REST) holds durations.
    if to_column.column_type == ColumnType::Time && from.to_ascii_lowercase().starts_with("duration") {
        return Some(
            "4D Time values are durations: negative ones, or of 24 hours or more, do not fit a time of day".into(),
        );
    }
    let (lower_from, lower_to) = (from.to_ascii_lowercase(), to.to_ascii_lowercase());
    // (precision, scale) of numeric(p, s) / decimal(p, s); text length of varchar(n) / char(n).
    let args = |t: &str| -> Vec<i64> {
        t.split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(inner, _)| inner.split(',').filter_map(|a| a.trim().parse().ok()).collect())
            .unwrap_or_default()
    };
    let is_numeric = |t: &str| t.starts_with("numeric") || t.starts_with("decimal");
    let is_text =
        |t: &str| ["char", "varchar", "character", "text", "clob", "nvarchar"].iter().any(|p| t.starts_with(p));
    if is_numeric(&lower_to) {
        let target = args(&lower_to);
        let (p, s) = match target[..] {
            [p] => (p, 0),
            [p, s] => (p, s),
            _ => return None,
        };
        return match (is_numeric(&lower_from), &args(&lower_from)[..]) {
            (true, [fp, fs]) if fp - fs <= p - s && *fs <= s => None,
            (true, [fp]) if *fp <= p - s => None,
            _ => Some(format!("values beyond {p} digits with {s} after the point do not fit")),
        };
    }
    if is_text(&lower_to) {
        let n = *args(&lower_to).first()?;
        return match args(&lower_from).first() {
            Some(m) if is_text(&lower_from) && *m <= n => None,
            _ => Some(format!("text longer than {n} characters does not fit")),
        };
    }
    // Widths as the connectors describe them (the same the conversion checks against).
    let (a, b) = (&from_column.storage, &to_column.storage);
    match (from_column.column_type, to_column.column_type) {
        (ColumnType::Integer, ColumnType::Integer) => {
            let (a, b) = (a.int_bits.unwrap_or(64), b.int_bits.unwrap_or(64));
            (a > b).then(|| format!("integers wider than {b} bits do not fit"))
        }
        (ColumnType::Float, ColumnType::Float) => {
            let (a, b) = (a.float_bits.unwrap_or(64), b.float_bits.unwrap_or(64));
            (a > b).then(|| format!("{a}-bit floats narrow to {b} bits"))
        }
        _ => None,
    }
}

/// A text value parsed as JSON.
fn json_of(v: &Value) -> Option<serde_json::Value> {
    match v {
        Value::Text(s) => serde_json::from_str(s).ok(),
        _ => None,
    }
}

/// True when the target JSON value `target` holds the source's `source`: every key of a
/// source object with an equal value, or else an equal document.
fn json_covers(source: &Value, target: &Value, to: &TargetColumn, zone: &TimeZone) -> bool {
    match (json_of(source), json_of(target)) {
        (Some(serde_json::Value::Object(s)), Some(serde_json::Value::Object(t))) => {
            s.iter().all(|(k, v)| t.get(k).is_some_and(|w| exact::same_json(v, w)))
        }
        _ => exact::same(source, target, to, zone),
    }
}

fn default_for(t: ColumnType) -> Value {
    match t {
        ColumnType::Integer | ColumnType::Decimal => Value::Int(0),
        ColumnType::Float => Value::Float(0.0),
        ColumnType::Boolean => Value::Bool(false),
        ColumnType::Blob => Value::Bytes(Vec::new()),
        ColumnType::Date => Value::Text("0001-01-01".into()),
        ColumnType::Time => Value::Text("00:00:00".into()),
        ColumnType::Timestamp => Value::Text("0001-01-01 00:00:00".into()),
        ColumnType::Json => Value::Text("{}".into()),
        ColumnType::Text | ColumnType::Other => Value::Text(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, TableSpec};
    use crate::model::Storage;

    fn col(name: &str, declared: &str, nullable: bool) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            declared_type: declared.into(),
            column_type: crate::connector::sqlite::column_type(declared),
            nullable,
            has_default: false,
            storage: crate::connector::sqlite::storage(declared),
        }
    }

    fn schema(name: &str, columns: Vec<ColumnSchema>) -> TableSchema {
        TableSchema { name: name.into(), columns, unique_keys: vec![vec!["id".into()]] }
    }

    fn spec(extra: &str) -> TableSpec {
        let text = format!(
            r#"{{"source": {{"type": "sqlite", "path": "a"}}, "target": {{"type": "sqlite", "path": "b"}},
                "tables": [{{"name": "product", "modify_id_field": "modify_id" {extra}}}]}}"#
        );
        let config = Config::from_str_at(&text, std::path::Path::new("c.json"), &|_| None).unwrap();
        config.tables[0].clone()
    }

    fn source() -> TableSchema {
        schema(
            "product",
            vec![
                col("id", "INTEGER", false),
                col("descr", "TEXT", true),
                col("price", "REAL", true),
                col("modify_id", "INTEGER", false),
                col("legacy", "TEXT", true),
            ],
        )
    }

    /// Renamed columns map by name, unmatched source columns are skipped with a warning,
    /// and converted rows land in target column order.
    #[test]
    fn mapping_renames_and_skips() {
        let target = schema(
            "product",
            vec![
                col("id", "INTEGER", false),
                col("modify_id", "INTEGER", false),
                col("description", "TEXT", true),
                col("price", "NUMERIC(10,2)", true),
            ],
        );
        let m =
            TableMapping::build(&spec(r#", "field_mapping": {"descr": "description"}"#), &source(), &target).unwrap();
        assert_eq!(m.source.columns, vec!["id", "descr", "price", "modify_id"]);
        assert_eq!(m.target.columns, vec!["id", "description", "price", "modify_id"]);
        assert_eq!(m.target.modify_index, Some(3));
        assert!(m.warnings.iter().any(|w| w.contains("`legacy`")), "{:?}", m.warnings);
        let row = vec![Value::Int(1), Value::Text("x".into()), Value::Int(3), Value::Int(9)];
        let out = m.convert(&row).unwrap();
        assert_eq!(out[2], Value::Int(3), "a whole number stays an integer under NUMERIC affinity");
    }

    /// A float column feeding a blob column cannot convert and is reported; so are a
    /// missing key column and a NOT NULL target column that nothing feeds.
    #[test]
    fn impossible_mappings_are_reported_together() {
        let target = TableSchema {
            name: "product".into(),
            columns: vec![
                col("id", "INTEGER", false),
                col("price", "BLOB", true),
                col("modify_id", "INTEGER", false),
                col("mandatory", "TEXT", false),
            ],
            unique_keys: vec![],
        };
        let problems = TableMapping::build(&spec(""), &source(), &target).unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("`price` (REAL) cannot convert"), "{text}");
        assert!(text.contains("needs a primary key or unique index on `id`"), "{text}");
        assert!(text.contains("`mandatory` is NOT NULL"), "{text}");
    }

    /// `set_default_value` fills NOT NULL target columns nothing feeds, and those columns
    /// are not compared.
    #[test]
    fn set_default_value_fills_and_is_not_compared() {
        let target = schema(
            "product",
            vec![col("id", "INTEGER", false), col("modify_id", "INTEGER", true), col("flag", "INTEGER", false)],
        );
        let m = TableMapping::build(&spec(r#", "set_default_value": true"#), &source(), &target).unwrap();
        assert_eq!(m.source.columns, vec!["id", "modify_id"]);
        let out = m.convert(&vec![Value::Int(1), Value::Int(5)]).unwrap();
        assert!(matches!(out[2], Value::Int(0)));
        let stored = vec![Value::Int(1), Value::Int(5), Value::Int(7)];
        assert!(m.rows_equal(&out, &stored));
    }

    /// JSON objects: by default the target keeps the keys only it has (they are neither
    /// compared nor overwritten); `copy_all_json_keys` makes the target's value the source's.
    #[test]
    fn json_keys_merge_unless_copy_all() {
        let doc = |s: &str| vec![Value::Int(1), Value::Text(s.into())];
        let schema_with_doc = schema("product", vec![col("id", "INTEGER", false), col("doc", "JSON", true)]);
        let build = |extra: &str| {
            let spec = spec(&format!(r#", "modify_id_field": null {extra}"#));
            TableMapping::build(&spec, &schema_with_doc, &schema_with_doc).unwrap()
        };
        let merge = build("");
        let copy_all = build(r#", "copy_all_json_keys": true"#);
        let source = doc(r#"{"a": 1, "b": [2]}"#);
        let target = doc(r#"{"t": true, "a": 1, "b": [2]}"#);
        assert!(merge.merges_json() && !copy_all.merges_json());
        assert!(merge.rows_equal(&source, &target), "a key only the target has is not a difference");
        assert!(!copy_all.rows_equal(&source, &target));
        assert!(!merge.rows_equal(&doc(r#"{"a": 2, "b": [2]}"#), &target));
        assert!(!merge.rows_equal(&doc("[1]"), &doc("[1, 2]")), "arrays compare whole");

        let merged = merge.merge_into(doc(r#"{"a": 2, "c": null}"#), &target);
        assert_eq!(merged[1], Value::Text(r#"{"t":true,"a":2,"b":[2],"c":null}"#.into()));
        let replaced = copy_all.merge_into(doc(r#"{"a": 2}"#), &target);
        assert_eq!(replaced[1], Value::Text(r#"{"a": 2}"#.into()));
        // Not both objects: the source's value as it is.
        assert_eq!(merge.merge_into(doc("[3]"), &target)[1], Value::Text("[3]".into()));
    }

    /// Same-family columns that narrow (integer and float widths, numeric digits, text
    /// lengths) are reported; widening and equal ones are not.
    #[test]
    fn narrowing_columns_are_reported() {
        // Declared types as PostgreSQL (lower case), SQLite (INTEGER, REAL, TEXT) and 4D over
        // SQL (INT, INT64, SMALLINT, `4D REAL`) describe them, with their storage.
        let column = |declared: &str| {
            let (column_type, storage) = match declared {
                "smallint" | "SMALLINT" => (ColumnType::Integer, Storage { int_bits: Some(16), ..Storage::default() }),
                "integer" | "INT" => (ColumnType::Integer, Storage { int_bits: Some(32), ..Storage::default() }),
                "bigint" | "INTEGER" | "INT64" => (ColumnType::Integer, Storage::default()),
                "real" => (ColumnType::Float, Storage { float_bits: Some(32), ..Storage::default() }),
                "double precision" | "REAL" | "4D REAL" => (ColumnType::Float, Storage::default()),
                t if t.starts_with("numeric") => (ColumnType::Decimal, Storage::default()),
                t if t.starts_with("timestamp") => (ColumnType::Timestamp, Storage::default()),
                "interval" => (ColumnType::Other, Storage::default()),
                t if t.starts_with("time") || t.starts_with("DURATION") || t == "duration" => {
                    (ColumnType::Time, Storage::default())
                }
                _ => (ColumnType::Text, Storage::default()),
            };
            ColumnSchema {
                name: "c".into(),
                declared_type: declared.trim_start_matches("4D ").into(),
                column_type,
                nullable: true,
                has_default: false,
                storage,
            }
        };
        for (from, to) in [
            ("bigint", "smallint"),
            ("INTEGER", "integer"),
            ("integer", "smallint"),
            ("double precision", "real"),
            ("numeric(12,2)", "numeric(8,2)"),
            ("numeric(12,4)", "numeric(12,2)"),
            ("REAL", "numeric(10,2)"),
            ("TEXT", "character varying(50)"),
            ("character varying(80)", "VARCHAR(50)"),
            ("bigint", "INT"),
            ("INTEGER", "INT"),
            ("INT", "SMALLINT"),
            ("4D REAL", "real"),
            ("DURATION (4D Time)", "time"),
            ("duration", "DURATION (4D Time)"),
            ("interval", "DURATION (4D Time)"),
        ] {
            assert!(narrowing(&column(from), &column(to)).is_some(), "{from} -> {to}");
        }
        for (from, to) in [
            ("smallint", "bigint"),
            ("integer", "INTEGER"),
            ("bigint", "INTEGER"),
            ("real", "double precision"),
            ("numeric(8,2)", "numeric(12,2)"),
            ("numeric", "numeric"),
            ("character varying(50)", "text"),
            ("VARCHAR(20)", "character varying(50)"),
            ("numeric(2,5)", "numeric(3,5)"),
            ("timestamp with time zone", "timestamp without time zone"),
            ("INT", "integer"),
            ("integer", "INT"),
            ("double precision", "4D REAL"),
            ("4D REAL", "double precision"),
            ("INT64", "bigint"),
            ("time", "DURATION (4D Time)"),
        ] {
            assert_eq!(narrowing(&column(from), &column(to)), None, "{from} -> {to}");
        }
    }

    /// Unknown columns in the config are reported with a suggestion.
    #[test]
    fn typo_in_key_field_is_reported() {
        let problems = TableMapping::build(&spec(r#", "primary_key_field": "idd""#), &source(), &source()).unwrap_err();
        assert!(problems[0].contains("`idd`") && problems[0].contains("did you mean `id`"), "{problems:?}");
    }

    /// Values that mean the same in a column type compare equal across representations.
    #[test]
    fn equality_by_column_type() {
        let equal_as = |a: &Value, b: &Value, family| {
            exact::same(a, b, &TargetColumn { family, storage: crate::model::Storage::default() }, &TimeZone::UTC)
        };
        assert!(equal_as(&Value::Float(12.5), &Value::Text("12.50".into()), ColumnType::Decimal));
        assert!(!equal_as(&Value::Float(12.5), &Value::Text("12.51".into()), ColumnType::Decimal));
        assert!(equal_as(
            &Value::Text("2024-01-01T10:00:00.000".into()),
            &Value::Text("2024-01-01 10:00:00".into()),
            ColumnType::Timestamp
        ));
        let same_time = |a: &str, b: &str, t| equal_as(&Value::Text(a.into()), &Value::Text(b.into()), t);
        // Offsets: an instant compares as its UTC time, and a wall-clock time is read in
        // the zone (UTC here).
        assert!(same_time("2024-03-01T12:00:00+02:00", "2024-03-01 10:00:00+00", ColumnType::Timestamp));
        assert!(same_time("2024-03-01 10:00:00.250Z", "2024-03-01 10:00:00.25", ColumnType::Timestamp));
        assert!(!same_time("2024-03-01 12:00:00+02", "2024-03-01 12:00:00", ColumnType::Timestamp));
        assert!(!same_time("2024-03-01 10:00:00.25", "2024-03-01 10:00:00.2", ColumnType::Timestamp));
        assert!(same_time("13:30:00.500", "13:30:00.5", ColumnType::Time));
        assert!(!same_time("13:30:00", "13:30:01", ColumnType::Time));
        assert!(same_time("2024-02-29", "2024-02-29", ColumnType::Date));
        assert!(equal_as(
            &Value::Text("{\"a\":1, \"b\": [1,2]}".into()),
            &Value::Text("{\"b\": [1, 2], \"a\": 1}".into()),
            ColumnType::Json
        ));
        assert!(equal_as(&Value::Int(1), &Value::Bool(true), ColumnType::Boolean));
        assert!(!equal_as(&Value::Null, &Value::Text("".into()), ColumnType::Text));
        assert!(!equal_as(&Value::Text("a".into()), &Value::Text("A".into()), ColumnType::Text));
    }

    /// Value conversions succeed where exact and fail with a reason otherwise.
    #[test]
    fn value_conversion() {
        let convert_value = |v: &Value, family| {
            exact::convert(
                v.clone(),
                &TargetColumn { family, storage: crate::model::Storage::default() },
                &TimeZone::UTC,
            )
        };
        assert!(matches!(convert_value(&Value::Text(" 42".into()), ColumnType::Integer), Ok(Value::Int(42))));
        assert!(convert_value(&Value::Text("4x".into()), ColumnType::Integer).is_err());
        assert!(convert_value(&Value::Float(1.5), ColumnType::Integer).is_err());
        assert!(matches!(convert_value(&Value::Int(7), ColumnType::Text), Ok(Value::Text(s)) if s == "7"));
        assert!(convert_value(&Value::Bytes(vec![0xff]), ColumnType::Text).is_err());
    }
}
