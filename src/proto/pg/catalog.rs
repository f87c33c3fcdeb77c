//! Which table a result column comes from, for mask rules written as `schema.table.column`.
//!
//! A RowDescription names each column as the query labelled it (`ssn AS x` arrives as `x`), but it
//! also carries the source table's OID and the column's attribute number when the column is a
//! plain table column. The gateway resolves those through its own upstream connection (the
//! target's credentials, read-only) with one catalog query, and caches the answer per target, so
//! a rule on `users.ssn` masks the column whatever it was renamed to.
//!
//! The query text is built only from numbers the gateway formats itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::codec::{self, Reader};
use super::upstream;
use crate::config::Target;
use crate::server::lock;

/// How long a resolved table stays cached: a column renamed upstream is seen within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// Most tables resolved in one query (a RowDescription has at most 1,664 columns).
const MAX_OIDS: usize = 1664;

/// Most catalog rows accepted for one query: a table has at most 1,600 columns (PostgreSQL's
/// MaxHeapAttributeNumber), so more rows than this means the answer is not what was asked.
const MAX_ROWS: usize = MAX_OIDS * 1600;

/// Most cached tables per gateway (each a few hundred bytes); the oldest half goes when full.
const MAX_CACHED: usize = 10_000;

/// A table's qualified name and its columns by attribute number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumns {
    pub schema: String,
    pub table: String,
    pub columns: HashMap<i16, String>,
}

impl TableColumns {
    /// `schema.table`, as mask globs match it.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// (target name, table OID).
type Key = (String, u32);

/// Gateway-wide cache: (target, table OID) → columns, with the time it was fetched.
#[derive(Default)]
pub struct Catalog {
    tables: Mutex<HashMap<Key, (Instant, Arc<TableColumns>)>>,
}

impl Catalog {
    /// Cached entries for `oids` that are still fresh; the rest is returned as missing.
    pub fn cached(
        &self,
        target: &str,
        oids: &[u32],
        now: Instant,
    ) -> (Vec<(u32, Arc<TableColumns>)>, Vec<u32>) {
        let tables = lock(&self.tables);
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for &oid in oids {
            match tables.get(&(target.to_string(), oid)) {
                Some((at, t)) if now.duration_since(*at) < CACHE_TTL => {
                    found.push((oid, t.clone()))
                }
                _ => missing.push(oid),
            }
        }
        (found, missing)
    }

    pub fn store(&self, target: &str, resolved: &[(u32, Arc<TableColumns>)], now: Instant) {
        let mut tables = lock(&self.tables);
        if tables.len() + resolved.len() > MAX_CACHED {
            let mut ages: Vec<Instant> = tables.values().map(|(at, _)| *at).collect();
            ages.sort_unstable();
            let cut = ages.get(ages.len() / 2).copied().unwrap_or(now);
            tables.retain(|_, (at, _)| *at > cut);
        }
        for (oid, t) in resolved {
            tables.insert((target.to_string(), *oid), (now, t.clone()));
        }
    }

    /// Resolves `oids` on `target`: from the cache, else with one catalog query upstream.
    /// An OID the catalog doesn't know (a table dropped meanwhile) is simply absent.
    ///
    /// # Errors
    /// The upstream connection or the query failed.
    pub async fn resolve(
        &self,
        target: &Target,
        tls: Option<Arc<rustls::ClientConfig>>,
        oids: &[u32],
        max_body: usize,
        nonce: &str,
    ) -> Result<Vec<(u32, Arc<TableColumns>)>, String> {
        let now = Instant::now();
        let (mut found, missing) = self.cached(&target.name, oids, now);
        if missing.is_empty() {
            return Ok(found);
        }
        let params = [
            (
                "application_name".to_string(),
                "portcullis-catalog".to_string(),
            ),
            ("client_encoding".to_string(), "UTF8".to_string()),
        ];
        // One query under the caller's `upstream_timeout`: no keepalive needed.
        let mut up = upstream::connect(target, tls, &params, true, max_body, nonce, None)
            .await
            .map_err(|e| format!("catalog connection: {e}"))?;
        let mut query = Vec::new();
        codec::encode_query(&mut query, &catalog_query(&missing));
        up.conn
            .send(&query)
            .await
            .map_err(|e| format!("catalog query: {e}"))?;
        let mut rows = Vec::new();
        let result = loop {
            let msg = match up.conn.read_message(max_body).await {
                Ok(m) => m,
                Err(e) => break Err(format!("catalog answer: {e}")),
            };
            match msg.tag {
                b'D' if rows.len() >= MAX_ROWS => {
                    break Err("catalog answer: more rows than the tables can have".to_string())
                }
                b'D' => match parse_row(&msg.body) {
                    Some(row) => rows.push(row),
                    None => break Err("catalog answer: malformed row".to_string()),
                },
                b'E' => break Err("catalog query refused by the server".to_string()),
                b'Z' => break Ok(()),
                _ => {}
            }
        };
        let mut terminate = Vec::new();
        codec::encode_terminate(&mut terminate);
        let _ = up.conn.send(&terminate).await;
        result?;
        let resolved = group(rows);
        self.store(&target.name, &resolved, now);
        found.extend(resolved);
        Ok(found)
    }
}

/// The catalog query for `oids` (numbers only; at most [`MAX_OIDS`] of them).
fn catalog_query(oids: &[u32]) -> String {
    let list: Vec<String> = oids.iter().take(MAX_OIDS).map(u32::to_string).collect();
    format!(
        "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
         WHERE c.oid IN ({}) AND a.attnum > 0 AND NOT a.attisdropped",
        list.join(",")
    )
}

/// One catalog row: (oid, schema, table, attnum, column).
type Row = (u32, String, String, i16, String);

fn parse_row(body: &[u8]) -> Option<Row> {
    let mut r = Reader::new(body);
    if r.i16().ok()? != 5 {
        return None;
    }
    let mut field = || -> Option<String> {
        let len = usize::try_from(r.i32().ok()?).ok()?;
        String::from_utf8(r.take(len).ok()?.to_vec()).ok()
    };
    let oid = field()?.parse().ok()?;
    let schema = field()?;
    let table = field()?;
    let attnum = field()?.parse().ok()?;
    let column = field()?;
    r.expect_empty().ok()?;
    Some((oid, schema, table, attnum, column))
}

fn group(rows: Vec<Row>) -> Vec<(u32, Arc<TableColumns>)> {
    let mut by_oid: HashMap<u32, TableColumns> = HashMap::new();
    for (oid, schema, table, attnum, column) in rows {
        by_oid
            .entry(oid)
            .or_insert_with(|| TableColumns {
                schema,
                table,
                columns: HashMap::new(),
            })
            .columns
            .insert(attnum, column);
    }
    by_oid.into_iter().map(|(o, t)| (o, Arc::new(t))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_row(fields: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&i16::try_from(fields.len()).unwrap().to_be_bytes());
        for f in fields {
            b.extend_from_slice(&i32::try_from(f.len()).unwrap().to_be_bytes());
            b.extend_from_slice(f.as_bytes());
        }
        b
    }

    #[test]
    fn query_holds_only_the_numbers() {
        let q = catalog_query(&[16384, 42]);
        assert!(q.contains("IN (16384,42)"));
        let many: Vec<u32> = (0..5000).collect();
        assert_eq!(
            catalog_query(&many).matches(',').count(),
            MAX_OIDS - 1 + 4,
            "list capped; 4 commas in the select list"
        );
    }

    #[test]
    fn rows_group_by_table() {
        let rows = vec![
            parse_row(&text_row(&["16384", "public", "users", "1", "id"])).unwrap(),
            parse_row(&text_row(&["16384", "public", "users", "3", "ssn"])).unwrap(),
            parse_row(&text_row(&["16390", "hr", "staff", "2", "salary"])).unwrap(),
        ];
        let mut g = group(rows);
        g.sort_by_key(|(o, _)| *o);
        assert_eq!(g[0].1.qualified(), "public.users");
        assert_eq!(g[0].1.columns.get(&3).map(String::as_str), Some("ssn"));
        assert_eq!(g[1].1.qualified(), "hr.staff");
    }

    #[test]
    fn rejects_malformed_rows() {
        assert_eq!(parse_row(&text_row(&["x", "a", "b", "1", "c"])), None);
        assert_eq!(parse_row(&text_row(&["1", "a", "b", "1"])), None);
        let mut truncated = text_row(&["1", "a", "b", "1", "c"]);
        truncated.pop();
        assert_eq!(parse_row(&truncated), None);
        let mut null = text_row(&["1", "a", "b", "1"]);
        null.splice(0..2, 5i16.to_be_bytes());
        null.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(parse_row(&null), None);
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let c = Catalog::default();
        let t0 = Instant::now();
        let t = Arc::new(TableColumns {
            schema: "public".into(),
            table: "users".into(),
            columns: HashMap::new(),
        });
        c.store("db", &[(1, t.clone())], t0);
        assert_eq!(c.cached("db", &[1, 2], t0).1, vec![2]);
        assert_eq!(c.cached("other", &[1], t0).1, vec![1]);
        assert_eq!(c.cached("db", &[1], t0 + CACHE_TTL).1, vec![1]);
        let many: Vec<(u32, Arc<TableColumns>)> = (0..u32::try_from(MAX_CACHED).unwrap())
            .map(|o| (o + 10, t.clone()))
            .collect();
        c.store("db", &many, t0 + Duration::from_secs(1));
        c.store("db", &[(5, t)], t0 + Duration::from_secs(2));
        assert!(lock(&c.tables).len() <= MAX_CACHED);
    }
}
