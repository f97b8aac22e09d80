//! `tenure migrate`: a single-node deployment's SQLite database copied into
//! an empty PostgreSQL database, in one PostgreSQL transaction (all of it or
//! nothing), table by table in an order that satisfies every reference, and
//! checked by counting the rows of each table on both sides before commit.
//!
//! The schemas mean the same (see `schema.rs`); the copy converts by the
//! target column's type: SQLite's 0/1 flags become BOOLEAN, and the `seq`
//! columns PostgreSQL has where SQLite ordered by `rowid` are filled in
//! `rowid` order. Identity columns copied with their values have their
//! sequences moved past the largest.

use postgres::types::{ToSql, Type};
use rusqlite::types::Value;

use super::{PgStore, get};
use crate::error::{Error, Result};

/// Tables in an order where every reference points to a table before it (and,
/// within a table, rows are copied in `rowid` order, which is creation order:
/// a resource's anchor, a key it replaces, come first).
const TABLES: &[&str] = &[
    "settings",
    "issuers",
    "tenants",
    "eab_keys",
    "tenant_keys",
    "accounts",
    "orders",
    "authorizations",
    "challenges",
    "order_reused_authorizations",
    "resources",
    "resource_names",
    "resource_addresses",
    "resource_events",
    "plugins",
    "audit",
    "certificates",
    "certificate_resources",
    "crls",
    "hsm_slots",
    "hsm_keys",
    "hsm_events",
    "provisioning",
    "deliveries",
];

/// Tables SQLite keeps WITHOUT ROWID (by primary key).
const WITHOUT_ROWID: &[&str] =
    &["order_reused_authorizations", "resource_names", "resource_addresses", "certificate_resources", "tenant_keys"];

/// Identity columns copied with their values (`table`, `column`).
const IDENTITIES: &[(&str, &str)] =
    &[("issuers", "id"), ("audit", "seq"), ("resource_events", "seq"), ("hsm_events", "seq"), ("deliveries", "id")];

/// What was copied: (table, rows), in copy order.
pub type Copied = Vec<(String, i64)>;

/// Where a copy stands, for a progress display (`tenure migrate` on a terminal).
#[derive(Debug, Clone, Copy)]
pub struct CopyProgress<'a> {
    /// The table being copied (or, with `tables_done == tables`, the last one copied).
    pub table: &'a str,
    /// Tables copied completely so far.
    pub tables_done: usize,
    /// Tables in all.
    pub tables: usize,
    /// Rows of `table` copied so far.
    pub rows: i64,
}

/// Rows between two progress reports within a table: often enough to show
/// movement, rarely enough to cost nothing.
const PROGRESS_EVERY: i64 = 1000;

/// Copies every row of the SQLite database at `from` into `to`, which must
/// hold no CA yet. Nothing is written to `to` unless all of it is. `progress`
/// hears where the copy stands: as each table starts, every
/// [`PROGRESS_EVERY`] rows, and as each table is done.
pub fn copy_sqlite_into(from: &std::path::Path, to: &PgStore, progress: &mut dyn FnMut(CopyProgress<'_>)) -> Result<Copied> {
    let src = rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: i64 = src.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let expected = crate::store::sqlite::schema_version();
    if version != expected {
        return Err(Error::malformed(format!(
            "{} is at schema version {version}; open it once with this tenure (any command) to bring it to {expected}, then migrate",
            from.display()
        )));
    }
    let mut pooled = to.client()?;
    let mut tx = pooled.client.transaction()?;
    let holds: i64 = get(&tx.query_one("SELECT count(*) FROM issuers", &[])?, 0)?;
    if holds > 0 {
        return Err(Error::conflict(
            crate::Conflict::DataDirectory,
            "the target database holds a CA already; tenure migrate copies into an empty one only",
        ));
    }
    let mut copied = Vec::new();
    for (index, table) in TABLES.iter().enumerate() {
        progress(CopyProgress { table, tables_done: index, tables: TABLES.len(), rows: 0 });
        // The columns both sides have. PostgreSQL's own (a sweep's claim) start
        // empty; a SQLite column PostgreSQL lacks would be lost, so it stops the move.
        let source: Vec<String> =
            src.prepare("SELECT name FROM pragma_table_info(?1)")?.query_map([table], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        let mut target = target_columns(&mut tx, table)?;
        if let Some(lost) = source.iter().find(|c| !target.iter().any(|(n, _)| n == *c)) {
            return Err(Error::internal(format!("{table}.{lost} has no place in PostgreSQL's schema; nothing was written")));
        }
        target.retain(|(n, _)| source.contains(n));
        let names: Vec<&str> = target.iter().map(|(n, _)| n.as_str()).collect();
        // WITHOUT ROWID tables have no rowid, and no order to keep.
        let order = if WITHOUT_ROWID.contains(table) { "" } else { " ORDER BY rowid" };
        let select = format!("SELECT {} FROM {table}{order}", names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "));
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "),
            (1..=names.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
        );
        let types: Vec<Type> = target.iter().map(|(_, t)| t.clone()).collect();
        let statement = tx.prepare_typed(&insert, &types)?;
        let mut st = src.prepare(&select)?;
        let mut rows = st.query([])?;
        let mut n = 0i64;
        while let Some(row) = rows.next()? {
            let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(names.len());
            for (i, (name, ty)) in target.iter().enumerate() {
                values.push(convert(row.get::<_, Value>(i)?, ty).map_err(|e| Error::malformed(format!("{table}.{name}: {e}")))?);
            }
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
            tx.execute(&statement, &params)?;
            n += 1;
            if n % PROGRESS_EVERY == 0 {
                progress(CopyProgress { table, tables_done: index, tables: TABLES.len(), rows: n });
            }
        }
        let there: i64 = get(&tx.query_one(&format!("SELECT count(*) FROM {table}"), &[])?, 0)?;
        let here: i64 = src.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        if there != here || n != here {
            return Err(Error::internal(format!("{table}: {here} rows in SQLite, {there} in PostgreSQL; nothing was written")));
        }
        copied.push((table.to_string(), n));
        progress(CopyProgress { table, tables_done: index + 1, tables: TABLES.len(), rows: n });
    }
    for (table, column) in IDENTITIES {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), GREATEST((SELECT max({column}) FROM {table}), 0) + 1, false)"
            ),
            &[],
        )?;
    }
    tx.commit()?;
    Ok(copied)
}

/// The columns of `table` in PostgreSQL that are copied (all but generated `seq`s), with their types.
fn target_columns(tx: &mut postgres::Transaction<'_>, table: &str) -> Result<Vec<(String, Type)>> {
    let found = tx.query(
        "SELECT column_name, data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1
           AND (identity_generation IS NULL OR identity_generation <> 'ALWAYS')
         ORDER BY ordinal_position",
        &[&table],
    )?;
    found
        .iter()
        .map(|r| {
            let name: String = get(r, 0)?;
            let ty = match get::<String>(r, 1)?.as_str() {
                "bigint" => Type::INT8,
                "boolean" => Type::BOOL,
                "bytea" => Type::BYTEA,
                "text" => Type::TEXT,
                other => return Err(Error::internal(format!("{table}.{name}: no conversion to {other}"))),
            };
            Ok((name, ty))
        })
        .collect()
}

/// A SQLite value as the PostgreSQL column type wants it.
fn convert(v: Value, ty: &Type) -> std::result::Result<Box<dyn ToSql + Sync>, String> {
    Ok(match (v, ty) {
        (Value::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (Value::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
        (Value::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (Value::Null, _) => Box::new(None::<String>),
        (Value::Integer(i), t) if *t == Type::INT8 => Box::new(i),
        (Value::Integer(i), t) if *t == Type::BOOL => Box::new(i != 0),
        (Value::Text(s), t) if *t == Type::TEXT => Box::new(s),
        (Value::Blob(b), t) if *t == Type::BYTEA => Box::new(b),
        // Settings hold text and blobs alike in SQLite's BLOB column.
        (Value::Text(s), t) if *t == Type::BYTEA => Box::new(s.into_bytes()),
        (v, t) => return Err(format!("a {:?} value cannot go into a {t} column", v.data_type())),
    })
}
