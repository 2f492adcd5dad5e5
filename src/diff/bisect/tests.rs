use std::collections::BTreeSet;

use super::*;
use crate::connector::memory::MemoryConnector;
use crate::demo::Rng;
use crate::model::Value;

fn scope() -> TableScope {
    TableScope {
        table: "t".into(),
        columns: vec!["id".into()],
        key_indexes: vec![0],
        modify_index: None,
        filter: vec![],
        skip_null_keys: false,
        skip_keys: vec![],
    }
}

fn side(keys: &BTreeSet<i64>) -> MemoryConnector {
    let db = MemoryConnector::new();
    db.create_table("t", &["id"], 0);
    db.insert("t", keys.iter().map(|k| vec![Value::Int(*k)]));
    db
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn search(
    source: &BTreeSet<i64>,
    target: &BTreeSet<i64>,
    direction: Direction,
    read_batch: u64,
    recent: u64,
    fanout: u64,
) -> SearchState {
    let (s, t) = (side(source), side(target));
    let scope = scope();
    let searcher = Searcher {
        source: &s,
        target: &t,
        source_scope: &scope,
        target_scope: &scope,
        direction,
        read_batch,
        recent_first: recent,
        fanout,
    };
    block_on(searcher.run(source.len() as u64, target.len() as u64)).unwrap()
}

fn ints(found: &[Key]) -> BTreeSet<i64> {
    found
        .iter()
        .map(|k| match k {
            Key::Int(i) => *i,
            _ => unreachable!(),
        })
        .collect()
}

/// Random key sets where one side only lacks keys: the search finds exactly the missing
/// (for adds) or extra (for deletes) keys, with any read batch and recent-first size.
#[test]
fn finds_exactly_the_differences_in_one_direction() {
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let n = 1 + rng.below(3000);
        let space = n * (1 + rng.below(4));
        let full: BTreeSet<i64> = (0..n).map(|_| rng.below(space)).collect();
        let k = rng.below(12);
        let clustered = rng.below(2) == 0;
        let removed: BTreeSet<i64> = if clustered {
            full.iter().rev().take(k as usize).copied().collect()
        } else {
            full.iter().filter(|_| rng.below(full.len() as i64) < k).copied().collect()
        };
        let partial: BTreeSet<i64> = full.difference(&removed).copied().collect();
        let read_batch = 1 + rng.below(64) as u64;
        let recent = [0, 10, 100][rng.below(3) as usize];
        let fanout = [2, 2, 3, 4, 8, 64][rng.below(6) as usize];

        let found = search(&full, &partial, Direction::Add, read_batch, recent, fanout);
        assert_eq!(ints(&found.found), removed, "seed {seed}: add, fan-out {fanout}");
        let found = search(&partial, &full, Direction::Delete, read_batch, recent, fanout);
        assert_eq!(ints(&found.found), removed, "seed {seed}: delete, fan-out {fanout}");
    }
}

/// With additions and deletions on both sides the search never reports a key that is
/// not a difference; when counts cancel it may find fewer, which the caller detects
/// (expected differences not found, or counts still unequal after applying them).
#[test]
fn never_reports_a_false_difference() {
    for seed in 0..300 {
        let mut rng = Rng::new(1000 + seed);
        let n = 1 + rng.below(2000);
        let source: BTreeSet<i64> = (0..n).map(|_| rng.below(n * 2)).collect();
        let mut target = source.clone();
        for _ in 0..rng.below(6) {
            let k = rng.below(n * 2);
            if !target.remove(&k) {
                target.insert(k);
            }
        }
        let truth_add: BTreeSet<i64> = source.difference(&target).copied().collect();
        let truth_del: BTreeSet<i64> = target.difference(&source).copied().collect();
        let rb = 1 + rng.below(40) as u64;
        let fanout = [2, 4, 8][rng.below(3) as usize];
        let add = search(&source, &target, Direction::Add, rb, 0, fanout);
        assert!(ints(&add.found).is_subset(&truth_add), "seed {seed}");
        let del = search(&source, &target, Direction::Delete, rb, 0, fanout);
        assert!(ints(&del.found).is_subset(&truth_del), "seed {seed}");
        let expected = source.len().saturating_sub(target.len());
        if truth_del.is_empty() {
            assert_eq!(ints(&add.found), truth_add, "seed {seed}: pure adds are all found");
        } else if add.found.len() < expected {
            assert!(add.stack.is_empty(), "seed {seed}: search ends only when exhausted");
        }
    }
}

/// A single difference in 100,000 rows costs O(log n) queries and reads about one read
/// batch of keys.
#[test]
fn one_difference_is_logarithmic() {
    let full: BTreeSet<i64> = (0..100_000).collect();
    let mut partial = full.clone();
    partial.remove(&31_337);
    let state = search(&full, &partial, Direction::Add, 500, 0, 2);
    assert_eq!(ints(&state.found), BTreeSet::from([31_337]));
    assert!(state.queries <= 3 * 9 + 2, "queries {}", state.queries);
    assert!(state.rows_read <= 2 * 500, "rows read {}", state.rows_read);
    assert!(state.max_depth >= 7, "depth {}", state.max_depth);
}

/// A fan-out of 8 takes three levels where halving takes eight (100,000 rows to ranges of
/// at most 500), for seven lookups and seven counts a level; the last split makes only
/// as many parts as reach 500 rows.
#[test]
fn a_wider_fanout_takes_fewer_levels() {
    let full: BTreeSet<i64> = (0..100_000).collect();
    let mut partial = full.clone();
    partial.remove(&31_337);
    let state = search(&full, &partial, Direction::Add, 500, 0, 8);
    assert_eq!(ints(&state.found), BTreeSet::from([31_337]));
    assert_eq!(state.max_depth, 3, "levels");
    // 100,000 -> 12,500 -> 1,562 -> 4 parts of about 390: 7 + 7 + 3 splits points.
    assert_eq!(state.queries, 2 * (7 + 7 + 3) + 2, "queries");
    assert!(state.rows_read <= 2 * 500, "rows read {}", state.rows_read);
}

/// Recent-first: a difference among the newest keys is found in the first range, with
/// the manual's progress tokens.
#[test]
fn recent_first_searches_newest_keys_first() {
    let full: BTreeSet<i64> = (0..179_196).collect();
    let mut partial = full.clone();
    partial.remove(&179_000);
    let (s, t) = (side(&full), side(&partial));
    let scope = scope();
    let searcher = Searcher {
        source: &s,
        target: &t,
        source_scope: &scope,
        target_scope: &scope,
        direction: Direction::Add,
        read_batch: 500,
        recent_first: 5000,
        fanout: 2,
    };
    block_on(async {
        let mut state = searcher.start(179_196, 179_195).await.unwrap();
        let first = searcher.step(&mut state).await.unwrap();
        assert_eq!(token(&first[0], state.total), "2.8%↑5000");
        while !searcher.step(&mut state).await.unwrap().is_empty() {}
        assert_eq!(ints(&state.found), BTreeSet::from([179_000]));
    });
}

/// The search state survives a round trip through the checkpoint encoding and a resumed
/// search ends with the same result as an uninterrupted one.
#[test]
fn resumed_search_matches_uninterrupted() {
    let full: BTreeSet<i64> = (0..50_000).collect();
    let partial: BTreeSet<i64> = full.iter().filter(|k| *k % 9973 != 5).copied().collect();
    let (s, t) = (side(&full), side(&partial));
    let scope = scope();
    let searcher = Searcher {
        source: &s,
        target: &t,
        source_scope: &scope,
        target_scope: &scope,
        direction: Direction::Add,
        read_batch: 100,
        recent_first: 0,
        fanout: 2,
    };
    block_on(async {
        let mut state = searcher.start(full.len() as u64, partial.len() as u64).await.unwrap();
        for _ in 0..7 {
            searcher.step(&mut state).await.unwrap();
        }
        let bytes = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        let (mut resumed, _): (SearchState, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(resumed, state);
        while !searcher.step(&mut resumed).await.unwrap().is_empty() {}
        let expected: BTreeSet<i64> = full.difference(&partial).copied().collect();
        assert_eq!(ints(&resumed.found), expected);
    });
}

/// Text keys split and compare in byte order like integer keys.
#[test]
fn text_keys() {
    let text_scope = scope();
    let make = |keys: &[String]| {
        let db = MemoryConnector::new();
        db.create_table("t", &["id"], 0);
        db.insert("t", keys.iter().map(|k| vec![Value::Text(k.clone())]));
        db
    };
    let all: Vec<String> = (0..3000).map(|i| format!("{}{i:05}", ["a", "B", "é", "Z"][i % 4])).collect();
    let missing = ["a00400".to_string(), "é02998".to_string()];
    let partial: Vec<String> = all.iter().filter(|k| !missing.contains(k)).cloned().collect();
    let (s, t) = (make(&all), make(&partial));
    let searcher = Searcher {
        source: &s,
        target: &t,
        source_scope: &text_scope,
        target_scope: &text_scope,
        direction: Direction::Add,
        read_batch: 50,
        recent_first: 0,
        fanout: 2,
    };
    let state = block_on(searcher.run(3000, 2998)).unwrap();
    let mut found: Vec<Key> = state.found;
    found.sort();
    assert_eq!(found, missing.iter().map(|k| Key::Text(k.clone())).collect::<Vec<_>>());
}
