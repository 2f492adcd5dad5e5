//! Finding differing rows: the sorted-merge difference of key lists, and the count-based
//! binary search ([`bisect`]). Pure algorithms over the [`crate::connector::Connector`]
//! trait; no SQL here.

pub mod bisect;

use crate::connector::{Connector, ConnectorError, Page};
use crate::model::{Key, KeyRange, Row, TableScope};

/// Items of both sides inside `(after, upper]`, every one of them: `upper == None` means
/// the window reaches the end of the table.
pub struct Window<T> {
    /// Source items, ascending.
    pub source: Vec<T>,
    /// Target items, ascending.
    pub target: Vec<T>,
    /// Inclusive upper bound of the window.
    pub upper: Option<Key>,
}

/// The bound of a window from a source page: its last key while more may follow, the end
/// of the table once the page says nothing follows (a short page alone is not the end:
/// servers cap pages).
fn page_bound<T>(page: &Page<T>, key: impl Fn(&T) -> Option<Key>) -> Result<Option<Key>, ConnectorError> {
    match (page.more, page.items.last()) {
        (false, _) => Ok(None),
        (true, Some(last)) => Ok(key(last)),
        (true, None) => Err(empty_page_with_more()),
    }
}

/// The error of a page that is empty yet says more rows follow: reading after it would
/// read the same page again.
pub fn empty_page_with_more() -> ConnectorError {
    ConnectorError::Other("a read returned an empty page that says more rows follow".into())
}

/// Closes a window: when more target items may follow below `upper`, the window ends at
/// the target page's last key and the source page is cut there, so nothing beyond is
/// compared half-read.
fn close<T>(
    mut source: Vec<T>,
    target: Page<T>,
    mut upper: Option<Key>,
    source_key: impl Fn(&T) -> Option<Key>,
    target_key: impl Fn(&T) -> Option<Key>,
) -> Result<Window<T>, ConnectorError> {
    if target.more {
        let last = target.items.last().and_then(target_key);
        if last.is_none() {
            return Err(empty_page_with_more());
        }
        if upper.is_none() || last < upper {
            upper = last;
            let bound = upper.clone().expect("checked above");
            source.retain(|item| source_key(item).is_some_and(|k| k <= bound));
        }
    }
    Ok(Window { source, target: target.items, upper })
}

/// Checks a page read in key order: every item has a key, the first is after `after`,
/// and each is strictly greater than the one before, in db-sync's order (integers
/// numerically, text byte for byte). A backend that sorts by another collation, a shared
/// key or a NULL key breaks this; acting on such a page could delete rows that exist, so
/// it is an error naming both keys.
pub fn check_ascending<T>(
    side: &dyn Connector,
    scope: &TableScope,
    page: &[T],
    after: Option<&Key>,
    key: impl Fn(&T) -> Option<Key>,
) -> Result<(), ConnectorError> {
    let mut previous: Option<Key> = after.cloned();
    for item in page {
        let Some(current) = key(item) else {
            return Err(ConnectorError::KeyOrder(format!(
                "{} returned a row of `{}` whose key `{}` is NULL or not an integer or text; rows without a \
                 usable key cannot be synced",
                side.describe_endpoint(),
                scope.table,
                scope.key_text()
            )));
        };
        if let Some(previous) = &previous
            && current <= *previous
        {
            let what = if current == *previous { "twice" } else { "out of order" };
            return Err(ConnectorError::KeyOrder(format!(
                "{} returned key {current} after key {previous} in `{}` ({what}): keys must arrive strictly \
                 ascending in byte order (a key several rows share, or a backend sorting by another \
                 collation); nothing of this page was written or deleted",
                side.describe_endpoint(),
                scope.table
            )));
        }
        previous = Some(current);
    }
    Ok(())
}

/// Every key of `range`, in pages of `limit` until the side says nothing follows, each
/// page checked with [`check_ascending`]. Returns the keys and the queries sent.
pub async fn all_keys(
    side: &dyn Connector,
    scope: &TableScope,
    range: &KeyRange,
    limit: usize,
) -> Result<(Vec<Key>, u64), ConnectorError> {
    let mut keys: Vec<Key> = Vec::new();
    let mut queries = 0;
    loop {
        let after = keys.last().cloned().or_else(|| range.after.clone());
        let page = side.read_keys(scope, &KeyRange { after: after.clone(), upto: range.upto.clone() }, limit).await?;
        queries += 1;
        check_ascending(side, scope, &page.items, after.as_ref(), |k| Some(k.clone()))?;
        if page.more && page.items.is_empty() {
            return Err(empty_page_with_more());
        }
        keys.extend(page.items);
        if !page.more {
            return Ok((keys, queries));
        }
    }
}

/// The next key window after `after`: up to `limit` keys per side.
pub async fn key_window(
    source: &dyn Connector,
    target: &dyn Connector,
    scopes: (&TableScope, &TableScope),
    after: &Option<Key>,
    limit: usize,
) -> Result<Window<Key>, ConnectorError> {
    let src = source.read_keys(scopes.0, &KeyRange::after(after.clone()), limit).await?;
    check_ascending(source, scopes.0, &src.items, after.as_ref(), |k| Some(k.clone()))?;
    let upper = page_bound(&src, |k| Some(k.clone()))?;
    let tgt = target.read_keys(scopes.1, &KeyRange { after: after.clone(), upto: upper.clone() }, limit).await?;
    check_ascending(target, scopes.1, &tgt.items, after.as_ref(), |k| Some(k.clone()))?;
    close(src.items, tgt, upper, |k| Some(k.clone()), |k| Some(k.clone()))
}

/// The next row window after `after`: up to `limit` rows per side.
pub async fn row_window(
    source: &dyn Connector,
    target: &dyn Connector,
    scopes: (&TableScope, &TableScope),
    after: &Option<Key>,
    limit: usize,
) -> Result<Window<Row>, ConnectorError> {
    let (s_scope, t_scope) = scopes;
    let src = source.read_rows(s_scope, &KeyRange::after(after.clone()), limit).await?;
    check_ascending(source, s_scope, &src.items, after.as_ref(), |r| s_scope.key_of(r))?;
    let upper = page_bound(&src, |r| s_scope.key_of(r))?;
    let tgt = target.read_rows(t_scope, &KeyRange { after: after.clone(), upto: upper.clone() }, limit).await?;
    check_ascending(target, t_scope, &tgt.items, after.as_ref(), |r| t_scope.key_of(r))?;
    close(src.items, tgt, upper, |r| s_scope.key_of(r), |r| t_scope.key_of(r))
}

/// Sorted-merge difference of two ascending key lists: `(in a only, in b only)`.
pub fn key_diff(a: &[Key], b: &[Key]) -> (Vec<Key>, Vec<Key>) {
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                only_a.push(x.clone());
                i += 1;
            }
            (Some(x), None) => {
                only_a.push(x.clone());
                i += 1;
            }
            (_, Some(y)) => {
                only_b.push(y.clone());
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    (only_a, only_b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merge difference finds keys present on one side only.
    #[test]
    fn key_diff_finds_both_sides() {
        let k = |v: &[i64]| v.iter().map(|i| Key::Int(*i)).collect::<Vec<_>>();
        let (a, b) = key_diff(&k(&[1, 2, 4, 7, 9]), &k(&[2, 3, 4, 8, 9, 10]));
        assert_eq!(a, k(&[1, 7]));
        assert_eq!(b, k(&[3, 8, 10]));
        assert_eq!(key_diff(&[], &k(&[1])), (vec![], k(&[1])));
    }

    /// A page must arrive strictly ascending after its lower bound, every row with a key;
    /// the error names both keys (issue 10: a backend's out-of-order page must stop the
    /// step before anything is deleted).
    #[test]
    fn pages_must_ascend() {
        let side = crate::connector::memory::MemoryConnector::new();
        let scope = TableScope {
            table: "t".into(),
            columns: vec!["id".into()],
            key_indexes: vec![0],
            modify_index: None,
            filter: vec![],
            skip_null_keys: false,
            skip_keys: vec![],
        };
        let some = |k: &Key| Some(k.clone());
        let text = |s: &str| Key::Text(s.into());
        assert!(check_ascending(&side, &scope, &[text("B"), text("a"), text("é")], None, some).is_ok());
        let err = check_ascending(&side, &scope, &[text("a"), text("B")], None, some).unwrap_err().to_string();
        assert!(err.contains("key \"B\" after key \"a\"") && err.contains("out of order"), "{err}");
        let err = check_ascending(&side, &scope, &[Key::Int(6), Key::Int(6)], None, some).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        let err = check_ascending(&side, &scope, &[Key::Int(3)], Some(&Key::Int(3)), some).unwrap_err().to_string();
        assert!(err.contains("key 3 after key 3"), "{err}");
        let rows = vec![vec![crate::model::Value::Null]];
        let err = check_ascending(&side, &scope, &rows, None, |r| scope.key_of(r)).unwrap_err().to_string();
        assert!(err.contains("NULL"), "{err}");
    }
}
