//! Histories in Jepsen's EDN form, so that what the simulation recorded can be read, kept and
//! checked by tools that are not Meridian's (Knossos and Elle read this form; so does this
//! crate's stateright check, through a third-party EDN parser, `edn-format`).
//!
//! One operation event per line, as Jepsen writes `history.edn`:
//!
//! ```text
//! {:index 0, :time 1200, :type :invoke, :process 0, :f :write, :value ["/k" [nil "v1"]], :session 0, :group 1}
//! {:index 1, :time 1500, :type :ok, :process 0, :f :write, :value ["/k" [7 "v1"]], :session 0, :group 1}
//! {:index 2, :time 1600, :type :invoke, :process 1, :f :read, :value ["/k" nil], :session 1, :group 1}
//! {:index 3, :time 1900, :type :ok, :process 1, :f :read, :value ["/k" [7 "v1"]], :session 1, :group 1}
//! ```
//!
//! - `:value` is `[key register]` (Jepsen's `independent` tuples, one register per key); a
//!   register is `[revision value]` — the Raft revision that wrote it and the value — or `nil`
//!   for an absent key; a write's invocation does not know its revision yet (`nil`).
//! - `:time` is the recorder's clock (see below); a `:process` has one operation open at a time
//!   and none after an `:info` (Jepsen's rules); operations that touch (one ends as the next
//!   starts) are concurrent, as both checkers read them, so they are on different processes.
//!   `:session` names Meridian's client.
//! - `:info` is a write whose outcome is unknown; its completion carries the revision if the
//!   recorder learned it. `:fail` (definitely not applied) is read and dropped.
//! - `:session` and `:group` are Meridian's extra keys (Jepsen keeps unknown keys).
//!
//! The `:time` unit is the recorder's (microseconds in the simulation); only its order matters.

use edn_format::{Keyword, Parser, ParserOptions, Value};
use meridian_checker::{Op, OpKind, Timed};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The operations as Jepsen EDN, one event per line (invocations before completions at equal
/// times; `:info` completions after every other event).
pub fn to_edn(ops: &[Timed]) -> String {
    let last = ops
        .iter()
        .map(|t| t.end.unwrap_or(t.start))
        .max()
        .unwrap_or(0);
    // (time, 0 = invoke | 1 = complete, op index)
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, t) in ops.iter().enumerate() {
        events.push((t.start, 0, i));
        events.push((t.end.unwrap_or(last + 1), 1, i));
    }
    events.sort();
    // Processes in Jepsen's sense, each with one operation open at a time: an invocation
    // takes the lowest free process; a completion frees it, an `:info` never does (Jepsen's
    // rule). Touching operations (one ends when the next starts) are concurrent here, as in
    // both checkers, so they get different processes.
    let mut free: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
    let mut opened = 0usize;
    let mut process = vec![0usize; ops.len()];
    for &(_, kind, i) in &events {
        if kind == 0 {
            process[i] = free.pop_first().unwrap_or_else(|| {
                opened += 1;
                opened - 1
            });
        } else if ops[i].end.is_some() {
            free.insert(process[i]);
        }
    }
    let mut out = String::new();
    for (index, &(time, kind, i)) in events.iter().enumerate() {
        let t = &ops[i];
        let (f, key, register) = match &t.op.kind {
            OpKind::Write {
                key,
                value,
                revision,
            } => {
                let rev = if kind == 0 { None } else { *revision };
                ("write", key, Some((rev, value.as_str())))
            }
            OpKind::Read {
                key,
                value,
                mod_revision,
            } => (
                "read",
                key,
                match (kind, value) {
                    (1, Some(v)) => Some((*mod_revision, v.as_str())),
                    _ => None,
                },
            ),
        };
        let ty = match (kind, t.end) {
            (0, _) => "invoke",
            (_, Some(_)) => "ok",
            (_, None) => "info",
        };
        let register = match register {
            None => "nil".to_string(),
            Some((rev, v)) => format!(
                "[{} {}]",
                rev.map_or("nil".to_string(), |r| r.to_string()),
                edn_string(v)
            ),
        };
        let _ = writeln!(
            out,
            "{{:index {index}, :time {time}, :type :{ty}, :process {}, :f :{f}, :value [{} {register}], :session {}, :group {}}}",
            process[i],
            edn_string(key),
            t.op.session,
            t.op.group,
        );
    }
    out
}

/// An EDN string literal of `s`.
fn edn_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Most events one history file may hold.
pub const EVENTS_MAX: usize = 10_000_000;
/// Deepest nesting of brackets read (the parser recurses per level; an event needs 4).
pub const NESTING_MAX: usize = 16;

/// The deepest bracket nesting of `text` outside strings and comments.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped, mut in_comment) = (false, false, false);
    for c in text.chars() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else {
            match c {
                '"' => in_string = true,
                ';' => in_comment = true,
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}

/// Reads a Jepsen EDN history (as [`to_edn`] writes it, or any history of `:read`/`:write`
/// operations on `[key register]` values) back into timed operations, pairing each completion
/// with its process's invocation. An invocation never completed counts as `:info`. Errors name
/// the event (by its position) and what is wrong with it.
pub fn from_edn(text: &str) -> Result<Vec<Timed>, String> {
    let deepest = nesting(text);
    if deepest > NESTING_MAX {
        return Err(format!(
            "brackets nested {deepest} deep; a history's events nest at most {NESTING_MAX}"
        ));
    }
    let mut pending: BTreeMap<i64, (u64, Value, Value, usize, u64)> = BTreeMap::new();
    let mut done: Vec<Timed> = Vec::new();
    let parser = Parser::from_str(text, ParserOptions::default());
    for (n, parsed) in parser.enumerate() {
        if n >= EVENTS_MAX {
            return Err(format!("more than {EVENTS_MAX} events"));
        }
        let event = parsed.map_err(|e| format!("event {n}: not EDN: {e:?}"))?;
        let Value::Map(map) = &event else {
            return Err(format!("event {n}: not a map"));
        };
        let get = |k: &str| map.get(&Value::Keyword(Keyword::from_name(k)));
        let int = |k: &str| match get(k) {
            Some(Value::Integer(i)) => Ok(*i),
            other => Err(format!("event {n}: :{k} is not an integer ({other:?})")),
        };
        let kw = |k: &str| match get(k) {
            Some(Value::Keyword(kw)) => Ok(kw.name().to_string()),
            other => Err(format!("event {n}: :{k} is not a keyword ({other:?})")),
        };
        // Jepsen's nemesis (`:process :nemesis`) and other non-client events: not operations.
        let process = match get("process") {
            Some(Value::Integer(p)) => *p,
            _ => continue,
        };
        let time = u64::try_from(int("time")?).map_err(|_| format!("event {n}: negative :time"))?;
        let ty = kw("type")?;
        let f = kw("f")?;
        let value = get("value")
            .cloned()
            .ok_or_else(|| format!("event {n}: no :value"))?;
        let session = match get("session") {
            Some(Value::Integer(s)) => usize::try_from(*s)
                .map_err(|_| format!("event {n}: :session {s} is not a session number"))?,
            None => usize::try_from(process).unwrap_or(usize::MAX),
            Some(other) => return Err(format!("event {n}: :session {other} is not an integer")),
        };
        let group = match get("group") {
            Some(Value::Integer(g)) => {
                u64::try_from(*g).map_err(|_| format!("event {n}: :group {g} is not a group id"))?
            }
            None => 0,
            Some(other) => return Err(format!("event {n}: :group {other} is not an integer")),
        };
        match ty.as_str() {
            "invoke" => {
                if pending.contains_key(&process) {
                    return Err(format!(
                        "event {n}: process {process} invokes while its last operation is open"
                    ));
                }
                pending.insert(
                    process,
                    (
                        time,
                        Value::Keyword(Keyword::from_name(&f)),
                        value,
                        session,
                        group,
                    ),
                );
            }
            "ok" | "info" | "fail" => {
                let Some((start, invoked_f, _, session, group)) = pending.remove(&process) else {
                    return Err(format!(
                        "event {n}: process {process} completes an operation it never invoked"
                    ));
                };
                if invoked_f != Value::Keyword(Keyword::from_name(&f)) {
                    return Err(format!(
                        "event {n}: :{f} completes a {invoked_f} invocation"
                    ));
                }
                let read = invoked_f == Value::Keyword(Keyword::from_name("read"));
                // Not applied, or a read whose answer never came: nothing to check.
                if ty == "fail" || (ty == "info" && read) {
                    continue;
                }
                let end = (ty == "ok").then_some(time);
                let kind =
                    op_kind(&f, &value, end.is_some()).map_err(|e| format!("event {n}: {e}"))?;
                done.push(Timed {
                    op: Op {
                        session,
                        group,
                        kind,
                    },
                    start,
                    end,
                });
            }
            other => return Err(format!("event {n}: unknown :type :{other}")),
        }
    }
    // Never completed: outcome unknown (reads of unknown outcome say nothing and are dropped).
    for (_, (start, f, value, session, group)) in pending {
        if f == Value::Keyword(Keyword::from_name("write")) {
            done.push(Timed {
                op: Op {
                    session,
                    group,
                    kind: op_kind("write", &value, false)?,
                },
                start,
                end: None,
            });
        }
    }
    Ok(done)
}

/// The operation a completion's `[key register]` value describes.
fn op_kind(f: &str, value: &Value, ok: bool) -> Result<OpKind, String> {
    let Value::Vector(tuple) = value else {
        return Err(format!(":value {value} is not a [key register] vector"));
    };
    let [Value::String(key), register] = tuple.as_slice() else {
        return Err(format!(":value {value} is not [\"key\" register]"));
    };
    let register = match register {
        Value::Nil => None,
        Value::Vector(rv) => match rv.as_slice() {
            [rev, Value::String(v)] => {
                let rev = match rev {
                    Value::Nil => None,
                    Value::Integer(r) if *r >= 0 => Some(*r as u64),
                    other => return Err(format!("revision {other} is not a revision")),
                };
                Some((rev, v.clone()))
            }
            _ => return Err(format!("register {register} is not [revision \"value\"]")),
        },
        other => {
            return Err(format!(
                "register {other} is not [revision \"value\"] or nil"
            ))
        }
    };
    match f {
        "write" => {
            let Some((revision, value)) = register else {
                return Err("a write of nil".into());
            };
            Ok(OpKind::Write {
                key: key.clone(),
                value,
                revision,
            })
        }
        "read" if ok => Ok(OpKind::Read {
            key: key.clone(),
            value: register.as_ref().map(|(_, v)| v.clone()),
            mod_revision: register.and_then(|(r, _)| r),
        }),
        "read" => Err("a read of unknown outcome".into()),
        other => Err(format!("unknown :f :{other} (only :read and :write)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::t;

    fn key(t: &Timed) -> String {
        format!("{} {:?} {:?}", t.start, t.end, t.op)
    }

    fn sorted(mut v: Vec<Timed>) -> Vec<String> {
        v.sort_by_key(key);
        v.iter().map(key).collect()
    }

    #[test]
    fn a_history_survives_the_round_trip() {
        let ops = vec![
            t(
                0,
                10,
                Some(20),
                OpKind::Write {
                    key: "/k \"quoted\"\n".into(),
                    value: "v\\1".into(),
                    revision: Some(7),
                },
            ),
            t(
                1,
                15,
                Some(30),
                OpKind::Read {
                    key: "/k \"quoted\"\n".into(),
                    value: Some("v\\1".into()),
                    mod_revision: Some(7),
                },
            ),
            t(
                1,
                31,
                Some(40),
                OpKind::Read {
                    key: "/absent".into(),
                    value: None,
                    mod_revision: None,
                },
            ),
            // Unknown outcome, then the same session goes on (as a new Jepsen process).
            t(
                0,
                21,
                None,
                OpKind::Write {
                    key: "/j".into(),
                    value: "x".into(),
                    revision: None,
                },
            ),
            t(
                0,
                22,
                Some(25),
                OpKind::Write {
                    key: "/j".into(),
                    value: "y".into(),
                    revision: Some(9),
                },
            ),
        ];
        let text = to_edn(&ops);
        assert_eq!(text.lines().count(), 10);
        assert!(text.contains(":type :info"), "{text}");
        let back = from_edn(&text).expect("parses");
        assert_eq!(sorted(back), sorted(ops));
    }

    /// A Jepsen nemesis event (`:process :nemesis`) is not an operation and is passed over.
    #[test]
    fn nemesis_events_are_passed_over() {
        let text = "{:time 0, :type :info, :process :nemesis, :f :start, :value nil}\n\
                    {:time 1, :type :invoke, :process 0, :f :write, :value [\"/k\" [nil \"a\"]]}\n\
                    {:time 2, :type :ok, :process 0, :f :write, :value [\"/k\" [1 \"a\"]]}\n";
        let ops = from_edn(text).expect("parses");
        assert_eq!(ops.len(), 1);
    }

    #[test]
    fn broken_histories_are_refused_with_the_event_named() {
        let cases = [
            ("[1 2]", "event 0: not a map"),
            (
                "{:time 1, :type :ok, :process 0, :f :read, :value [\"/k\" nil]}",
                "never invoked",
            ),
            (
                "{:time 1, :type :invoke, :process 0, :f :read, :value [\"/k\" nil]}\n\
                 {:time 2, :type :invoke, :process 0, :f :read, :value [\"/k\" nil]}",
                "event 1: process 0 invokes while",
            ),
            (
                "{:time 1, :type :invoke, :process 0, :f :cas, :value [\"/k\" nil]}\n\
                 {:time 2, :type :ok, :process 0, :f :cas, :value [\"/k\" nil]}",
                "unknown :f :cas",
            ),
            ("{:time 1, :type :invoke", "event 0: not EDN"),
            (&"[".repeat(100_000), "nested 100000 deep"),
            (
                "{:time 1, :type :invoke, :process 0, :f :read, :value [\"/k\" nil], :group -1}",
                ":group -1 is not a group id",
            ),
            (
                "{:time -1, :type :invoke, :process 0, :f :read, :value [\"/k\" nil]}",
                "negative :time",
            ),
        ];
        for (text, want) in cases {
            let err = from_edn(text).expect_err("refused");
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
