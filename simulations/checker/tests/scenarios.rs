//! Named, hand-written histories at the checker's boundary: each passes or fails for one reason.

mod support;

use meridian_checker::{check_sequential, History, Op};
use support::{assert_fails, assert_passes, history, read, write};

const NOT_SC: &str = "not sequentially consistent";
const MALFORMED: &str = "malformed history";

/// The x/y anomaly: each session writes one key, then finds the other session's key absent.
fn xy(s0_sees_y: bool, s1_sees_x: bool) -> History {
    history([
        write(0, 1, "x", "1", Some(1)),
        read(0, 2, "y", s0_sees_y.then_some("1"), None),
        write(1, 2, "y", "1", Some(1)),
        read(1, 1, "x", s1_sees_x.then_some("1"), None),
    ])
}

#[test]
fn empty_history_passes() {
    // Nothing recorded is trivially consistent, with an empty witness.
    assert!(assert_passes(&History::new()).is_empty());
}

#[test]
fn read_your_writes_passes() {
    // A session that reads back each of its own writes is consistent.
    let h = history([
        read(0, 1, "a", None, None),
        write(0, 1, "a", "1", Some(1)),
        read(0, 1, "a", Some("1"), Some(1)),
        write(0, 1, "a", "2", Some(2)),
        read(0, 1, "a", Some("2"), Some(2)),
    ]);
    assert_eq!(
        assert_passes(&h),
        vec![(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]
    );
}

#[test]
fn stale_read_after_own_write_fails() {
    // Reading the old value after one's own overwrite has no legal order.
    let h = history([
        write(0, 1, "a", "1", Some(1)),
        write(0, 1, "a", "2", Some(2)),
        read(0, 1, "a", Some("1"), None),
    ]);
    let violation = assert_fails(&h, NOT_SC);
    assert!(violation
        .cycle
        .iter()
        .any(|line| line.contains("s0[2] read a")));
}

#[test]
fn absent_read_after_own_write_fails() {
    // A session cannot find absent a key it has written.
    let h = history([write(0, 1, "a", "1", Some(1)), read(0, 1, "a", None, None)]);
    assert_fails(&h, NOT_SC);
}

#[test]
fn xy_anomaly_across_two_groups_fails() {
    // Both reads missing the other's write needs each write after the other's read: a cycle
    // through both groups, which per-group linearizability alone would not catch.
    let violation = assert_fails(&xy(false, false), NOT_SC);
    assert_eq!(violation.cycle.len(), 4, "{violation}");
    let text = violation.to_string();
    for op in ["s0[0]", "s0[1]", "s1[0]", "s1[1]"] {
        assert!(text.contains(op), "{op} missing from:\n{text}");
    }
    assert!(text.contains("before the key's first write"), "{text}");
    assert!(text.contains("(back to "), "{text}");
}

#[test]
fn xy_variants_where_a_read_sees_the_other_write_pass() {
    // If either read (or both) sees the other session's write, some interleaving explains it.
    for (s0_sees_y, s1_sees_x) in [(true, false), (false, true), (true, true)] {
        assert_passes(&xy(s0_sees_y, s1_sees_x));
    }
}

#[test]
fn monotonic_reads_violation_fails() {
    // Reading y=2 then y=1 goes back in y's revision order.
    let h = history([
        write(0, 2, "y", "1", Some(1)),
        write(0, 2, "y", "2", Some(2)),
        read(1, 2, "y", Some("2"), Some(2)),
        read(1, 2, "y", Some("1"), Some(1)),
    ]);
    assert_fails(&h, NOT_SC);
    let in_order = history([
        write(0, 2, "y", "1", Some(1)),
        write(0, 2, "y", "2", Some(2)),
        read(1, 2, "y", Some("1"), Some(1)),
        read(1, 2, "y", Some("2"), Some(2)),
    ]);
    assert_passes(&in_order);
}

#[test]
fn group_revision_order_binds_different_keys() {
    // a=1 at revision 5 precedes b=1 at revision 6 in the group, so having seen b=1 a session
    // cannot find a absent; the opposite observation (a=1 then b absent) is fine.
    let writes = [
        write(0, 1, "a", "1", Some(5)),
        write(1, 1, "b", "1", Some(6)),
    ];
    let mut saw_b_then_not_a = writes.to_vec();
    saw_b_then_not_a.extend([
        read(2, 1, "b", Some("1"), Some(6)),
        read(2, 1, "a", None, None),
    ]);
    let violation = assert_fails(&history(saw_b_then_not_a), NOT_SC);
    assert!(violation
        .to_string()
        .contains("lower revision in the same group"));
    let mut saw_a_then_not_b = writes.to_vec();
    saw_a_then_not_b.extend([
        read(2, 1, "a", Some("1"), Some(5)),
        read(2, 1, "b", None, None),
    ]);
    assert_passes(&history(saw_a_then_not_b));
}

#[test]
fn batched_writes_sharing_a_revision_pass() {
    // Writes to different keys at one revision are one batch, in either order within it.
    let h = history([
        write(0, 1, "a", "1", Some(3)),
        write(0, 1, "b", "1", Some(3)),
        read(1, 1, "b", Some("1"), Some(3)),
        read(1, 1, "a", Some("1"), Some(3)),
        write(2, 1, "b", "2", Some(3 + 1)),
        write(3, 1, "a", "2", Some(3 + 2)),
    ]);
    assert_passes(&h);
}

#[test]
fn batches_are_ordered_level_by_level() {
    // Two batches of two writes each (linked through a barrier node): seeing the second batch
    // and then missing the first is a cycle, shown with operations only.
    let mut ops = vec![
        write(0, 1, "a", "1", Some(3)),
        write(0, 1, "b", "1", Some(3)),
        write(1, 1, "c", "1", Some(4)),
        write(1, 1, "d", "1", Some(4)),
    ];
    let legal = [
        read(2, 1, "a", Some("1"), None),
        read(2, 1, "d", None, None),
    ];
    assert_passes(&history(ops.iter().cloned().chain(legal)));
    ops.extend([
        read(2, 1, "d", Some("1"), None),
        read(2, 1, "a", None, None),
    ]);
    let violation = assert_fails(&history(ops), NOT_SC);
    assert!(
        violation.cycle.iter().all(|line| line.starts_with('s')),
        "{violation}"
    );
}

#[test]
fn unknown_value_fails_with_a_clear_message() {
    // A read of a value nobody wrote is a broken recorder or a corrupting store; say which.
    let h = history([
        write(0, 1, "a", "1", Some(1)),
        read(1, 1, "a", Some("7"), None),
    ]);
    let violation = assert_fails(&h, MALFORMED);
    assert!(
        violation
            .message
            .contains("s1[0] read a = \"7\", a value no write to a produced"),
        "{violation}"
    );
    assert!(violation.cycle.is_empty());
}

#[test]
fn reused_write_value_is_a_history_error() {
    // Two writes of one value to one key would make a read ambiguous.
    let h = history([
        write(0, 1, "a", "1", Some(1)),
        write(1, 1, "a", "1", Some(2)),
    ]);
    let violation = assert_fails(&h, MALFORMED);
    assert!(violation
        .message
        .contains("s0[0] and s1[0] both write \"1\" to a"));
    // The same value on another key is fine: reads name (key, value).
    assert_passes(&history([
        write(0, 1, "a", "1", Some(1)),
        write(1, 1, "b", "1", Some(2)),
    ]));
}

#[test]
fn two_writes_of_a_key_at_one_revision_is_a_history_error() {
    // A revision holds one write per key; two would leave the key's order undefined.
    let h = history([
        write(0, 1, "a", "1", Some(4)),
        write(1, 1, "a", "2", Some(4)),
    ]);
    assert_fails(&h, "both write a at revision 4 of group 1");
}

#[test]
fn mod_revision_contradicting_its_write_is_a_history_error() {
    // The read says the value was written at 9; the writer was told 4.
    let h = history([
        write(0, 1, "a", "1", Some(4)),
        read(1, 1, "a", Some("1"), Some(9)),
    ]);
    assert_fails(
        &h,
        "with mod_revision 9, but s0[0] wrote that value at revision 4",
    );
}

#[test]
fn absent_read_with_mod_revision_is_a_history_error() {
    // An absent key has no mod_revision; reporting one means the recorder mixed up fields.
    let h = history([read(0, 1, "a", None, Some(3))]);
    assert_fails(&h, "yet reports mod_revision 3");
}

#[test]
fn key_in_two_groups_is_a_history_error() {
    // Every key belongs to exactly one group.
    let h = history([write(0, 1, "a", "1", Some(1)), read(1, 2, "a", None, None)]);
    assert_fails(
        &h,
        "key a is used in group 1 by s0[0] and in group 2 by s1[0]",
    );
}

#[test]
fn several_history_errors_are_counted() {
    // All problems are counted, so one run shows how broken the recorder is.
    let h = history([
        read(0, 1, "a", Some("x"), None),
        read(0, 1, "b", Some("y"), None),
    ]);
    assert_fails(&h, "malformed history: 2 problems");
}

#[test]
fn observed_indeterminate_write_takes_the_readers_revision() {
    // A timed-out write that a read saw at mod_revision 2 happened at revision 2.
    let h = history([
        write(0, 1, "a", "1", Some(1)),
        write(0, 1, "a", "2", None),
        read(1, 1, "a", Some("2"), Some(2)),
        write(2, 1, "a", "3", Some(3)),
    ]);
    assert_eq!(assert_passes(&h).len(), 4);
    // Placed at its revision, it is then subject to the key's order like any write.
    let stale = history([
        write(0, 1, "a", "2", None),
        read(1, 1, "a", Some("2"), Some(2)),
        write(2, 1, "a", "1", Some(1)),
        read(1, 1, "a", Some("1"), Some(1)),
    ]);
    assert_fails(&stale, NOT_SC);
}

#[test]
fn unobserved_indeterminate_write_is_ignored() {
    // A timed-out write nobody read is treated as never having happened, and left out.
    let h = history([
        write(0, 1, "a", "1", Some(1)),
        write(0, 1, "a", "2", None),
        read(0, 1, "a", Some("1"), Some(1)),
        read(1, 1, "a", Some("1"), None),
    ]);
    let witness = assert_passes(&h);
    assert_eq!(witness.len(), 3);
    assert!(!witness.contains(&(0, 1)));
}

#[test]
fn unanswered_write_may_land_after_its_sessions_next_read() {
    // Sweep seed 1025: a put gets no answer, the session's next read still sees the old value,
    // and the put takes effect later (another session reads it at revision 2). Legal: the
    // session never learned its write's revision (docs/consistency.md), so nothing the session
    // does afterwards is ordered after that write.
    let h = history([
        write(0, 1, "a", "1", Some(1)),
        write(0, 1, "a", "2", None),
        read(0, 1, "a", Some("1"), Some(1)),
        read(1, 1, "a", Some("2"), Some(2)),
    ]);
    assert_eq!(assert_passes(&h).len(), 4);
    // What the session did before the unanswered write still precedes it: reading its value
    // before writing it is a read from the future.
    let future = history([
        read(0, 1, "a", Some("2"), Some(2)),
        write(0, 1, "a", "2", None),
    ]);
    assert_fails(&future, NOT_SC);
    // And the answered operations around it stay in session order: after its own write of 3,
    // the session cannot read the 1 that 3 overwrote.
    let stale = history([
        write(0, 1, "a", "1", Some(1)),
        write(0, 1, "a", "3", Some(3)),
        write(0, 1, "a", "2", None),
        read(0, 1, "a", Some("1"), Some(1)),
    ]);
    assert_fails(&stale, NOT_SC);
}

#[test]
fn indeterminate_write_observed_without_revision_is_a_history_error() {
    // Without a revision the write cannot be placed in its group's order.
    let h = history([
        write(0, 1, "a", "2", None),
        read(1, 1, "a", Some("2"), None),
    ]);
    assert_fails(&h, "indeterminate write observed without revision");
}

#[test]
fn indeterminate_write_seen_at_two_revisions_is_a_history_error() {
    // Two reads disagree on when the write happened.
    let h = history([
        write(0, 1, "a", "2", None),
        read(1, 1, "a", Some("2"), Some(2)),
        read(2, 1, "a", Some("2"), Some(3)),
    ]);
    assert_fails(&h, "was seen at mod_revision 2 by s1[0] and at 3 by s2[0]");
}

#[test]
fn reading_a_write_from_ones_own_future_fails() {
    // A session cannot read a value it only writes later.
    let h = history([
        read(0, 1, "a", Some("1"), None),
        write(0, 1, "a", "1", Some(1)),
    ]);
    assert_fails(&h, NOT_SC);
}

#[test]
fn long_cycle_output_is_bounded() {
    // A ring of 60 sessions, each missing the next one's write, is one 120-operation cycle;
    // the violation keeps its two ends and counts the middle.
    let sessions = 60;
    let mut ops: Vec<Op> = Vec::new();
    for s in 0..sessions {
        let next = (s + 1) % sessions;
        ops.push(write(s, s as u64, &format!("k{s}"), "1", Some(1)));
        ops.push(read(s, next as u64, &format!("k{next}"), None, None));
    }
    let violation = assert_fails(&history(ops), "these 120 operations form a cycle");
    assert_eq!(violation.cycle.len(), 20);
    assert!(violation
        .cycle
        .iter()
        .any(|line| line == "... 101 more operations ..."));
}

#[test]
fn witness_resolves_to_ops_and_merge_keys_by_session() {
    // Histories recorded by separate clients merge by session; the witness indexes the merge.
    let left = history([
        write(0, 1, "a", "1", Some(1)),
        write(1, 1, "a", "2", Some(2)),
    ]);
    let right = history([read(0, 1, "a", Some("2"), Some(2))]);
    let merged = History::merge([left, right]);
    assert_eq!(merged.len(), 3);
    assert!(!merged.is_empty());
    assert_eq!(merged.get(0, 1), Some(&read(0, 1, "a", Some("2"), Some(2))));
    let witness = assert_passes(&merged);
    assert_eq!(witness.last(), Some(&(0, 1)));
    assert!(check_sequential(&merged).is_ok());
}
