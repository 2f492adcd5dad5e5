//! `$filter` and `$params` of 4D REST queries (`REST/$filter.md`; the query language of
//! `API/DataClassClass.md`, `query()`). Every value travels as a `:n` placeholder in
//! `$params`, never spliced into the filter; clauses are joined with `AND` (never `&`, which
//! would end the URL parameter).

use serde_json::Value as Json;

use crate::connector::http::Query;

/// A conjunction of clauses over attributes, with its placeholder values.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    clauses: Vec<String>,
    params: Vec<Json>,
}

impl Filter {
    /// No clause: every entity.
    pub fn new() -> Filter {
        Filter::default()
    }

    /// The next placeholder (`:1`, `:2`, …) holding `value`.
    fn placeholder(&mut self, value: Json) -> String {
        self.params.push(value);
        format!(":{}", self.params.len())
    }

    /// `attribute op :n`; `op` is one of `=`, `===`, `!=`, `>`, `>=`, `<`, `<=`.
    pub fn compare(&mut self, attribute: &str, op: &str, value: Json) -> &mut Filter {
        let p = self.placeholder(value);
        self.clauses.push(format!("{attribute} {op} {p}"));
        self
    }

    /// `attribute = null` (`null` is a literal, never a placeholder value).
    pub fn is_null(&mut self, attribute: &str) -> &mut Filter {
        self.clauses.push(format!("{attribute} = null"));
        self
    }

    /// `attribute != null`.
    pub fn not_null(&mut self, attribute: &str) -> &mut Filter {
        self.clauses.push(format!("{attribute} != null"));
        self
    }

    /// `attribute IN :n` with an array of values.
    pub fn any_of(&mut self, attribute: &str, values: Vec<Json>) -> &mut Filter {
        let p = self.placeholder(Json::Array(values));
        self.clauses.push(format!("{attribute} IN {p}"));
        self
    }

    /// `NOT (attribute IN :n)`.
    pub fn none_of(&mut self, attribute: &str, values: Vec<Json>) -> &mut Filter {
        let p = self.placeholder(Json::Array(values));
        self.clauses.push(format!("NOT ({attribute} IN {p})"));
        self
    }

    /// `(a > :1 OR (a = :1 AND b > :2))`: after `(first, second)` in `(a, b)` order.
    pub fn after_pair(&mut self, a: &str, first: Json, b: &str, second: Json) -> &mut Filter {
        let p1 = self.placeholder(first);
        let p2 = self.placeholder(second);
        self.clauses.push(format!("({a} > {p1} OR ({a} = {p1} AND {b} > {p2}))"));
        self
    }

    /// Adds `$filter` (in double quotes) and `$params` (a JSON array in single quotes, a
    /// single quote inside a value escaped as `\u0027`) to `query`; nothing for no clause.
    pub fn apply(&self, query: Query) -> Query {
        if self.clauses.is_empty() {
            return query;
        }
        let query = query.param("$filter", format!("\"{}\"", self.clauses.join(" AND ")));
        if self.params.is_empty() {
            return query;
        }
        let params = Json::Array(self.params.clone()).to_string().replace('\'', "\\u0027");
        query.param("$params", format!("'{params}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parameters() {
        let mut f = Filter::new();
        f.compare("ID", ">", Json::from(10)).compare("name", "===", Json::from("O'Brien \"x\"")).not_null("stamp");
        let q = f.apply(Query::new());
        let decoded: String = percent_encoding::percent_decode_str(q.as_str()).decode_utf8().unwrap().into();
        assert_eq!(
            decoded,
            "$filter=\"ID > :1 AND name === :2 AND stamp != null\"&$params='[10,\"O\\u0027Brien \\\"x\\\"\"]'"
        );
    }

    #[test]
    fn pairs_and_sets() {
        let mut f = Filter::new();
        f.after_pair("stamp", Json::from(5), "ID", Json::from(7)).none_of("ID", vec![Json::from(1), Json::from(2)]);
        let q = f.apply(Query::new());
        let decoded: String = percent_encoding::percent_decode_str(q.as_str()).decode_utf8().unwrap().into();
        assert_eq!(
            decoded,
            "$filter=\"(stamp > :1 OR (stamp = :1 AND ID > :2)) AND NOT (ID IN :3)\"&$params='[5,7,[1,2]]'"
        );
    }
}
