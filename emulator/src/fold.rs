//! Text folding as 4D compares text: case and accents are ignored
//! (`docs/API/DataClassClass.md`, query(); `docs/Concepts/dt_string.md`; `docs/REST/manData.md`).
//!
//! 4D compares with ICU in the language of the data file. The emulator approximates that with a
//! folded key: Unicode NFD, combining marks removed, lowercase. Sorting breaks ties between equal
//! folded keys by UTF-8 bytes, so the order is total and stable (see docs/4d-rest.md §7).

use std::cmp::Ordering;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The folded form of `s`: NFD, combining marks removed, lowercase.
pub fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

/// Equality/ordering under folding only (used by comparisons in `$filter`).
pub fn cmp_fold(a: &str, b: &str) -> Ordering {
    fold(a).cmp(&fold(b))
}

/// Folded order with ties broken by bytes (used by `$orderby`).
pub fn cmp_sort(a: &str, b: &str) -> Ordering {
    cmp_fold(a, b).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// 4D's `@` wildcard match (`docs/API/DataClassClass.md`, query(): `@` stands for any number of
/// characters). Both sides are folded first unless `byte_order` is set.
pub fn wildcard_match(value: &str, pattern: &str, byte_order: bool) -> bool {
    let (v, p) = if byte_order { (value.to_string(), pattern.to_string()) } else { (fold(value), fold(pattern)) };
    let v: Vec<char> = v.chars().collect();
    let p: Vec<char> = p.chars().collect();
    // Iterative glob with a single backtrack point ('@' = any run of characters).
    let (mut vi, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '@' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '@' {
        pi += 1;
    }
    pi == p.len()
}

/// `begin` comparator: `value` starts with `prefix`, folded unless `byte_order`.
pub fn begins_with(value: &str, prefix: &str, byte_order: bool) -> bool {
    if byte_order { value.starts_with(prefix) } else { fold(value).starts_with(&fold(prefix)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_accents() {
        assert_eq!(fold("ÉtÉ Ñandú"), "ete nandu");
        assert_eq!(cmp_fold("abc", "ABC"), Ordering::Equal);
        assert_eq!(cmp_fold("n", "ñ"), Ordering::Equal);
        assert_eq!(cmp_fold("A", "å"), Ordering::Equal);
        assert_eq!(cmp_sort("b", "C"), Ordering::Less);
        assert_eq!(cmp_sort("ABC", "abc"), Ordering::Less);
        assert_ne!(cmp_sort("abc", "ABC"), Ordering::Equal);
    }

    #[test]
    fn wildcard() {
        assert!(wildcard_match("Jöhnson", "jo@", false));
        assert!(wildcard_match("Johnson", "@son", false));
        assert!(wildcard_match("Johnson", "J@h@n", false));
        assert!(!wildcard_match("Johnson", "J@x@", false));
        assert!(!wildcard_match("johnson", "Jo@", true));
        assert!(wildcard_match("a@b", "a@b", true));
        assert!(begins_with("Éric", "er", false));
        assert!(!begins_with("Éric", "er", true));
    }
}
