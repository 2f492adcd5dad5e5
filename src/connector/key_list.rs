//! Client-side key order for servers that cannot order keys by bytes. 4D compares and
//! orders text by its own rules (REST: case- and accent-insensitive, `Concepts/dt_string.md`;
//! SQL: linguistic ICU order, `docs/4d-sql.md` §9.7), while db-sync's ranges, counts and
//! offsets are in byte order of the key. A connector for such a server reads a table's keys
//! once, keeps them sorted by bytes here, answers counts, offsets and key pages from the
//! list, and applies its own writes to it.
//!
//! [`changed_since`] is the matching read of changed rows: the server orders by the modify
//! ID, and the ties among equal modify IDs are put in key byte order on the client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use super::{ConnectorError, ModifyCursor, Page};
use crate::model::{Key, KeyRange, Row, TableScope, Value};

/// Byte-sorted key lists, one per table scope (record type filter, NULL keys, key columns).
#[derive(Default)]
pub struct KeyLists {
    lists: Mutex<HashMap<String, Arc<Vec<Key>>>>,
}

impl KeyLists {
    /// The scope's list, read with `read` (every key of the scope's filter, skipped keys
    /// included, in any order) the first time and kept afterwards.
    pub async fn get<F, Fut>(&self, scope: &TableScope, read: F) -> Result<Arc<Vec<Key>>, ConnectorError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Key>, ConnectorError>>,
    {
        let id = list_id(scope);
        if let Some(list) = self.lock().get(&id) {
            return Ok(Arc::clone(list));
        }
        let mut keys = read().await?;
        keys.sort_unstable();
        tracing::debug!(table = %scope.table, keys = keys.len(), "keys read and sorted by bytes");
        let list = Arc::new(keys);
        self.lock().insert(id, Arc::clone(&list));
        Ok(list)
    }

    /// Applies writes to every list of `table`: `added` keys now exist, `removed` no longer.
    pub fn update(&self, table: &str, added: &[Key], removed: &[Key]) {
        let mut lists = self.lock();
        for (id, list) in lists.iter_mut() {
            if id.split('\u{1}').next() != Some(table) {
                continue;
            }
            let list = Arc::make_mut(list);
            for k in added {
                if let Err(at) = list.binary_search(k) {
                    list.insert(at, k.clone());
                }
            }
            for k in removed {
                if let Ok(at) = list.binary_search(k) {
                    list.remove(at);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<Key>>>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The keys of a sorted `list` inside `range`.
pub fn in_range<'a>(list: &'a [Key], range: &KeyRange) -> &'a [Key] {
    let start = range.after.as_ref().map_or(0, |a| list.partition_point(|k| k <= a));
    let end = range.upto.as_ref().map_or(list.len(), |u| list.partition_point(|k| k <= u));
    &list[start..end.max(start)]
}

/// The keys of a sorted `list` inside `range`, without the scope's skipped keys.
pub fn listed<'a>(list: &'a [Key], scope: &'a TableScope, range: &KeyRange) -> impl Iterator<Item = &'a Key> {
    in_range(list, range).iter().filter(|k| !scope.skip_keys.contains(k))
}

/// A page of at most `limit` keys of a sorted `list` inside `range`, without the scope's
/// skipped keys; `more` says whether further keys follow in the range.
pub fn key_page(list: &[Key], scope: &TableScope, range: &KeyRange, limit: usize) -> Page<Key> {
    let mut keys = listed(list, scope, range);
    let items: Vec<Key> = keys.by_ref().take(limit).cloned().collect();
    Page { items, more: keys.next().is_some() }
}

/// The page of rows for a page of listed `keys`: every key must have its row
/// ([`all_found`]), and the rows are put in key byte order; `more` is the key page's.
pub fn rows_page(
    endpoint: &str,
    scope: &TableScope,
    keys: Page<Key>,
    mut rows: Vec<Row>,
) -> Result<Page<Row>, ConnectorError> {
    all_found(endpoint, scope, &keys.items, &rows)?;
    rows.sort_by_key(|r| scope.key_of(r));
    Ok(Page { items: rows, more: keys.more })
}

/// At most `limit` keys that occur more than once in the scope's list, with how often.
pub fn duplicates(list: &[Key], scope: &TableScope, limit: usize) -> Vec<(Key, u64)> {
    let keys: Vec<&Key> = listed(list, scope, &KeyRange::all()).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < keys.len() && found.len() < limit {
        let j = keys[i..].iter().take_while(|k| **k == keys[i]).count();
        if j > 1 {
            found.push((keys[i].clone(), j as u64));
        }
        i += j;
    }
    found
}

/// Checks that a page of rows read by the keys of a key list has a row for every key. A
/// listed key without its row was deleted since the list was read, or the server does not
/// find the row by its own key (a UUID stored in another spelling): either way the page
/// would hide a row, so it is an error naming the keys, and the next run reads the list anew.
pub fn all_found(endpoint: &str, scope: &TableScope, keys: &[Key], rows: &[Row]) -> Result<(), ConnectorError> {
    if rows.len() >= keys.len() {
        return Ok(());
    }
    let found: std::collections::HashSet<Key> = rows.iter().filter_map(|r| scope.key_of(r)).collect();
    let missing: Vec<String> = keys.iter().filter(|k| !found.contains(*k)).take(5).map(Key::to_string).collect();
    Err(ConnectorError::Other(format!(
        "{endpoint}: `{}`: reading the rows of keys listed a moment before found none for {} ({} of {}): the rows \
         were deleted meanwhile (run again), or the server does not find them by their own key",
        scope.table,
        missing.join(", "),
        keys.len() - rows.len(),
        keys.len()
    )))
}

/// The first page (at most about `limit` rows) of rows changed after `cursor`, in
/// (modify ID, key bytes) order, when the server orders ties of the modify ID its own way.
///
/// `read(floor)` reads up to `limit` rows ordered by the modify ID (ties in any order) whose
/// modify ID is above the floor (`(m, true)`: at least `m`; `None`: not NULL) and says
/// whether more follow; `group(m)` reads every row whose modify ID is `m`. A group of equal
/// modify IDs is never cut at a page end (the last group is dropped, or read whole when it
/// is the whole page). When nothing of a window follows the cursor, the floor moves past it,
/// so every call returns rows or ends the read.
pub async fn changed_since<R, RF, G, GF>(
    scope: &TableScope,
    cursor: &ModifyCursor,
    modify_index: usize,
    read: R,
    group: G,
) -> Result<Page<Row>, ConnectorError>
where
    R: Fn(Option<(Value, bool)>) -> RF,
    RF: Future<Output = Result<(Vec<Row>, bool), ConnectorError>>,
    G: Fn(Value) -> GF,
    GF: Future<Output = Result<Vec<Row>, ConnectorError>>,
{
    let m_index = modify_index;
    let after_cursor = |r: &Row| match (&cursor.modify_id, &cursor.key) {
        (Some(m), Some(k)) => match r[m_index].cmp_total(m) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => scope.key_of(r).is_some_and(|rk| rk > *k),
            std::cmp::Ordering::Less => false,
        },
        (Some(m), None) => !r[m_index].cmp_total(m).is_lt(),
        (None, _) => true,
    };
    let mut floor: Option<(Value, bool)> = cursor.modify_id.clone().map(|m| (m, true));
    loop {
        let (mut rows, more) = read(floor.clone()).await?;
        let mut next_floor = None;
        if more && let Some(last) = rows.last().map(|r| r[m_index].clone()) {
            if rows.iter().all(|r| r[m_index].cmp_total(&last).is_eq()) {
                rows = group(last.clone()).await?;
                next_floor = Some((last, false));
            } else {
                rows.retain(|r| r[m_index].cmp_total(&last).is_lt());
                next_floor = Some((last, true));
            }
        }
        rows.retain(|r| after_cursor(r));
        if rows.is_empty() && more {
            floor = next_floor;
            continue;
        }
        rows.sort_by(|a, b| a[m_index].cmp_total(&b[m_index]).then_with(|| scope.key_of(a).cmp(&scope.key_of(b))));
        return Ok(Page { items: rows, more });
    }
}

/// The list's identity: table, record type filter, NULL keys, key columns.
fn list_id(scope: &TableScope) -> String {
    format!("{}\u{1}{:?}\u{1}{}\u{1}{:?}", scope.table, scope.filter, scope.skip_null_keys, scope.key_columns())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Key {
        Key::Text(s.to_string())
    }

    fn scope() -> TableScope {
        TableScope {
            table: "T".into(),
            columns: vec!["k".into(), "m".into()],
            key_indexes: vec![0],
            modify_index: Some(1),
            filter: Vec::new(),
            skip_null_keys: true,
            skip_keys: Vec::new(),
        }
    }

    #[test]
    fn key_ranges_from_a_sorted_list() {
        let list: Vec<Key> = ["B", "C", "a", "b", "é"].iter().map(|s| text(s)).collect();
        let range = KeyRange { after: Some(text("C")), upto: Some(text("b")) };
        assert_eq!(in_range(&list, &range), &list[2..4]);
        assert_eq!(in_range(&list, &KeyRange::all()).len(), 5);
        let mut scope = scope();
        scope.skip_keys.push(text("a"));
        assert_eq!(listed(&list, &scope, &range).collect::<Vec<_>>(), vec![&text("b")]);
    }

    #[tokio::test]
    async fn lists_are_read_once_and_follow_writes() {
        let lists = KeyLists::default();
        let scope = scope();
        let list = lists.get(&scope, || async { Ok(vec![text("b"), text("a"), text("b")]) }).await.unwrap();
        assert_eq!(*list, vec![text("a"), text("b"), text("b")]);
        assert_eq!(duplicates(&list, &scope, 10), vec![(text("b"), 2)]);
        lists.update("T", &[text("c"), text("a")], &[text("a")]);
        lists.update("other", &[text("z")], &[]);
        let list = lists.get(&scope, || async { panic!("read again") }).await.unwrap();
        assert_eq!(*list, vec![text("b"), text("b"), text("c")]);
    }

    /// Rows with modify IDs 1, 2, 2, 2, 3 whose server order of ties is reversed key order:
    /// pages of two come back in (modify ID, key bytes) order, no row twice or missed.
    #[tokio::test]
    async fn changed_rows_in_key_byte_order() {
        let scope = scope();
        let rows: Vec<Row> = [("e", 1), ("d", 2), ("c", 2), ("b", 2), ("a", 3)]
            .iter()
            .map(|(k, m)| vec![Value::Text(k.to_string()), Value::Int(*m)])
            .collect();
        let above = |r: &Row, floor: &Option<(Value, bool)>| match floor {
            None => true,
            Some((m, true)) => !r[1].cmp_total(m).is_lt(),
            Some((m, false)) => r[1].cmp_total(m).is_gt(),
        };
        let mut cursor = ModifyCursor { modify_id: None, key: None };
        let mut seen = Vec::new();
        loop {
            let page = changed_since(
                &scope,
                &cursor,
                1,
                |floor| {
                    let found: Vec<Row> = rows.iter().filter(|r| above(r, &floor)).take(3).cloned().collect();
                    let more = found.len() >= 3;
                    async move { Ok((found, more)) }
                },
                |m| {
                    let found: Vec<Row> = rows.iter().filter(|r| r[1] == m).cloned().collect();
                    async move { Ok(found) }
                },
            )
            .await
            .unwrap();
            let Some(last) = page.items.last() else { break };
            cursor = ModifyCursor { modify_id: Some(last[1].clone()), key: scope.key_of(last) };
            seen.extend(page.items.iter().map(|r| r[0].clone()));
            if !page.more {
                break;
            }
        }
        let keys: Vec<Value> = ["e", "b", "c", "d", "a"].iter().map(|k| Value::Text(k.to_string())).collect();
        assert_eq!(seen, keys);
    }
}
