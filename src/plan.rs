//! The manual's decision matrix: from row counts and modify IDs to the steps a table
//! needs and the reason for them. Pure: no I/O, no configuration parsing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One kind of work on a table. Steps run in the order the plan lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepKind {
    /// Delete target rows whose key is not in the source.
    Delete,
    /// Insert source rows whose key is not in the target.
    Add,
    /// Copy source rows modified after the watermark, in `(modify_id, key)` order.
    Incremental,
    /// Compare every row in key order and fix what differs (adds, updates and deletes).
    Changed,
}

impl StepKind {
    /// The manual's name of the step.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Delete => "delete",
            StepKind::Add => "add",
            StepKind::Incremental => "incremental",
            StepKind::Changed => "changed",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the planner knows about one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanInput {
    /// Rows in the source scope.
    pub source_count: u64,
    /// Rows in the target scope.
    pub target_count: u64,
    /// Source rows modified after the previous modify ID; `None` when the table has no
    /// modify-ID column (then changes are always assumed).
    pub changed_count: Option<u64>,
    /// `trust_modify_id` from the config.
    pub trust_modify_id: bool,
    /// A previous modify ID (watermark) exists for this table.
    pub has_previous_modify_id: bool,
    /// `min_rows_to_sync` (0 = never skip).
    pub min_rows_to_sync: u64,
    /// `check_all_tables`.
    pub check_all_tables: bool,
}

/// Steps for one table and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Steps in execution order; empty means nothing to do.
    pub steps: Vec<StepKind>,
    /// The manual's reason string.
    pub reason: String,
}

impl Plan {
    fn new(steps: &[StepKind], reason: impl Into<String>) -> Plan {
        Plan { steps: steps.to_vec(), reason: reason.into() }
    }

    /// Steps as the manual prints them, e.g. `["add", "incremental"]`.
    pub fn steps_text(&self) -> String {
        let names: Vec<String> = self.steps.iter().map(|s| format!("\"{s}\"")).collect();
        format!("[{}]", names.join(", "))
    }
}

/// The decision matrix. Modify IDs count as trusted only when `trust_modify_id` is set
/// and a previous modify ID exists, as in the manual's `trustPrev`.
pub fn decide(input: PlanInput) -> Plan {
    use StepKind::*;
    let PlanInput { source_count: source, target_count: target, changed_count, .. } = input;
    let trusted = input.trust_modify_id && input.has_previous_modify_id && changed_count.is_some();
    let has_changes = changed_count.is_none_or(|c| c > 0);
    let incremental_possible = changed_count.is_some();

    if source == 0 && target == 0 {
        return Plan::new(&[], "source and target empty => nothing to do");
    }
    if target == 0 {
        return Plan::new(&[Add], "target empty => add all");
    }
    if source < target {
        if !has_changes {
            return Plan::new(&[Delete], "target has more rows => delete extras");
        }
        return if trusted {
            Plan::new(&[Delete, Add, Incremental], "target has more rows & trusted modify id")
        } else {
            Plan::new(&[Delete, Add, Changed], "target has more rows & untrusted modify id")
        };
    }
    if source == target {
        let changed = changed_count.unwrap_or(u64::MAX);
        if input.min_rows_to_sync > 0 && changed < input.min_rows_to_sync && !input.check_all_tables {
            return Plan::new(
                &[],
                format!(
                    "same row count & {changed} changed rows < min_rows_to_sync {} => skip",
                    input.min_rows_to_sync
                ),
            );
        }
        return if trusted {
            Plan::new(&[Incremental], "same row count & trusted modify id => incremental")
        } else {
            Plan::new(&[Changed], "same row count & untrusted modify id => full compare")
        };
    }
    // source > target
    if !has_changes {
        return Plan::new(&[Add, Changed], "source has more rows & no changed modify id => full compare");
    }
    if trusted {
        Plan::new(&[Add, Incremental], "source has more rows & trusted modify id")
    } else if incremental_possible {
        Plan::new(&[Add, Incremental, Changed], "source has more rows & untrusted modify id")
    } else {
        Plan::new(&[Add, Changed], "source has more rows & no modify id field")
    }
}

#[cfg(test)]
mod tests {
    use super::StepKind::*;
    use super::*;

    fn input(source: u64, target: u64, changed: u64, trust: bool) -> PlanInput {
        PlanInput {
            source_count: source,
            target_count: target,
            changed_count: Some(changed),
            trust_modify_id: trust,
            has_previous_modify_id: true,
            min_rows_to_sync: 0,
            check_all_tables: false,
        }
    }

    /// Manual, "Scenario 1: Initial Sync (Empty Destination)".
    #[test]
    fn scenario_1_initial_sync() {
        let plan = decide(PlanInput { has_previous_modify_id: false, ..input(5000, 0, 5000, false) });
        assert_eq!(plan.steps, vec![Add]);
        assert_eq!(plan.reason, "target empty => add all");
        assert_eq!(plan.steps_text(), "[\"add\"]");
    }

    /// Manual, "Scenario 2: Records Deleted from Source".
    #[test]
    fn scenario_2_deleted_from_source() {
        let plan = decide(input(4990, 5000, 0, false));
        assert_eq!(plan.steps, vec![Delete]);
        assert_eq!(plan.reason, "target has more rows => delete extras");
    }

    /// Manual, "Scenario 3: Trusted Incremental Sync".
    #[test]
    fn scenario_3_trusted_incremental() {
        let plan = decide(input(5010, 5000, 10, true));
        assert_eq!(plan.steps, vec![Add, Incremental]);
        assert_eq!(plan.reason, "source has more rows & trusted modify id");
    }

    /// Manual, "Scenario 4: Untrusted Full Sync".
    #[test]
    fn scenario_4_untrusted_full() {
        let plan = decide(input(5010, 5000, 10, false));
        assert_eq!(plan.steps, vec![Add, Incremental, Changed]);
        assert_eq!(plan.reason, "source has more rows & untrusted modify id");
    }

    /// Matrix row "source == target && trusted": incremental only.
    #[test]
    fn equal_counts_trusted_is_incremental() {
        let plan = decide(input(5000, 5000, 3, true));
        assert_eq!(plan.steps, vec![Incremental]);
        assert_eq!(plan.reason, "same row count & trusted modify id => incremental");
    }

    /// Matrix row "source == target && !trusted": full compare.
    #[test]
    fn equal_counts_untrusted_is_full_compare() {
        let plan = decide(input(5000, 5000, 0, false));
        assert_eq!(plan.steps, vec![Changed]);
        assert_eq!(plan.reason, "same row count & untrusted modify id => full compare");
    }

    /// `trust_modify_id` without a previous modify ID is not trusted (manual's `trustPrev`).
    #[test]
    fn trust_needs_a_previous_modify_id() {
        let plan = decide(PlanInput { has_previous_modify_id: false, ..input(5000, 5000, 3, true) });
        assert_eq!(plan.steps, vec![Changed]);
    }

    /// Matrix row "source < target" with changes: delete extras, then add and modify.
    #[test]
    fn target_has_extras_and_changes() {
        assert_eq!(decide(input(4990, 5000, 7, true)).steps, vec![Delete, Add, Incremental]);
        let plan = decide(input(4990, 5000, 7, false));
        assert_eq!(plan.steps, vec![Delete, Add, Changed]);
        assert_eq!(plan.reason, "target has more rows & untrusted modify id");
    }

    /// Matrix's last row, "complex scenario": source has more rows but no modify ID moved.
    #[test]
    fn source_has_more_without_changes_is_full_compare() {
        let plan = decide(input(5010, 5000, 0, true));
        assert_eq!(plan.steps, vec![Add, Changed]);
        assert_eq!(plan.reason, "source has more rows & no changed modify id => full compare");
    }

    /// Without a modify-ID column there is no incremental step and changes are assumed.
    #[test]
    fn no_modify_field_never_plans_incremental() {
        let none = |s, t| PlanInput { changed_count: None, ..input(s, t, 0, true) };
        assert_eq!(decide(none(10, 10)).steps, vec![Changed]);
        assert_eq!(decide(none(12, 10)).steps, vec![Add, Changed]);
        assert_eq!(decide(none(8, 10)).steps, vec![Delete, Add, Changed]);
    }

    /// `min_rows_to_sync` skips unchanged tables; `check_all_tables` overrides it.
    #[test]
    fn min_rows_to_sync_and_check_all_tables() {
        let quiet = PlanInput { min_rows_to_sync: 1, ..input(5000, 5000, 0, true) };
        let plan = decide(quiet);
        assert!(plan.steps.is_empty());
        assert!(plan.reason.contains("skip"), "{}", plan.reason);
        assert_eq!(decide(PlanInput { check_all_tables: true, ..quiet }).steps, vec![Incremental]);
        // A table with enough changes is not skipped.
        assert_eq!(decide(PlanInput { changed_count: Some(1), ..quiet }).steps, vec![Incremental]);
    }

    /// Both sides empty: nothing to do; source emptied: delete everything (the delete guard
    /// in the engine decides whether that is allowed).
    #[test]
    fn empty_sides() {
        assert!(decide(input(0, 0, 0, false)).steps.is_empty());
        assert_eq!(decide(input(0, 10, 0, false)).steps, vec![Delete]);
    }
}
