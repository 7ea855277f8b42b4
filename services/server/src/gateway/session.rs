//! The session over HTTP: the `meridian-session` header, which a client sends with a request
//! and gets back, updated, with every answer — what the SDK keeps in memory (DESIGN.md §2).
//!
//! Its text: `vector=G:R,G:R;last=G[;ts=P.L]` — the version vector (group → highest revision
//! seen), the group of the session's previous operation (`last=0`: none yet; `last=any`: not
//! known, so the next read of any group syncs) and, once it has seen one, the highest
//! timestamp (µs since the Unix epoch `.` counter; docs/closed-timestamps.md). Sent back after each call, presented with the
//! next one to any node of any region, it keeps reads sequentially consistent over HTTP.

use meridian_proto::kv as pb;
use std::collections::BTreeMap;

/// The header's name.
pub const HEADER: &str = "meridian-session";

/// `last_group` when the previous operation is not known (the SDK's `UNKNOWN_GROUP`).
const UNKNOWN: u64 = u64::MAX;

/// Most groups a session's vector may name (a cluster has a handful).
const GROUPS_MAX: usize = 1024;

/// Reads the header's text (`None`: a new session).
pub fn parse(text: Option<&str>) -> Result<pb::Session, String> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(pb::Session::default());
    };
    let mut session = pb::Session::default();
    let (mut vector, mut last) = (None, None);
    for part in text.split(';').map(str::trim) {
        if let Some(v) = part.strip_prefix("vector=") {
            vector = Some(v);
        } else if let Some(l) = part.strip_prefix("last=") {
            last = Some(l);
        } else if let Some(t) = part.strip_prefix("ts=") {
            let bad = || format!("{HEADER}: ts={t:?} is not MICROSECONDS.COUNTER");
            let (p, l) = t.split_once('.').ok_or_else(bad)?;
            session.timestamp = Some(pb::HlcTimestamp {
                physical_us: p.trim().parse().map_err(|_| bad())?,
                logical: l.trim().parse().map_err(|_| bad())?,
            });
        } else {
            return Err(format!(
                "{HEADER}: unexpected part {part:?}; the form is `vector=G:R,G:R;last=G[;ts=P.L]`"
            ));
        }
    }
    for pair in vector.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        let (g, r) = pair
            .split_once(':')
            .ok_or_else(|| format!("{HEADER}: {pair:?} is not GROUP:REVISION"))?;
        let number = |s: &str, what: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("{HEADER}: {what} {s:?} is not a number"))
        };
        let (g, r) = (number(g, "group")?, number(r, "revision")?);
        if session.vector.len() >= GROUPS_MAX {
            return Err(format!("{HEADER}: more than {GROUPS_MAX} groups"));
        }
        let e = session.vector.entry(g).or_insert(0);
        *e = (*e).max(r);
    }
    session.last_group = match last.map(str::trim) {
        None | Some("0") => 0,
        Some("any") => UNKNOWN,
        Some(g) => g
            .parse()
            .map_err(|_| format!("{HEADER}: last={g:?} is not a group, 0 or `any`"))?,
    };
    Ok(session)
}

/// The header's text for `session`.
pub fn render(session: &pb::Session) -> String {
    let sorted: BTreeMap<&u64, &u64> = session.vector.iter().collect();
    let vector: Vec<String> = sorted.iter().map(|(g, r)| format!("{g}:{r}")).collect();
    let last = match session.last_group {
        UNKNOWN => "any".to_string(),
        g => g.to_string(),
    };
    match &session.timestamp {
        Some(t) => format!(
            "vector={};last={last};ts={}.{}",
            vector.join(","),
            t.physical_us,
            t.logical
        ),
        None => format!("vector={};last={last}", vector.join(",")),
    }
}

/// How a finished call moves the session on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A write or a synced/sequential read: the answering group becomes the last one.
    Here,
    /// A stale read or a watch: the vector grows, the last group stays.
    Keep,
    /// A failure, or a call whose group is not one (leases, locks): the next read syncs.
    Unknown,
}

/// The session after a call that sent `before` and was answered with `header`.
pub fn after(before: &pb::Session, header: Option<&pb::ResponseHeader>, step: Step) -> pb::Session {
    let mut vector: BTreeMap<u64, u64> = before.vector.clone().into_iter().collect();
    if let Some(h) = header {
        for (g, r) in h.vector.iter().chain([(&h.group, &h.revision)]) {
            if *g != 0 {
                let e = vector.entry(*g).or_insert(0);
                *e = (*e).max(*r);
            }
        }
    }
    let last_group = match (step, header) {
        (Step::Here, Some(h)) if h.group != 0 => h.group,
        (Step::Keep, Some(_)) => before.last_group,
        _ => UNKNOWN,
    };
    pb::Session {
        vector: vector.into_iter().collect(),
        last_group,
        timestamp: pb::HlcTimestamp::latest(before.timestamp, header.and_then(|h| h.timestamp)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let s = parse(Some("vector=1:52,2:17;last=1")).unwrap();
        assert_eq!(s.vector.get(&1), Some(&52));
        assert_eq!(s.vector.get(&2), Some(&17));
        assert_eq!(s.last_group, 1);
        assert_eq!(render(&s), "vector=1:52,2:17;last=1");
        assert_eq!(parse(None).unwrap(), pb::Session::default());
        assert_eq!(parse(Some("last=any")).unwrap().last_group, UNKNOWN);
        assert_eq!(
            render(&parse(Some("last=any")).unwrap()),
            "vector=;last=any"
        );
        let t = parse(Some("vector=1:5;last=1;ts=1767225600000000.3")).unwrap();
        assert_eq!(
            t.timestamp,
            Some(pb::HlcTimestamp {
                physical_us: 1_767_225_600_000_000,
                logical: 3
            })
        );
        assert_eq!(render(&t), "vector=1:5;last=1;ts=1767225600000000.3");
        for bad in [
            "vector=1",
            "vector=a:1",
            "vector=1:b",
            "last=x",
            "other=1",
            "ts=5",
            "ts=a.1",
            "ts=1.-1",
        ] {
            let e = parse(Some(bad)).unwrap_err();
            assert!(e.starts_with(HEADER), "{bad}: {e}");
        }
    }

    #[test]
    fn a_call_moves_the_session_on() {
        let before = parse(Some("vector=1:5;last=1")).unwrap();
        let h = pb::ResponseHeader {
            group: 2,
            revision: 9,
            vector: [(1, 7)].into_iter().collect(),
            ..Default::default()
        };
        let here = after(&before, Some(&h), Step::Here);
        assert_eq!(render(&here), "vector=1:7,2:9;last=2");
        assert_eq!(
            render(&after(&before, Some(&h), Step::Keep)),
            "vector=1:7,2:9;last=1"
        );
        assert_eq!(
            render(&after(&before, None, Step::Here)),
            "vector=1:5;last=any"
        );
    }
}
