//! 4D through its SQL server's network protocol (TCP, port 19812 by default):
//! `{"type": "4d", "protocol": "sql", …}`. `docs/4d-sql.md` is the design reference; each
//! rule there names its source (4D's protocol note, the `p4d` client's C sources, other
//! clients).
//!
//! Status: [`wire`] encodes requests and decodes replies (headers, rows of typed cells,
//! update counts), tested on byte strings; [`session`] logs in, runs statements with bound
//! parameters (paging results with FETCH-RESULT) and logs out, tested against the
//! emulator (`fourd_emulator::SqlEmulator`); [`values`] maps 4D's column types and cells
//! to db-sync's and reads a table's schema from the system tables. The `Connector` calls
//! (counts, key ranges, keyset reads, batched writes in transactions) are not written yet:
//! such a connection still stops with "not supported yet".

mod connector;
pub mod session;
pub mod values;
pub mod wire;

pub use connector::{DEFAULT_PORT, FourDSql};
