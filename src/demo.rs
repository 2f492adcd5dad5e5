//! `db-sync demo`: builds an ERP-like SQLite source (schema in `fixtures/demo/`, 225,000+
//! rows of generated data), an empty target with the schema of `migrations/`, syncs them,
//! changes the source (adds, deletes, updates, record-type moves) and syncs again, then
//! compares every row. Data generation is deterministic (fixed seed), so runs are
//! comparable. Also used by the tests and the benchmark to build data sets.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

/// Schema of the demo source.
pub const SOURCE_SCHEMA: &str = include_str!("../fixtures/demo/source_schema.sql");
/// Schema of the demo target (the ERP schema of `migrations/`).
pub const TARGET_SCHEMA: &str = include_str!("../migrations/0001_erp.sql");
/// The demo's config.
pub const DEMO_CONFIG: &str = include_str!("../fixtures/demo/db-sync.json");

/// A small deterministic generator (splitmix64); good enough for test data.
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: i64) -> i64 {
        (self.next_u64() % n.max(1) as u64) as i64
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as i64) as usize]
    }
}

/// Rows per table at scale 1.
const SIZES: [(&str, u64); 8] = [
    ("currency", 30),
    ("terms_of_payment", 10),
    ("company", 5_000),
    ("product", 12_000),
    ("orders", 40_000),
    ("order_row", 100_000),
    ("invoice", 20_000),
    ("invoice_row", 50_000),
];

const COUNTRIES: [&str; 8] = ["FI", "SE", "DE", "FR", "US", "GB", "EE", "NO"];
const TYPES: [&str; 3] = ["work", "material", "service"];
const UNITS: [&str; 4] = ["h", "pcs", "kg", "m"];
const STATUS: [&str; 4] = ["open", "confirmed", "delivered", "invoiced"];
const WORDS: [&str; 12] =
    ["steel", "oak", "design", "install", "repair", "copper", "survey", "paint", "cable", "audit", "glass", "pump"];

fn size(table: &str, scale: f64) -> i64 {
    let base = SIZES.iter().find(|(t, _)| *t == table).map_or(0, |(_, n)| *n);
    ((base as f64 * scale).round() as i64).max(1)
}

fn date(rng: &mut Rng) -> String {
    format!("20{:02}-{:02}-{:02}", 18 + rng.below(8), 1 + rng.below(12), 1 + rng.below(28))
}

fn words(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| *rng.pick(&WORDS)).collect::<Vec<_>>().join(" ")
}

/// Creates a database file with `schema`, replacing an existing file.
pub fn create_database(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let conn = Connection::open(path)?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// Fills a demo source with generated rows; returns the row count.
pub fn populate_source(conn: &mut Connection, scale: f64, seed: u64) -> rusqlite::Result<u64> {
    let mut rng = Rng::new(seed);
    let tx = conn.transaction()?;
    let mut modify = 0i64;
    let mut next = || {
        modify += 1;
        modify
    };
    let mut total: i64 = 0;
    {
        let n = size("currency", scale);
        let mut stmt = tx.prepare("INSERT INTO currency VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for id in 1..=n {
            let code = format!("C{id:02}");
            stmt.execute(params![id, code, format!("currency {id}"), 0.5 + rng.below(2000) as f64 / 1000.0, next()])?;
        }
        total += n;
        let n = size("terms_of_payment", scale);
        let mut stmt = tx.prepare("INSERT INTO terms_of_payment VALUES (?1, ?2, ?3, ?4)")?;
        for id in 1..=n {
            stmt.execute(params![id, format!("net {} days", id * 7), id * 7, next()])?;
        }
        total += n;
        let currencies = size("currency", scale);
        let terms = size("terms_of_payment", scale);
        let n = size("company", scale);
        let mut stmt = tx.prepare("INSERT INTO company VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        for id in 1..=n {
            stmt.execute(params![
                id,
                format!("{} Oy {id}", words(&mut rng, 1)),
                *rng.pick(&COUNTRIES),
                1 + rng.below(currencies),
                1 + rng.below(terms),
                date(&mut rng),
                next()
            ])?;
        }
        total += n;
        let n = size("product", scale);
        let mut stmt = tx.prepare("INSERT INTO product VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        for id in 1..=n {
            stmt.execute(params![
                id,
                TYPES[(id % 3) as usize],
                format!("{} {id}", words(&mut rng, 2)),
                words(&mut rng, 6),
                (rng.below(100_000) as f64) / 100.0,
                *rng.pick(&UNITS),
                next()
            ])?;
        }
        total += n;
        let companies = size("company", scale);
        let products = size("product", scale);
        let n = size("orders", scale);
        let mut stmt = tx.prepare("INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for id in 1..=n {
            stmt.execute(params![
                id,
                1 + rng.below(companies),
                date(&mut rng),
                *rng.pick(&STATUS),
                rng.below(1_000_000) as f64 / 100.0,
                next()
            ])?;
        }
        total += n;
        let orders = n;
        let n = size("order_row", scale);
        let mut stmt = tx.prepare("INSERT INTO order_row VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for id in 1..=n {
            stmt.execute(params![
                id,
                1 + (id - 1) * orders / n,
                1 + rng.below(products),
                1 + rng.below(20),
                rng.below(100_000) as f64 / 100.0,
                next()
            ])?;
        }
        total += n;
        let n = size("invoice", scale);
        let mut stmt = tx.prepare("INSERT INTO invoice VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        for id in 1..=n {
            stmt.execute(params![
                id,
                1 + rng.below(companies),
                1 + rng.below(orders),
                date(&mut rng),
                date(&mut rng),
                rng.below(1_000_000) as f64 / 100.0,
                next()
            ])?;
        }
        total += n;
        let invoices = n;
        let n = size("invoice_row", scale);
        let mut stmt = tx.prepare("INSERT INTO invoice_row VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for id in 1..=n {
            stmt.execute(params![
                id,
                1 + (id - 1) * invoices / n,
                1 + rng.below(products),
                1 + rng.below(20),
                rng.below(100_000) as f64 / 100.0,
                next()
            ])?;
        }
        total += n;
    }
    tx.commit()?;
    Ok(total as u64)
}

/// What [`mutate_source`] changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mutations {
    /// Rows inserted.
    pub added: u64,
    /// Rows updated (modify ID bumped).
    pub updated: u64,
    /// Rows updated without bumping the modify ID (found only by a full compare).
    pub silent_updates: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Products moved to another record type.
    pub moved: u64,
}

/// Changes a demo source the way a day of business would: new orders with rows, edited
/// orders and prices, cancelled orders (deleted with their rows), products moved between
/// record types, and company edits that do not bump the modify ID.
pub fn mutate_source(conn: &mut Connection, seed: u64) -> rusqlite::Result<Mutations> {
    let mut rng = Rng::new(seed);
    let mut m = Mutations::default();
    let tx = conn.transaction()?;
    let max = |t: &str| -> rusqlite::Result<i64> {
        tx.query_row(&format!("SELECT coalesce(max(id), 0) FROM {t}"), [], |r| r.get(0))
    };
    let mut modify: i64 =
        tx.query_row("SELECT max(m) FROM (SELECT max(modify_id) m FROM orders UNION ALL SELECT max(modify_id) FROM order_row UNION ALL SELECT max(modify_id) FROM invoice_row UNION ALL SELECT max(modify_id) FROM product UNION ALL SELECT max(modify_id) FROM company)", [], |r| r.get(0))?;
    let mut next = || {
        modify += 1;
        modify
    };
    let (orders, order_rows, products, companies) =
        (max("orders")?, max("order_row")?, max("product")?, max("company")?);

    // Cancelled orders: delete 40 orders and their rows.
    for _ in 0..40 {
        let id = 1 + rng.below(orders);
        m.updated += tx
            .execute("UPDATE invoice SET order_id = NULL, modify_id = ?2 WHERE order_id = ?1", params![id, next()])?
            as u64;
        m.deleted += tx.execute("DELETE FROM order_row WHERE order_id = ?1", [id])? as u64;
        m.deleted += tx.execute("DELETE FROM orders WHERE id = ?1", [id])? as u64;
    }
    // New orders with three rows each.
    let mut row_id = order_rows;
    for i in 1..=300 {
        let id = orders + i;
        tx.execute(
            "INSERT INTO orders VALUES (?1, ?2, '2026-11-26', 'open', ?3, ?4)",
            params![id, 1 + rng.below(companies), rng.below(100_000) as f64 / 10.0, next()],
        )?;
        m.added += 1;
        for _ in 0..3 {
            row_id += 1;
            tx.execute(
                "INSERT INTO order_row VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row_id, id, 1 + rng.below(products), 2, 9.5, next()],
            )?;
            m.added += 1;
        }
    }
    // Edited orders.
    for _ in 0..200 {
        let id = 1 + rng.below(orders);
        m.updated += tx.execute(
            "UPDATE orders SET status = 'delivered', total = total + 1, modify_id = ?2 WHERE id = ?1",
            params![id, next()],
        )? as u64;
    }
    // Price changes and record-type moves.
    for _ in 0..100 {
        let id = 1 + rng.below(products);
        m.updated += tx.execute(
            "UPDATE product SET price = round(price * 1.1, 2), descr = descr || ' (new price)', modify_id = ?2 WHERE id = ?1",
            params![id, next()],
        )? as u64;
    }
    for _ in 0..10 {
        let id = 1 + rng.below(products);
        m.moved += tx.execute(
            "UPDATE product SET product_type = CASE product_type WHEN 'work' THEN 'material' \
             WHEN 'material' THEN 'service' ELSE 'work' END, modify_id = ?2 WHERE id = ?1",
            params![id, next()],
        )? as u64;
    }
    // Company edits by a tool that forgets the modify ID.
    for _ in 0..25 {
        let id = 1 + rng.below(companies);
        m.silent_updates +=
            tx.execute("UPDATE company SET country = 'FI', name = name || '.' WHERE id = ?1", [id])? as u64;
    }
    // Removed invoice rows.
    m.deleted += tx.execute("DELETE FROM invoice_row WHERE id % 997 = 0", [])? as u64;
    tx.commit()?;
    Ok(m)
}

/// Compares every row of every demo table between source and target (the demo renames
/// `descr` to `description`). Returns `(rows compared, differences)`.
pub fn compare_demo(source: &Path, target: &Path) -> rusqlite::Result<(u64, Vec<String>)> {
    let s = Connection::open(source)?;
    let t = Connection::open(target)?;
    let mut compared = 0;
    let mut diffs = Vec::new();
    for (table, _) in SIZES {
        let columns = |conn: &Connection, rename: bool| -> rusqlite::Result<Vec<String>> {
            let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
            let cols: Vec<String> = stmt.query_map([], |r| r.get(1))?.collect::<Result<_, _>>()?;
            Ok(cols.into_iter().map(|c| if rename && c == "descr" { "description".into() } else { c }).collect())
        };
        let mut cols = columns(&s, true)?;
        cols.sort();
        let source_cols: Vec<String> =
            cols.iter().map(|c| if c == "description" { "descr".into() } else { c.clone() }).collect();
        let read = |conn: &Connection, cols: &[String]| -> rusqlite::Result<Vec<Vec<rusqlite::types::Value>>> {
            let sql = format!("SELECT {} FROM {table} ORDER BY id", cols.join(", "));
            let mut stmt = conn.prepare(&sql)?;
            let n = cols.len();
            stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())?.collect()
        };
        let a = read(&s, &source_cols)?;
        let b = read(&t, &cols)?;
        compared += a.len() as u64;
        if a.len() != b.len() {
            diffs.push(format!("{table}: source has {} rows, target {}", a.len(), b.len()));
        }
        for (x, y) in a.iter().zip(&b) {
            if x != y {
                diffs.push(format!("{table}: row {:?} differs from {:?}", x.first(), y.first()));
                break;
            }
        }
    }
    Ok((compared, diffs))
}

/// Writes the demo databases and config into `dir`; returns the config path.
pub fn build(dir: &Path, scale: f64) -> Result<(PathBuf, u64), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let fail = |e: rusqlite::Error| format!("building demo databases: {e}");
    let mut source = create_database(&dir.join("source.sqlite"), SOURCE_SCHEMA).map_err(fail)?;
    let rows = populate_source(&mut source, scale, 42).map_err(fail)?;
    create_database(&dir.join("target.sqlite"), TARGET_SCHEMA).map_err(fail)?;
    let config = dir.join("db-sync.json");
    std::fs::write(&config, DEMO_CONFIG).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let _ = std::fs::remove_dir_all(dir.join(".db-sync"));
    Ok((config, rows))
}

/// Environment variable holding the PostgreSQL URL of `demo --target-url` (the written
/// config refers to it, so no secret lands in the file).
pub const DEMO_URL_VAR: &str = "DB_SYNC_DEMO_TARGET_URL";

/// Prepares a PostgreSQL demo target: drops the demo tables and applies `migrations/`.
pub async fn prepare_postgres(url: &str) -> Result<(), String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to the demo target: {e}"))?;
    sqlx::query(
        "DROP TABLE IF EXISTS invoice_row, invoice, order_row, orders, product, company, terms_of_payment, currency, \
         _sqlx_migrations CASCADE",
    )
    .execute(&pool)
    .await
    .map_err(|e| format!("cannot reset the demo target: {e}"))?;
    sqlx::migrate!("./migrations").run(&pool).await.map_err(|e| format!("applying migrations/: {e}"))?;
    Ok(())
}
