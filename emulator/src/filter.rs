//! The `$filter` language and its translation to SQL with bound parameters.
//!
//! Sources: `docs/REST/$filter.md` (`attribute comparator value`, `AND`/`OR`/`EXCEPT`, `$params`
//! with `\u0027`/`\u0022` escapes, unquoted values such as `lastName=O'Reilly`, object paths) and
//! `docs/API/DataClassClass.md`, query() (the full language: `== === != !== # IS IS NOT > >= < <=`,
//! `begin`, `IN`, `&`/`&&`/`and`, `|`/`||`/`or`, parentheses, `NOT`, `null`, `:n` placeholders,
//! the `@` wildcard on `=` for text, exact comparison with `===`/`IS`).
//!
//! Decisions of the emulator (documented in its README):
//! - `AND` binds tighter than `OR` and `EXCEPT`, which share a level and run left to right.
//! - `NOT x`, `a != v` and `a EXCEPT b` are set complements, so entities whose attribute is NULL
//!   are part of the result.
//! - Values are always bound, never spliced into the SQL text.

use rusqlite::types::Value as Sql;
use serde_json::{Number, Value};

use crate::TimeUnit;
use crate::db::Dataclass;
use crate::values::{AttrType, json_i64, parse_date, parse_time};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Exact,
    Ne,
    NotExact,
    Gt,
    Ge,
    Lt,
    Le,
    Begin,
    In,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Lit(Value),
    Param(usize),
    List(Vec<Operand>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Except(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp { attr: String, op: Op, value: Operand },
}

/// A filter that cannot be used. `unknown_attribute` selects 4D's 1500/1804 codes; anything else
/// is the emulator's own bad-filter code.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterError {
    pub message: String,
    pub unknown_attribute: Option<String>,
}

impl FilterError {
    fn syntax(message: impl Into<String>) -> Self {
        FilterError { message: message.into(), unknown_attribute: None }
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

/// Parses a `$filter` value (already percent-decoded). Surrounding double quotes are removed.
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    let t = text.trim();
    let t = if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') { &t[1..t.len() - 1] } else { t };
    let mut p = Parser { s: t, pos: 0 };
    let e = p.or_level()?;
    p.ws();
    if p.pos < p.s.len() {
        return Err(FilterError::syntax(format!("unexpected text at position {}: \"{}\"", p.pos, &p.s[p.pos..])));
    }
    Ok(e)
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn ws(&mut self) {
        while let Some(c) = self.rest().chars().next() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    /// A case-insensitive keyword followed by a non-identifier character.
    fn keyword(&mut self, kw: &str) -> bool {
        let r = self.rest();
        if r.len() >= kw.len() && r.is_char_boundary(kw.len()) && r[..kw.len()].eq_ignore_ascii_case(kw) {
            let next = r[kw.len()..].chars().next();
            if next.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                self.pos += kw.len();
                return true;
            }
        }
        false
    }

    fn symbol(&mut self, sym: &str) -> bool {
        if self.rest().starts_with(sym) {
            self.pos += sym.len();
            true
        } else {
            false
        }
    }

    fn or_level(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and_level()?;
        loop {
            self.ws();
            if self.symbol("||") || self.symbol("|") || self.keyword("OR") {
                let right = self.and_level()?;
                left = Expr::Or(Box::new(left), Box::new(right));
            } else if self.keyword("EXCEPT") {
                let right = self.and_level()?;
                left = Expr::Except(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and_level(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.term()?;
        loop {
            self.ws();
            if self.symbol("&&") || self.symbol("&") || self.keyword("AND") {
                let right = self.term()?;
                left = Expr::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn term(&mut self) -> Result<Expr, FilterError> {
        self.ws();
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.term()?)));
        }
        if self.symbol("(") {
            let e = self.or_level()?;
            self.ws();
            if !self.symbol(")") {
                return Err(FilterError::syntax(format!("missing ')' at position {}", self.pos)));
            }
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let start = self.pos;
        let attr_len = self
            .rest()
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.' || *c == '$'))
            .map(|(i, _)| i)
            .unwrap_or(self.rest().len());
        if attr_len == 0 {
            return Err(FilterError::syntax(format!("expected an attribute at position {start}")));
        }
        let attr = self.rest()[..attr_len].to_string();
        self.pos += attr_len;
        self.ws();
        let op = if self.symbol("===") {
            Op::Exact
        } else if self.symbol("!==") {
            Op::NotExact
        } else if self.symbol("==") || self.symbol("=") {
            Op::Eq
        } else if self.symbol("!=") || self.symbol("#") {
            Op::Ne
        } else if self.symbol(">=") {
            Op::Ge
        } else if self.symbol("<=") {
            Op::Le
        } else if self.symbol(">") {
            Op::Gt
        } else if self.symbol("<") {
            Op::Lt
        } else if self.keyword("begin") {
            Op::Begin
        } else if self.keyword("IN") {
            Op::In
        } else if self.keyword("IS") {
            self.ws();
            if self.keyword("NOT") { Op::NotExact } else { Op::Exact }
        } else {
            return Err(FilterError::syntax(format!(
                "expected a comparator after \"{attr}\" at position {}",
                self.pos
            )));
        };
        self.ws();
        let value = self.operand()?;
        Ok(Expr::Cmp { attr, op, value })
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        let r = self.rest();
        if let Some(stripped) = r.strip_prefix(':') {
            let n = stripped.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(FilterError::syntax(format!("bad placeholder at position {}", self.pos)));
            }
            let idx: usize = stripped[..n].parse().map_err(|_| FilterError::syntax("bad placeholder"))?;
            if idx == 0 {
                return Err(FilterError::syntax("placeholders start at :1"));
            }
            self.pos += 1 + n;
            return Ok(Operand::Param(idx));
        }
        if let Some(q) = r.chars().next().filter(|c| *c == '\'' || *c == '"') {
            return self.quoted(q).map(|s| Operand::Lit(Value::String(s)));
        }
        if self.symbol("[") {
            let mut items = Vec::new();
            loop {
                self.ws();
                if self.symbol("]") {
                    break;
                }
                items.push(self.operand()?);
                self.ws();
                if self.symbol(",") {
                    continue;
                }
                if !self.symbol("]") {
                    return Err(FilterError::syntax(format!("missing ']' at position {}", self.pos)));
                }
                break;
            }
            return Ok(Operand::List(items));
        }
        for (kw, v) in [("null", Value::Null), ("true", Value::Bool(true)), ("false", Value::Bool(false))] {
            if self.keyword(kw) {
                return Ok(Operand::Lit(v));
            }
        }
        // A bare word: up to whitespace or ')' (or ',' and ']' inside a list).
        let len = r.char_indices().find(|(_, c)| c.is_whitespace() || matches!(c, ')' | ',' | ']')).map(|(i, _)| i);
        let len = len.unwrap_or(r.len());
        if len == 0 {
            return Err(FilterError::syntax(format!("expected a value at position {}", self.pos)));
        }
        let word = &r[..len];
        self.pos += len;
        if let Ok(n) = serde_json::from_str::<Number>(word) {
            return Ok(Operand::Lit(Value::Number(n)));
        }
        Ok(Operand::Lit(Value::String(word.to_string())))
    }

    /// A quoted string; the quote doubled or a JSON-style `\` escape puts it inside.
    fn quoted(&mut self, q: char) -> Result<String, FilterError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.rest().chars().next() else {
                return Err(FilterError::syntax(format!("unterminated string starting at position {start}")));
            };
            self.pos += c.len_utf8();
            if c == q {
                if self.rest().starts_with(q) {
                    self.pos += 1;
                    out.push(q);
                    continue;
                }
                return Ok(out);
            }
            if c == '\\' {
                let r = self.rest();
                if let Some(hex) = r.strip_prefix('u').and_then(|h| h.get(..4)) {
                    if let Some(ch) = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
                        out.push(ch);
                        self.pos += 5;
                        continue;
                    }
                }
                if let Some(n) = r.chars().next() {
                    out.push(n);
                    self.pos += n.len_utf8();
                    continue;
                }
            }
            out.push(c);
        }
    }
}

/// Parses `$params`: a JSON array, optionally wrapped in single quotes (`docs/REST/$filter.md`).
pub fn parse_params(text: &str) -> Result<Vec<Value>, FilterError> {
    let t = text.trim();
    let t = if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') { &t[1..t.len() - 1] } else { t };
    match serde_json::from_str::<Value>(t) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(_) => Err(FilterError::syntax("$params must be a JSON array")),
        Err(e) => Err(FilterError::syntax(format!("$params is not JSON: {e}"))),
    }
}

/// SQL for a filter: a `WHERE` fragment and its bound values.
#[derive(Debug, Default, Clone)]
pub struct SqlFilter {
    pub sql: String,
    pub args: Vec<Sql>,
}

pub struct Translator<'a> {
    pub dc: &'a Dataclass,
    pub params: &'a [Value],
    pub byte_order: bool,
    pub time_unit: TimeUnit,
}

/// The SQL name of a column, double-quoted.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Translator<'_> {
    pub fn translate(&self, e: &Expr) -> Result<SqlFilter, FilterError> {
        let mut out = SqlFilter::default();
        self.expr(e, &mut out)?;
        Ok(out)
    }

    fn expr(&self, e: &Expr, out: &mut SqlFilter) -> Result<(), FilterError> {
        match e {
            Expr::And(a, b) | Expr::Or(a, b) => {
                out.sql.push('(');
                self.expr(a, out)?;
                out.sql.push_str(if matches!(e, Expr::And(..)) { " AND " } else { " OR " });
                self.expr(b, out)?;
                out.sql.push(')');
            }
            Expr::Except(a, b) => {
                out.sql.push('(');
                self.expr(a, out)?;
                out.sql.push_str(" AND NOT IFNULL(");
                self.expr(b, out)?;
                out.sql.push_str(", 0))");
            }
            Expr::Not(a) => {
                out.sql.push_str("(NOT IFNULL(");
                self.expr(a, out)?;
                out.sql.push_str(", 0))");
            }
            Expr::Cmp { attr, op, value } => self.cmp(attr, *op, value, out)?,
        }
        Ok(())
    }

    fn resolve(&self, v: &Operand) -> Result<Value, FilterError> {
        match v {
            Operand::Lit(v) => Ok(v.clone()),
            Operand::Param(i) => self
                .params
                .get(i - 1)
                .cloned()
                .ok_or_else(|| FilterError::syntax(format!("placeholder :{i} has no value in $params"))),
            Operand::List(items) => {
                items.iter().map(|i| self.resolve(i)).collect::<Result<Vec<_>, _>>().map(Value::Array)
            }
        }
    }

    fn cmp(&self, attr: &str, op: Op, value: &Operand, out: &mut SqlFilter) -> Result<(), FilterError> {
        let (base, path) = match attr.split_once('.') {
            Some((b, p)) => (b, Some(p)),
            None => (attr, None),
        };
        let Some(a) = self.dc.attr(base) else {
            return Err(FilterError {
                message: format!("unknown attribute \"{attr}\" in dataclass \"{}\"", self.dc.name),
                unknown_attribute: Some(attr.to_string()),
            });
        };
        let value = self.resolve(value)?;
        // Object paths: json_extract on the object column; the value decides how to compare.
        let (col, t) = match path {
            Some(p) if a.t == AttrType::Object => {
                out.args.push(Sql::Text(format!("$.{p}")));
                let t = match &value {
                    Value::String(_) => AttrType::String,
                    Value::Bool(_) => AttrType::Bool,
                    Value::Array(items) if items.iter().all(Value::is_string) => AttrType::String,
                    _ => AttrType::Number,
                };
                (format!("json_extract({}, ?)", ident(&a.name)), t)
            }
            Some(_) => {
                return Err(FilterError {
                    message: format!("\"{attr}\": \"{base}\" is not an object attribute"),
                    unknown_attribute: Some(attr.to_string()),
                });
            }
            None => (ident(&a.name), a.t),
        };
        let fold = t.is_text() && !self.byte_order;
        let coll = if fold { " COLLATE EMU_FOLD" } else { "" };

        if op == Op::In {
            let Value::Array(items) = value else {
                return Err(FilterError::syntax(format!("IN on \"{attr}\" needs a list (a JSON array in $params)")));
            };
            if items.is_empty() {
                out.sql.push('0');
                return Ok(());
            }
            let mut vals = Vec::with_capacity(items.len());
            for v in &items {
                match self.convert(t, attr, v)? {
                    Some(s) => vals.push(s),
                    None => continue,
                }
            }
            if vals.is_empty() {
                out.sql.push('0');
                return Ok(());
            }
            out.sql.push_str(&format!("({col}{coll} IN ("));
            for (i, v) in vals.into_iter().enumerate() {
                if i > 0 {
                    out.sql.push(',');
                }
                out.sql.push('?');
                out.args.push(v);
            }
            out.sql.push_str("))");
            return Ok(());
        }

        // `= null` / `!= null`: the literal null tests for NULL (docs/API/DataClassClass.md).
        if value.is_null() {
            match op {
                Op::Eq | Op::Exact => out.sql.push_str(&format!("({col} IS NULL)")),
                Op::Ne | Op::NotExact => out.sql.push_str(&format!("({col} IS NOT NULL)")),
                _ => out.sql.push('0'),
            }
            return Ok(());
        }
        let Some(arg) = self.convert(t, attr, &value)? else {
            // The empty date compares as NULL.
            match op {
                Op::Eq | Op::Exact => out.sql.push_str(&format!("({col} IS NULL)")),
                Op::Ne | Op::NotExact => out.sql.push_str(&format!("({col} IS NOT NULL)")),
                _ => out.sql.push('0'),
            }
            return Ok(());
        };
        let wildcard = t.is_text() && matches!(&arg, Sql::Text(s) if s.contains('@'));
        let bo = self.byte_order as i64;
        match op {
            Op::Eq | Op::Ne if wildcard => {
                let neg = op == Op::Ne;
                out.sql.push_str(&format!("({}IFNULL(emu_like({col}, ?, {bo}), 0))", if neg { "NOT " } else { "" }));
                out.args.push(arg);
            }
            Op::Eq | Op::Exact => {
                out.sql.push_str(&format!("({col} = ?{coll})"));
                out.args.push(arg);
            }
            Op::Ne | Op::NotExact => {
                out.sql.push_str(&format!("(NOT IFNULL({col} = ?{coll}, 0))"));
                out.args.push(arg);
            }
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                let sym = match op {
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Lt => "<",
                    _ => "<=",
                };
                out.sql.push_str(&format!("({col} {sym} ?{coll})"));
                out.args.push(arg);
            }
            Op::Begin => {
                out.sql.push_str(&format!("(IFNULL(emu_begin({col}, ?, {bo}), 0))"));
                out.args.push(arg);
            }
            Op::In => unreachable!(),
        }
        Ok(())
    }

    /// A filter value converted for a comparison with an attribute of type `t`.
    /// `Ok(None)` stands for the empty date.
    fn convert(&self, t: AttrType, attr: &str, v: &Value) -> Result<Option<Sql>, FilterError> {
        let bad = || FilterError::syntax(format!("value {v} cannot be compared with \"{attr}\" ({})", t.name()));
        Ok(Some(match (t, v) {
            (_, Value::Null) => Sql::Null,
            (t, Value::Number(n)) if t.is_integer() || t == AttrType::Duration => match json_i64(n) {
                Some(i) => Sql::Integer(i),
                None => Sql::Real(n.as_f64().ok_or_else(bad)?),
            },
            (t, Value::String(s)) if t.is_integer() || t == AttrType::Number => {
                let n: Number = serde_json::from_str(s.trim()).map_err(|_| bad())?;
                return self.convert(t, attr, &Value::Number(n));
            }
            (AttrType::Number, Value::Number(n)) => match n.as_i64() {
                Some(i) => Sql::Integer(i),
                None => Sql::Real(n.as_f64().ok_or_else(bad)?),
            },
            (AttrType::Duration, Value::String(s)) => Sql::Integer(parse_time(s, self.time_unit).ok_or_else(bad)?),
            (AttrType::String | AttrType::Uuid, Value::String(s)) => Sql::Text(s.clone()),
            (AttrType::String | AttrType::Uuid, Value::Number(n)) => Sql::Text(n.to_string()),
            (AttrType::Bool, Value::Bool(b)) => Sql::Integer(*b as i64),
            (AttrType::Bool, Value::Number(n)) => Sql::Integer((json_i64(n).ok_or_else(bad)? != 0) as i64),
            (AttrType::Bool, Value::String(s)) if s.eq_ignore_ascii_case("true") => Sql::Integer(1),
            (AttrType::Bool, Value::String(s)) if s.eq_ignore_ascii_case("false") => Sql::Integer(0),
            (AttrType::Date, Value::String(s)) => match parse_date(s).map_err(|_| bad())? {
                Some(d) => Sql::Text(d),
                None => return Ok(None),
            },
            _ => return Err(bad()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Attr, Dataclass};
    use serde_json::json;

    fn dc() -> Dataclass {
        let a = |n: &str, t| Attr { name: n.to_string(), t, indexed: false };
        Dataclass {
            name: "People".into(),
            key: 0,
            attrs: vec![
                a("ID", AttrType::Long),
                a("name", AttrType::String),
                a("born", AttrType::Date),
                a("ok", AttrType::Bool),
                a("info", AttrType::Object),
            ],
            table_number: 1,
            has_global: false,
            stamp_col: "__STAMP".into(),
            has_stamp: true,
            has_rowid: true,
        }
    }

    fn sql(filter: &str, params: &str, byte_order: bool) -> Result<SqlFilter, FilterError> {
        let d = dc();
        let params = if params.is_empty() { vec![] } else { parse_params(params)? };
        let t = Translator { dc: &d, params: &params, byte_order, time_unit: TimeUnit::Millis };
        t.translate(&parse(filter)?)
    }

    #[test]
    fn parses_the_language() {
        let e = parse("\"ID > :1 AND ID <= :2\"").unwrap();
        assert_eq!(
            e,
            Expr::And(
                Box::new(Expr::Cmp { attr: "ID".into(), op: Op::Gt, value: Operand::Param(1) }),
                Box::new(Expr::Cmp { attr: "ID".into(), op: Op::Le, value: Operand::Param(2) }),
            )
        );
        // OR binds looser than AND.
        let e = parse("a=1 | b=2 & c=3").unwrap();
        assert!(matches!(e, Expr::Or(_, ref r) if matches!(**r, Expr::And(..))));
        let e = parse("NOT(a=1) EXCEPT b IS NOT null").unwrap();
        assert!(matches!(e, Expr::Except(ref l, ref r)
            if matches!(**l, Expr::Not(_)) && matches!(**r, Expr::Cmp { op: Op::NotExact, value: Operand::Lit(Value::Null), .. })));
        let e = parse("lastName=O'Reilly").unwrap();
        assert_eq!(e, Expr::Cmp { attr: "lastName".into(), op: Op::Eq, value: Operand::Lit(json!("O'Reilly")) });
        let e = parse("name == 'it''s' or name begin \"x\\u0027y\"").unwrap();
        assert!(matches!(e, Expr::Or(ref l, ref r)
            if matches!(**l, Expr::Cmp { value: Operand::Lit(Value::String(ref s)), .. } if s == "it's")
            && matches!(**r, Expr::Cmp { op: Op::Begin, value: Operand::Lit(Value::String(ref s)), .. } if s == "x'y")));
        assert_eq!(
            parse("ID in [1, 2,3]").unwrap(),
            Expr::Cmp {
                attr: "ID".into(),
                op: Op::In,
                value: Operand::List(vec![Operand::Lit(json!(1)), Operand::Lit(json!(2)), Operand::Lit(json!(3))])
            }
        );
        for bad in ["", "ID >", "ID ~ 3", "(ID = 1", "ID = 1 )", "ID = :0", "= 3", "ID = 'open"] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn translates_with_bound_values() {
        let f = sql("ID > :1 AND ID <= :2", "'[1000, 2000]'", false).unwrap();
        // The integer key is compared as is, so SQLite can use its index.
        assert_eq!(f.sql, "((\"ID\" > ?) AND (\"ID\" <= ?))");
        assert_eq!(f.args, vec![Sql::Integer(1000), Sql::Integer(2000)]);

        let f = sql("name = :1", r#"'["O\u0027Reilly; DROP TABLE x"]'"#, false).unwrap();
        assert_eq!(f.sql, "(\"name\" = ? COLLATE EMU_FOLD)");
        assert_eq!(f.args, vec![Sql::Text("O'Reilly; DROP TABLE x".into())]);

        let f = sql("name = 'jo@'", "", false).unwrap();
        assert_eq!(f.sql, "(IFNULL(emu_like(\"name\", ?, 0), 0))");
        // `===` takes `@` literally.
        let f = sql("name === 'jo@'", "", false).unwrap();
        assert_eq!(f.sql, "(\"name\" = ? COLLATE EMU_FOLD)");
        let f = sql("name = 'x'", "", true).unwrap();
        assert_eq!(f.sql, "(\"name\" = ?)");

        let f = sql("ID IN :1", "[[3,7,9]]", false).unwrap();
        assert_eq!(f.sql, "(\"ID\" IN (?,?,?))");
        assert_eq!(f.args, vec![Sql::Integer(3), Sql::Integer(7), Sql::Integer(9)]);
        let f = sql("ID IN :1", "[[]]", false).unwrap();
        assert_eq!(f.sql, "0");
        let f = sql("name IN :1", r#"[["a","B"]]"#, false).unwrap();
        assert_eq!(f.sql, "(\"name\" COLLATE EMU_FOLD IN (?,?))");

        let f = sql("born = '2020-01-02' OR born = 0!0!0", "", false).unwrap();
        assert_eq!(f.sql, "((\"born\" = ?) OR (\"born\" IS NULL))");
        assert_eq!(f.args, vec![Sql::Text("2020-01-02".into())]);
        let f = sql("ok = true AND name != null", "", false).unwrap();
        assert_eq!(f.sql, "((\"ok\" = ?) AND (\"name\" IS NOT NULL))");
        assert_eq!(f.args, vec![Sql::Integer(1)]);
        let f = sql("info.size > 3", "", false).unwrap();
        assert_eq!(f.sql, "(json_extract(\"info\", ?) > ?)");

        let e = sql("nope = 1", "", false).unwrap_err();
        assert_eq!(e.unknown_attribute.as_deref(), Some("nope"));
        assert!(sql("ID = :2", "[1]", false).is_err());
        assert!(sql("ID = 'abc'", "", false).is_err());
        assert!(sql("ID IN 3", "", false).is_err());
        assert!(parse_params("'{\"a\":1}'").is_err());
    }
}
