//! The SQLite side: dataclasses discovered from the file, stamps kept by triggers, and the
//! queries behind reads, computes, writes and deletes.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, params_from_iter};
use serde_json::{Map, Value, json};

use crate::TimeUnit;
use crate::error::{self, ApiError, item};
use crate::filter::{SqlFilter, ident};
use crate::fold;
use crate::values::{AttrType, from_wire, to_wire};

/// The hidden entity-stamp column. A table with another column of that name in another letter
/// case (SQLite names ignore case; `__DeletedRecords` has `__Stamp`) uses `ALT_STAMP_COL`.
pub const STAMP_COL: &str = "__STAMP";
pub const ALT_STAMP_COL: &str = "__EMU_STAMP";
pub const GLOBAL_COL: &str = "__GlobalStamp";
pub const DELETED_TABLE: &str = "__DeletedRecords";

#[derive(Clone, Debug)]
pub struct Attr {
    pub name: String,
    pub t: AttrType,
    pub indexed: bool,
}

/// A dataclass: a user table with a one-column primary key (`docs/ORDA/dsMapping.md`).
#[derive(Clone, Debug)]
pub struct Dataclass {
    pub name: String,
    /// Index of the identifying attribute in `attrs`.
    pub key: usize,
    pub attrs: Vec<Attr>,
    pub table_number: usize,
    pub has_global: bool,
    /// The hidden stamp column's name, and whether the table has it yet.
    pub stamp_col: String,
    pub has_stamp: bool,
    /// The table has SQLite's `rowid` (it is not `WITHOUT ROWID`): the record order.
    pub has_rowid: bool,
}

impl Dataclass {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn attr_index(&self, name: &str) -> Option<usize> {
        self.attrs.iter().position(|a| a.name == name)
    }

    pub fn key_attr(&self) -> &Attr {
        &self.attrs[self.key]
    }

    /// The `$catalog` description (`docs/REST/$catalog.md`).
    pub fn catalog(&self, default_top: usize) -> Value {
        let attrs: Vec<Value> = self
            .attrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut o = Map::new();
                o.insert("name".into(), json!(a.name));
                o.insert("kind".into(), json!("storage"));
                o.insert("fieldPos".into(), json!(i + 1));
                o.insert("scope".into(), json!("public"));
                o.insert("indexed".into(), json!(a.indexed || i == self.key));
                o.insert("type".into(), json!(a.t.name()));
                if i == self.key {
                    o.insert("identifying".into(), json!(true));
                }
                Value::Object(o)
            })
            .collect();
        json!({
            "name": self.name,
            "className": self.name,
            "collectionName": format!("{}Selection", self.name),
            "tableNumber": self.table_number,
            "scope": "public",
            "dataURI": format!("/rest/{}", self.name),
            "defaultTopSize": default_top,
            "key": [{"name": self.key_attr().name}],
            "attributes": attrs,
        })
    }
}

pub struct Db {
    pub conn: Connection,
    pub dcs: Vec<Dataclass>,
    pub byte_order: bool,
    pub time_unit: TimeUnit,
    /// `__TIMESTAMP` of every entity (the emulator keeps no per-entity time).
    pub timestamp: String,
}

fn q(name: &str) -> String {
    ident(name)
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Db {
    pub fn open(path: &Path, byte_order: bool, time_unit: TimeUnit, timestamp: String) -> rusqlite::Result<Db> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(256);
        register_functions(&conn)?;
        let mut db = Db { conn, dcs: Vec::new(), byte_order, time_unit, timestamp };
        db.install()?;
        Ok(db)
    }

    /// Adds the hidden stamp column and the triggers, and loads the dataclasses.
    fn install(&mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS __emu_global (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL, busy INTEGER NOT NULL DEFAULT 0);
             INSERT OR IGNORE INTO __emu_global (id, value, busy) VALUES (1, 1, 0);
             UPDATE __emu_global SET busy = 0;",
        )?;
        let mut dcs = self.discover()?;
        if dcs.iter().any(|d| d.has_global) && !dcs.iter().any(|d| d.name == DELETED_TABLE) {
            // docs/ORDA/global-stamp.md: the __DeletedRecords table with its four fields.
            self.conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (\"ID\" long64 PRIMARY KEY, \"__PrimaryKey\" string TEXT, \"__Stamp\" long64, \"__TableName\" string TEXT, \"__TableNumber\" long)",
                q(DELETED_TABLE)
            ))?;
            dcs = self.discover()?;
        }
        let tx = self.conn.transaction()?;
        for dc in &dcs {
            let t = q(&dc.name);
            let sc = &dc.stamp_col;
            if !dc.has_stamp {
                tx.execute_batch(&format!("ALTER TABLE {t} ADD COLUMN \"{sc}\" INTEGER NOT NULL DEFAULT 1"))?;
            }
            let p = q(&dc.key_attr().name);
            let trig = |kind: &str| q(&format!("__emu_{kind}_{}", dc.name));
            for kind in ["stamp", "ins", "upd", "del"] {
                tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", trig(kind)))?;
            }
            const G: &str = "(SELECT value FROM __emu_global WHERE id = 1)";
            if dc.has_global {
                let gs = q(GLOBAL_COL);
                tx.execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS {idx} ON {t} ({gs});
                     CREATE TRIGGER {ins} AFTER INSERT ON {t} FOR EACH ROW BEGIN
                       UPDATE __emu_global SET busy = 1 WHERE id = 1;
                       UPDATE {t} SET {gs} = {G} WHERE {p} = NEW.{p};
                       UPDATE __emu_global SET value = value + 1, busy = 0 WHERE id = 1;
                     END;
                     CREATE TRIGGER {upd} AFTER UPDATE ON {t} FOR EACH ROW
                       WHEN NEW.\"{sc}\" = OLD.\"{sc}\" AND (SELECT busy FROM __emu_global WHERE id = 1) = 0
                     BEGIN
                       UPDATE __emu_global SET busy = 1 WHERE id = 1;
                       UPDATE {t} SET \"{sc}\" = OLD.\"{sc}\" + 1,
                         {gs} = CASE WHEN NEW.{gs} IS OLD.{gs} THEN {G} ELSE NEW.{gs} END
                         WHERE {p} = NEW.{p};
                       UPDATE __emu_global SET value = value + (NEW.{gs} IS OLD.{gs}), busy = 0 WHERE id = 1;
                     END;
                     CREATE TRIGGER {del} AFTER DELETE ON {t} FOR EACH ROW BEGIN
                       INSERT INTO {dr} (\"ID\", \"__PrimaryKey\", \"__Stamp\", \"__TableName\", \"__TableNumber\")
                         VALUES ((SELECT IFNULL(MAX(\"ID\"), 0) + 1 FROM {dr}), CAST(OLD.{p} AS TEXT), {G}, {name}, {num});
                       UPDATE __emu_global SET value = value + 1 WHERE id = 1;
                     END;",
                    idx = q(&format!("__emu_gs_{}", dc.name)),
                    ins = trig("ins"),
                    upd = trig("upd"),
                    del = trig("del"),
                    dr = q(DELETED_TABLE),
                    name = sql_str(&dc.name),
                    num = dc.table_number,
                ))?;
            } else {
                tx.execute_batch(&format!(
                    "CREATE TRIGGER {stamp} AFTER UPDATE ON {t} FOR EACH ROW WHEN NEW.\"{sc}\" = OLD.\"{sc}\"
                     BEGIN UPDATE {t} SET \"{sc}\" = OLD.\"{sc}\" + 1 WHERE {p} = NEW.{p}; END;",
                    stamp = trig("stamp"),
                ))?;
            }
        }
        tx.commit()?;
        self.dcs = self.discover()?;
        Ok(())
    }

    fn discover(&self) -> rusqlite::Result<Vec<Dataclass>> {
        let names: Vec<String> = self
            .conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, 7) != 'sqlite_'
                 AND substr(name, 1, 6) != '__emu_' ORDER BY rowid",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for name in names {
            let cols: Vec<(String, String, i64)> = self
                .conn
                .prepare(&format!("SELECT name, type, pk FROM pragma_table_info({})", sql_str(&name)))?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let pks: Vec<&(String, String, i64)> = cols.iter().filter(|c| c.2 > 0).collect();
            if pks.len() != 1 {
                continue;
            }
            let indexed: HashSet<String> = self
                .conn
                .prepare(&format!(
                    "SELECT ii.name FROM pragma_index_list({n}) il, pragma_index_info(il.name) ii WHERE ii.seqno = 0",
                    n = sql_str(&name)
                ))?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let has_stamp = cols.iter().any(|c| c.0 == STAMP_COL || c.0 == ALT_STAMP_COL);
            let stamp_col = if cols.iter().any(|c| c.0 == STAMP_COL) {
                STAMP_COL
            } else if cols.iter().any(|c| c.0 == ALT_STAMP_COL || c.0.eq_ignore_ascii_case(STAMP_COL)) {
                ALT_STAMP_COL
            } else {
                STAMP_COL
            }
            .to_string();
            let mut attrs = Vec::new();
            let mut key = None;
            for (cname, decl, pk) in &cols {
                if *cname == stamp_col {
                    continue;
                }
                let Some(t) = AttrType::from_decl(decl) else { continue };
                if *pk > 0 {
                    key = Some(attrs.len());
                }
                attrs.push(Attr { name: cname.clone(), t, indexed: indexed.contains(cname) || *pk > 0 });
            }
            let Some(key) = key else { continue };
            let has_global = attrs.iter().any(|a| a.name == GLOBAL_COL && a.t == AttrType::Long64);
            let has_rowid = self.conn.prepare(&format!("SELECT rowid FROM {} LIMIT 0", q(&name))).is_ok();
            out.push(Dataclass {
                name,
                key,
                attrs,
                table_number: out.len() + 1,
                has_global,
                stamp_col,
                has_stamp,
                has_rowid,
            });
        }
        Ok(out)
    }

    pub fn dataclass(&self, name: &str) -> Option<&Dataclass> {
        self.dcs.iter().find(|d| d.name == name)
    }

    /// The datastore's current global stamp (`docs/ORDA/global-stamp.md`).
    pub fn global_stamp(&self) -> rusqlite::Result<i64> {
        self.conn.prepare_cached("SELECT value FROM __emu_global WHERE id = 1")?.query_row([], |r| r.get(0))
    }

    /// The `__KEY` text of a stored key value.
    pub fn key_text(dc: &Dataclass, v: ValueRef<'_>) -> String {
        match to_wire(dc.key_attr().t, v) {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// A filter that finds the entity whose `__KEY` is `key`. Text keys match as 4D compares text.
    pub fn key_filter(&self, dc: &Dataclass, key: &str) -> Option<SqlFilter> {
        let a = dc.key_attr();
        let k = key.trim();
        let k = k.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(k);
        let arg = if a.t.is_integer() {
            Sql::Integer(k.parse().ok()?)
        } else if a.t == AttrType::Number {
            Sql::Real(k.parse().ok()?)
        } else {
            Sql::Text(k.to_string())
        };
        let coll = if a.t.is_text() && !self.byte_order { " COLLATE EMU_FOLD" } else { "" };
        Some(SqlFilter { sql: format!("{} = ?{coll}", q(&a.name)), args: vec![arg] })
    }

    fn select_list(dc: &Dataclass, attrs: &[usize]) -> String {
        let mut s = format!("{}, {}", q(&dc.key_attr().name), q(&dc.stamp_col));
        for &i in attrs {
            s.push_str(", ");
            s.push_str(&q(&dc.attrs[i].name));
        }
        s
    }

    fn entity(&self, dc: &Dataclass, attrs: &[usize], row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
        let key = Self::key_text(dc, row.get_ref(0)?);
        let mut o = Map::new();
        o.insert("__KEY".into(), Value::String(key.clone()));
        o.insert("__TIMESTAMP".into(), Value::String(self.timestamp.clone()));
        o.insert("__STAMP".into(), Value::Number(row.get::<_, i64>(1)?.into()));
        for (n, &i) in attrs.iter().enumerate() {
            let a = &dc.attrs[i];
            let v = row.get_ref(n + 2)?;
            let w = match a.t {
                AttrType::Image | AttrType::Blob if !matches!(v, ValueRef::Null) => {
                    crate::values::deferred(&dc.name, &key, &a.name, a.t)
                }
                _ => to_wire(a.t, v),
            };
            o.insert(a.name.clone(), w);
        }
        Ok(Value::Object(o))
    }

    fn where_clause(f: &SqlFilter) -> String {
        if f.sql.is_empty() { String::new() } else { format!(" WHERE {}", f.sql) }
    }

    pub fn count(&self, dc: &Dataclass, f: &SqlFilter) -> rusqlite::Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}{}", q(&dc.name), Self::where_clause(f));
        self.conn.prepare_cached(&sql)?.query_row(params_from_iter(f.args.iter()), |r| r.get(0))
    }

    /// `ORDER BY` text for `$orderby` ("a ASC, b DESC", `docs/REST/$orderby.md`).
    pub fn order_by(&self, dc: &Dataclass, text: Option<&str>) -> Result<String, ApiError> {
        let Some(text) = text else { return Ok(String::new()) };
        let t = text.trim();
        let t = if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') { &t[1..t.len() - 1] } else { t };
        let mut parts = Vec::new();
        let mut has_key = false;
        let mut last_desc = false;
        for term in t.split(',') {
            let words: Vec<&str> = term.split_whitespace().collect();
            let (name, desc) = match words.as_slice() {
                [n] => (*n, false),
                [n, d] if d.eq_ignore_ascii_case("asc") => (*n, false),
                [n, d] if d.eq_ignore_ascii_case("desc") => (*n, true),
                _ => return Err(ApiError::one(500, error::BAD_ORDERBY, format!("cannot read $orderby \"{text}\""))),
            };
            let Some(i) = dc.attr_index(name) else { return Err(ApiError::unknown_attribute(name, &dc.name)) };
            let a = &dc.attrs[i];
            has_key |= i == dc.key;
            last_desc = desc;
            let coll = if a.t.is_text() && !self.byte_order { " COLLATE EMU_SORT" } else { "" };
            parts.push(format!("{}{coll} {}", q(&a.name), if desc { "DESC" } else { "ASC" }));
        }
        if !has_key {
            // 4D does not say how it orders ties; the emulator keeps them in record order
            // (SQLite's rowid; the key in a WITHOUT ROWID table), in the direction of the last
            // term, so an index on that attribute serves the whole order: `stamp DESC` with
            // `$top=1` reads one index entry instead of sorting the table.
            let tie = if dc.has_rowid { "rowid".to_string() } else { q(&dc.key_attr().name) };
            parts.push(format!("{tie} {}", if last_desc { "DESC" } else { "ASC" }));
        }
        Ok(format!(" ORDER BY {}", parts.join(", ")))
    }

    pub fn read(
        &self,
        dc: &Dataclass,
        f: &SqlFilter,
        order: &str,
        attrs: &[usize],
        top: usize,
        skip: usize,
    ) -> rusqlite::Result<Vec<Value>> {
        let sql = format!(
            "SELECT {} FROM {}{}{order} LIMIT ? OFFSET ?",
            Self::select_list(dc, attrs),
            q(&dc.name),
            Self::where_clause(f)
        );
        let mut args = f.args.clone();
        args.push(Sql::Integer(top as i64));
        args.push(Sql::Integer(skip as i64));
        let mut st = self.conn.prepare_cached(&sql)?;
        let mut rows = st.query(params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(self.entity(dc, attrs, r)?);
        }
        Ok(out)
    }

    fn read_one(&self, dc: &Dataclass, f: &SqlFilter) -> rusqlite::Result<Option<Value>> {
        let all: Vec<usize> = (0..dc.attrs.len()).collect();
        Ok(self.read(dc, f, "", &all, 1, 0)?.into_iter().next())
    }

    /// `$compute` (`docs/REST/$compute.md`): one value, or with `$all` an object per attribute.
    pub fn compute(&self, dc: &Dataclass, attr: usize, what: &str, f: &SqlFilter) -> Result<Value, ApiError> {
        let a = &dc.attrs[attr];
        let col = q(&a.name);
        let coll = if a.t.is_text() && !self.byte_order { " COLLATE EMU_SORT" } else { "" };
        let numeric = a.t.is_numeric();
        let sql = format!(
            "SELECT COUNT({col}), MIN({col}{coll}), MAX({col}{coll}), {}, {} FROM {}{}",
            if numeric { format!("SUM({col})") } else { "NULL".into() },
            if numeric { format!("AVG({col})") } else { "NULL".into() },
            q(&dc.name),
            Self::where_clause(f)
        );
        let (count, min, max, sum, avg) =
            self.conn.prepare_cached(&sql)?.query_row(params_from_iter(f.args.iter()), |r| {
                let sum = match r.get_ref(3)? {
                    ValueRef::Null => json!(0),
                    v => to_wire(if a.t == AttrType::Duration { AttrType::Long64 } else { a.t }, v),
                };
                Ok((
                    r.get::<_, i64>(0)?,
                    to_wire(a.t, r.get_ref(1)?),
                    to_wire(a.t, r.get_ref(2)?),
                    sum,
                    to_wire(AttrType::Number, r.get_ref(4)?),
                ))
            })?;
        let need_numeric = || {
            ApiError::one(
                500,
                error::BAD_PARAMETER,
                format!("$compute={what} needs a numeric attribute, \"{}\" is {}", a.name, a.t.name()),
            )
        };
        Ok(match what {
            "count" => json!(count),
            "min" => min,
            "max" => max,
            "sum" if numeric => sum,
            "average" if numeric => avg,
            "sum" | "average" => return Err(need_numeric()),
            "$all" => {
                let mut o = Map::new();
                o.insert("count".into(), json!(count));
                if numeric {
                    o.insert("sum".into(), sum);
                    o.insert("average".into(), avg);
                }
                o.insert("min".into(), min);
                o.insert("max".into(), max);
                let mut outer = Map::new();
                outer.insert(a.name.clone(), Value::Object(o));
                Value::Object(outer)
            }
            other => {
                return Err(ApiError::one(
                    500,
                    error::BAD_PARAMETER,
                    format!("unknown $compute \"{other}\" (count, min, max, sum, average, $all)"),
                ));
            }
        })
    }

    /// `$method=update` (`docs/REST/$method.md`, `docs/REST/$atomic_$atonce.md`). Each input
    /// entity gives one output entity, in input order.
    pub fn save(
        &mut self,
        dc: &Dataclass,
        items: &[Value],
        atomic: bool,
        locks: &HashSet<String>,
    ) -> Result<Vec<Value>, ApiError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut out = Vec::with_capacity(items.len());
        let mut old_stamps = Vec::with_capacity(items.len());
        let mut failed = false;
        for (n, it) in items.iter().enumerate() {
            if !atomic {
                self.conn.execute_batch("SAVEPOINT emu_entity")?;
            }
            let (res, old) = match self.save_one(dc, n, it, locks) {
                Ok(v) => v,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            };
            let ok = res.get("__ERROR").is_none();
            if !atomic {
                self.conn.execute_batch(if ok {
                    "RELEASE emu_entity"
                } else {
                    "ROLLBACK TO emu_entity; RELEASE emu_entity"
                })?;
            }
            failed |= !ok;
            out.push(res);
            old_stamps.push(old);
        }
        if atomic && failed {
            self.conn.execute_batch("ROLLBACK")?;
            // Nothing was saved: the entities that passed keep their previous stamp.
            for (e, old) in out.iter_mut().zip(old_stamps) {
                if e.get("__ERROR").is_none() {
                    if let Some(o) = e.as_object_mut() {
                        match old {
                            Some(s) => o.insert("__STAMP".into(), json!(s)),
                            None => o.remove("__STAMP"),
                        };
                    }
                }
            }
        } else {
            self.conn.execute_batch("COMMIT")?;
        }
        Ok(out)
    }

    /// Saves one entity. Returns the answer entity and its stamp before the save.
    fn save_one(
        &self,
        dc: &Dataclass,
        n: usize,
        it: &Value,
        locks: &HashSet<String>,
    ) -> Result<(Value, Option<i64>), ApiError> {
        let Some(obj) = it.as_object() else {
            let e = json!({"__ERROR": [item("an entity must be a JSON object", error::BAD_BODY)]});
            return Ok((e, None));
        };
        let cannot_save = || {
            item(
                format!("The entity# {n} of the datastore class \"{}\" cannot be saved", dc.name),
                error::CANNOT_SAVE_ENTITY,
            )
        };
        let with_errors = |base: Option<Value>, status: Option<(i64, &str)>, errs: Vec<Value>| {
            let mut o = match base {
                Some(Value::Object(o)) => o,
                _ => obj.clone(),
            };
            if let Some((s, text)) = status {
                o.insert("__STATUS".into(), json!({"status": s, "statusText": text, "success": false}));
            }
            o.insert("__ERROR".into(), Value::Array(errs));
            Value::Object(o)
        };

        // Values to write, checked against the attribute types.
        let mut sets: Vec<(usize, Sql)> = Vec::new();
        let mut bad = Vec::new();
        for (k, v) in obj {
            match dc.attr_index(k) {
                Some(i) if dc.attrs[i].name == GLOBAL_COL && dc.has_global => {} // kept by the server
                Some(i) => match from_wire(dc.attrs[i].t, v, self.time_unit) {
                    Ok(s) => sets.push((i, s)),
                    Err(m) => bad.push(item(format!("{k}: {m}"), error::VALIDATION_VALUE)),
                },
                None if k.starts_with("__") || k == "uri" => {}
                None => bad.push(item(
                    format!("Cannot find the attribute \"{k}\" in the \"{}\" dataclass", dc.name),
                    error::VALIDATION_VALUE,
                )),
            }
        }
        let key_given = obj.get("__KEY").filter(|v| !v.is_null());
        if let Some(kv) = key_given {
            // Update.
            let key = match kv {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let found = match self.key_filter(dc, &key) {
                Some(f) => self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {}, {} FROM {} WHERE {} LIMIT 1",
                        q(&dc.key_attr().name),
                        q(&dc.stamp_col),
                        q(&dc.name),
                        f.sql
                    ))?
                    .query_row(params_from_iter(f.args.iter()), |r| Ok((r.get::<_, Sql>(0)?, r.get::<_, i64>(1)?)))
                    .map(Some)
                    .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?,
                None => None,
            };
            let Some((pk, stamp)) = found else {
                let e = item(
                    format!("Cannot find entity with \"{key}\" key in the \"{}\" dataclass", dc.name),
                    error::ENTITY_NOT_FOUND,
                );
                return Ok((with_errors(None, Some((5, "Entity does not exist anymore")), vec![e]), None));
            };
            let pk_filter = SqlFilter { sql: format!("{} = ?", q(&dc.key_attr().name)), args: vec![pk.clone()] };
            let stored = self.read_one(dc, &pk_filter)?;
            let key_text = stored.as_ref().and_then(|s| s["__KEY"].as_str().map(String::from)).unwrap_or(key.clone());
            if locks.contains(&key_text) {
                let e = item(
                    format!("The entity \"{key_text}\" of \"{}\" is locked by another session", dc.name),
                    error::LOCKED,
                );
                return Ok((with_errors(stored, Some((3, "Already locked")), vec![e, cannot_save()]), Some(stamp)));
            }
            if let Some(given) = obj.get("__STAMP").filter(|v| !v.is_null()) {
                if given.as_i64() != Some(stamp) {
                    let errs = vec![
                        item(
                            format!("Given stamp does not match current one for record# {n} of table {}", dc.name),
                            error::STAMP_CHANGED,
                        ),
                        item(
                            format!("Cannot save record {n} in table {} of database", dc.name),
                            error::CANNOT_SAVE_RECORD,
                        ),
                        cannot_save(),
                    ];
                    return Ok((with_errors(stored, Some((2, "Stamp has changed")), errs), Some(stamp)));
                }
            }
            // The key attribute may be repeated, not changed.
            if let Some(pos) = sets.iter().position(|(i, _)| *i == dc.key) {
                let (_, v) = sets.remove(pos);
                if Self::key_text(dc, (&v).into()) != key_text {
                    bad.push(item("the primary key of an entity cannot change", error::VALIDATION_VALUE));
                }
            }
            if !bad.is_empty() {
                bad.push(item("Entity fails validation", error::VALIDATION_ENTITY));
                bad.push(cannot_save());
                return Ok((with_errors(stored, None, bad), Some(stamp)));
            }
            if !sets.is_empty() {
                let assign: Vec<String> = sets.iter().map(|(i, _)| format!("{} = ?", q(&dc.attrs[*i].name))).collect();
                let sql =
                    format!("UPDATE {} SET {} WHERE {} = ?", q(&dc.name), assign.join(", "), q(&dc.key_attr().name));
                let mut args: Vec<Sql> = sets.into_iter().map(|(_, v)| v).collect();
                args.push(pk);
                if let Err(e) = self.conn.prepare_cached(&sql)?.execute(params_from_iter(args.iter())) {
                    let errs = vec![item(format!("SQLite: {e}"), error::DATABASE), cannot_save()];
                    return Ok((with_errors(stored, Some((4, "Other error")), errs), Some(stamp)));
                }
            }
            let mut saved = self.read_one(dc, &pk_filter)?.unwrap_or(Value::Null);
            add_uri(&mut saved, dc);
            return Ok((saved, Some(stamp)));
        }

        // Create.
        if !bad.is_empty() {
            bad.push(item("Entity fails validation", error::VALIDATION_ENTITY));
            bad.push(cannot_save());
            return Ok((with_errors(None, None, bad), None));
        }
        let ka = dc.key_attr();
        let pk = match sets.iter().find(|(i, _)| *i == dc.key) {
            Some((_, Sql::Null)) | None => {
                sets.retain(|(i, _)| *i != dc.key);
                let v = if ka.t.is_integer() {
                    let max: i64 = self
                        .conn
                        .prepare_cached(&format!(
                            "SELECT IFNULL(MAX({k}), 0) + 1 FROM {}",
                            q(&dc.name),
                            k = q(&ka.name)
                        ))?
                        .query_row([], |r| r.get(0))?;
                    Sql::Integer(max)
                } else if ka.t == AttrType::Uuid {
                    Sql::Text(crate::random_hex())
                } else {
                    let e = item(format!("{}: the primary key needs a value", ka.name), error::VALIDATION_VALUE);
                    return Ok((
                        with_errors(
                            None,
                            None,
                            vec![e, item("Entity fails validation", error::VALIDATION_ENTITY), cannot_save()],
                        ),
                        None,
                    ));
                };
                sets.push((dc.key, v.clone()));
                v
            }
            Some((_, v)) => v.clone(),
        };
        let cols: Vec<String> = sets.iter().map(|(i, _)| q(&dc.attrs[*i].name)).collect();
        let marks = vec!["?"; sets.len()].join(", ");
        let sql = format!("INSERT INTO {} ({}) VALUES ({marks})", q(&dc.name), cols.join(", "));
        let args: Vec<Sql> = sets.into_iter().map(|(_, v)| v).collect();
        if let Err(e) = self.conn.prepare_cached(&sql)?.execute(params_from_iter(args.iter())) {
            let dup = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation
                && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE));
            let first = if dup {
                item(
                    format!("Duplicated key {} in the \"{}\" dataclass", Self::key_text(dc, (&pk).into()), dc.name),
                    error::DUPLICATE_KEY,
                )
            } else {
                item(format!("SQLite: {e}"), error::DATABASE)
            };
            return Ok((with_errors(None, Some((4, "Other error")), vec![first, cannot_save()]), None));
        }
        let pk_filter = SqlFilter { sql: format!("{} = ?", q(&ka.name)), args: vec![pk] };
        let mut saved = self.read_one(dc, &pk_filter)?.unwrap_or(Value::Null);
        add_uri(&mut saved, dc);
        Ok((saved, None))
    }

    /// `$method=delete` on a selection (`docs/REST/$method.md`). Not atomic: the deletion stops
    /// at the first locked entity, in key order, and reports it.
    pub fn delete(&mut self, dc: &Dataclass, f: &SqlFilter, locks: &HashSet<String>) -> Result<Value, ApiError> {
        let t = q(&dc.name);
        let k = q(&dc.key_attr().name);
        if locks.is_empty() {
            let sql = format!("DELETE FROM {t}{}", Self::where_clause(f));
            self.conn.prepare_cached(&sql)?.execute(params_from_iter(f.args.iter()))?;
            return Ok(json!({"ok": true}));
        }
        let keys: Vec<Sql> = self
            .conn
            .prepare_cached(&format!("SELECT {k} FROM {t}{} ORDER BY {k}", Self::where_clause(f)))?
            .query_map(params_from_iter(f.args.iter()), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let tx = self.conn.transaction()?;
        let mut stopped = None;
        for key in keys {
            let text = Self::key_text(dc, (&key).into());
            if locks.contains(&text) {
                stopped = Some(text);
                break;
            }
            tx.prepare_cached(&format!("DELETE FROM {t} WHERE {k} = ?"))?.execute([key])?;
        }
        tx.commit()?;
        Ok(match stopped {
            None => json!({"ok": true}),
            Some(key) => json!({
                "__STATUS": {"status": 3, "statusText": "Already locked", "success": false, "lockKindText": "Locked by session"},
                "__ERROR": [
                    item(format!("The entity \"{key}\" of \"{}\" is locked by another session", dc.name), error::LOCKED),
                    item(format!("The entity \"{key}\" of the datastore class \"{}\" cannot be deleted", dc.name), error::CANNOT_SAVE_ENTITY),
                ],
            }),
        })
    }
}

fn add_uri(e: &mut Value, dc: &Dataclass) {
    if let Some(o) = e.as_object_mut() {
        let key = o.get("__KEY").and_then(Value::as_str).unwrap_or_default().to_string();
        // After __STAMP, as in the docs' example answers.
        let mut n = Map::new();
        for (k, v) in std::mem::take(o) {
            let after_stamp = k == "__STAMP";
            n.insert(k, v);
            if after_stamp {
                n.insert("uri".into(), json!(format!("/rest/{}({key})", dc.name)));
            }
        }
        *o = n;
    }
}

fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_collation("EMU_FOLD", fold::cmp_fold)?;
    conn.create_collation("EMU_SORT", fold::cmp_sort)?;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("emu_like", 3, flags, |ctx| {
        let (v, p, bo) = (text_arg(ctx, 0), text_arg(ctx, 1), ctx.get::<bool>(2)?);
        Ok(match (v, p) {
            (Some(v), Some(p)) => Some(fold::wildcard_match(&v, &p, bo)),
            _ => None,
        })
    })?;
    conn.create_scalar_function("emu_begin", 3, flags, |ctx| {
        let (v, p, bo) = (text_arg(ctx, 0), text_arg(ctx, 1), ctx.get::<bool>(2)?);
        Ok(match (v, p) {
            (Some(v), Some(p)) => Some(fold::begins_with(&v, &p, bo)),
            _ => None,
        })
    })?;
    Ok(())
}

/// A function argument as text (a string column may hold numbers, see README "Storage").
fn text_arg(ctx: &rusqlite::functions::Context<'_>, i: usize) -> Option<String> {
    match ctx.get_raw(i) {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        _ => None,
    }
}
