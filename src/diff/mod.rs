//! Finding differing rows: the sorted-merge difference of key lists, and the count-based
//! binary search ([`bisect`]). Pure algorithms over the [`crate::connector::Connector`]
//! trait; no SQL here.

pub mod bisect;

use crate::model::Key;

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
}
