//! The config's debug switches (`show_sql`, `debug_sql`, `show_save_sql`,
//! `show_sql_values`, `debug_connection_change`) as one value the connectors consult before
//! each statement, REST request and connection change. It owns the log lines' targets and
//! wording; it must not decide what a connector runs, and it never sees a secret: callers
//! pass endpoints already redacted ([`crate::config::Endpoint::describe`]).
//!
//! Statement lines go to the `db_sync::sql` target and connection lines to
//! `db_sync::connection`, both at INFO; `main` shows these two targets at the default log
//! level (they are only emitted when a switch asks for them).

use std::time::Instant;

use super::Side;

/// The `tracing` target of statement lines.
pub const SQL_TARGET: &str = "db_sync::sql";
/// The `tracing` target of connection lines.
pub const CONNECTION_TARGET: &str = "db_sync::connection";

/// Whether a statement reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementKind {
    /// SELECT, counts, schema reads, REST GETs.
    Read,
    /// INSERT, UPDATE, DELETE, upserts, COPY, DDL, 4D REST writes.
    Write,
}

impl StatementKind {
    fn name(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Write => "write",
        }
    }
}

/// Which statements and connection changes are logged (the config's debug switches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqlLog {
    /// `show_sql`: every statement's text.
    pub show_sql: bool,
    /// `debug_sql`: every statement, then its duration, rows and connection.
    pub debug_sql: bool,
    /// `show_save_sql`: write statements only.
    pub show_save_sql: bool,
    /// `show_sql_values`: the bound values with each statement logged.
    pub show_sql_values: bool,
    /// `debug_connection_change`: each connect, disconnect, reconnect and session change.
    pub debug_connection_change: bool,
}

/// What a finished statement returned or changed, for `debug_sql`.
#[derive(Clone, Copy, Debug)]
pub enum Rows {
    /// Rows read.
    Returned(u64),
    /// Rows inserted, updated or deleted.
    Affected(u64),
}

/// A statement that was logged; [`Logged::done`] adds the execution details.
#[must_use = "call done() so debug_sql can report the statement's duration"]
pub struct Logged {
    details: Option<(Instant, Side, String)>,
}

impl Logged {
    /// Nothing logged (the switches are off for this statement).
    pub fn none() -> Logged {
        Logged { details: None }
    }

    /// Logs duration and rows of the statement when `debug_sql` is on.
    pub fn done(self, rows: Rows) {
        if let Some((started, side, session)) = self.details {
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            let (kind, count) = match rows {
                Rows::Returned(n) => ("rows_returned", n),
                Rows::Affected(n) => ("rows_affected", n),
            };
            tracing::info!(
                target: SQL_TARGET,
                side = side.name(),
                connection = %session,
                duration_ms = (duration_ms * 1000.0).round() / 1000.0,
                rows = count,
                "statement done: {count} {} in {duration_ms:.3} ms",
                kind.replace('_', " ")
            );
        }
    }
}

impl SqlLog {
    /// Whether any statement of `kind` is logged.
    pub fn wants(&self, kind: StatementKind) -> bool {
        self.show_sql || self.debug_sql || (kind == StatementKind::Write && self.show_save_sql)
    }

    /// Whether any statement at all may be logged.
    pub fn any_statement(&self) -> bool {
        self.show_sql || self.debug_sql || self.show_save_sql
    }

    /// Logs `sql` (with `values()` when `show_sql_values` is on) if the switches ask for
    /// statements of `kind`; `session` names the connection or session it runs on.
    pub fn statement(
        &self,
        side: Side,
        session: &str,
        kind: StatementKind,
        sql: &str,
        values: impl FnOnce() -> String,
    ) -> Logged {
        if !self.wants(kind) {
            return Logged::none();
        }
        let sql = crate::report::escape_controls(sql);
        if self.show_sql_values {
            let values = values();
            let values = crate::report::escape_controls(&values);
            tracing::info!(target: SQL_TARGET, side = side.name(), kind = kind.name(), values = %values, "{sql}");
        } else {
            tracing::info!(target: SQL_TARGET, side = side.name(), kind = kind.name(), "{sql}");
        }
        Logged { details: self.debug_sql.then(|| (Instant::now(), side, session.to_string())) }
    }

    /// Logs a connection change (`event`: "connected", "disconnected", "reconnecting",
    /// "session opened", …) of the redacted `endpoint` when `debug_connection_change` is on.
    /// The `endpoint` field never repeats the side (`source 4d http://…` is logged as
    /// `4d http://…` with `side="source"`), so every line of one connection names it alike.
    pub fn connection(&self, side: Side, endpoint: &str, event: &str) {
        if self.debug_connection_change {
            let endpoint = endpoint.strip_prefix(side.name()).and_then(|e| e.strip_prefix(' ')).unwrap_or(endpoint);
            tracing::info!(target: CONNECTION_TARGET, side = side.name(), endpoint = %endpoint, "{event}");
        }
    }
}

/// `[v1, v2, …]` of values shown with a statement (`show_sql_values`), `Debug`-formatted
/// so text stays quoted.
pub fn values_text<T: std::fmt::Debug>(values: impl IntoIterator<Item = T>) -> String {
    let shown: Vec<String> = values.into_iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", shown.join(", "))
}

/// `N rows: [[v1, …], …]`: the rows of a write, as `show_sql_values` shows them.
pub fn rows_text(rows: &[crate::model::Row]) -> String {
    let shown: Vec<String> = rows.iter().map(|row| values_text(row.iter())).collect();
    format!("{} rows: [{}]", rows.len(), shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show_save_sql` alone logs writes and not reads; `show_sql` and `debug_sql` log both.
    #[test]
    fn which_statements_each_switch_logs() {
        let save = SqlLog { show_save_sql: true, ..SqlLog::default() };
        assert!(save.wants(StatementKind::Write) && !save.wants(StatementKind::Read));
        for all in [SqlLog { show_sql: true, ..SqlLog::default() }, SqlLog { debug_sql: true, ..SqlLog::default() }] {
            assert!(all.wants(StatementKind::Write) && all.wants(StatementKind::Read));
        }
        let values_only = SqlLog { show_sql_values: true, ..SqlLog::default() };
        assert!(!values_only.any_statement());
    }
}
