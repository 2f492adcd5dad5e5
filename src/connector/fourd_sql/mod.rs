//! 4D through its SQL server's network protocol (TCP, port 19812 by default):
//! `{"type": "4d", "protocol": "sql", …}`. `docs/4d-sql.md` is the design reference; each
//! rule there names its source (4D's protocol note, the `p4d` client's C sources, other
//! clients).
//!
//! [`wire`] encodes requests and decodes replies (headers, rows of typed cells, update
//! counts); [`session`] logs in, runs statements with bound parameters (paging results
//! with FETCH-RESULT) and logs out; [`values`] maps 4D's column types and cells to db-sync's
//! and reads a table's schema from the system tables; [`FourDSql`] is the connector. It
//! syncs tables keyed by one integer column; text keys (4D orders text linguistically)
//! are refused by `supports_scope` with that reason.

mod connector;
pub mod session;
pub mod values;
pub mod wire;

pub use connector::{DEFAULT_PORT, FourDSql};
