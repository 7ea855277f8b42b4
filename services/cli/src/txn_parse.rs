//! The small language of `meridian txn`:
//! compares `value KEY = V`, `version|mod|create KEY (=|!=|>|<) N`, `exists KEY`, `missing KEY`;
//! ops `put KEY VALUE`, `del KEY`, `delprefix PREFIX`, `get KEY`.

use meridian_sdk::pb;

fn words(s: &str) -> Result<Vec<String>, String> {
    shlex::split(s).ok_or_else(|| format!("unbalanced quotes in {s:?}"))
}

fn result_op(op: &str) -> Result<pb::compare::Result, String> {
    Ok(match op {
        "=" | "==" => pb::compare::Result::Equal,
        "!=" => pb::compare::Result::NotEqual,
        ">" => pb::compare::Result::Greater,
        "<" => pb::compare::Result::Less,
        other => return Err(format!("unknown comparison {other:?}; use = != > <")),
    })
}

pub fn compare(s: &str) -> Result<pb::Compare, String> {
    let w = words(s)?;
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["exists", key] | ["missing", key] => Ok(pb::Compare {
            key: key.as_bytes().to_vec(),
            target: pb::compare::Target::Exists as i32,
            result: pb::compare::Result::Equal as i32,
            exists: w[0] == "exists",
            ..Default::default()
        }),
        ["value", key, op, value] => Ok(pb::Compare {
            key: key.as_bytes().to_vec(),
            target: pb::compare::Target::Value as i32,
            result: result_op(op)? as i32,
            value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        [target @ ("version" | "mod" | "create"), key, op, n] => Ok(pb::Compare {
            key: key.as_bytes().to_vec(),
            target: match *target {
                "version" => pb::compare::Target::Version,
                "mod" => pb::compare::Target::ModRevision,
                _ => pb::compare::Target::CreateRevision,
            } as i32,
            result: result_op(op)? as i32,
            number: n.parse().map_err(|_| format!("{n:?} is not a number"))?,
            ..Default::default()
        }),
        _ => Err(format!(
            "cannot parse compare {s:?}; expected e.g. 'value /k = v', 'version /k > 2', 'exists /k'"
        )),
    }
}

pub fn op(s: &str) -> Result<pb::TxnOp, String> {
    let w = words(s)?;
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let op = match w.as_slice() {
        ["put", key, value] => pb::txn_op::Op::Put(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        ["del", key] => pb::txn_op::Op::Delete(pb::DeleteRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
        ["delprefix", key] => pb::txn_op::Op::Delete(pb::DeleteRequest {
            key: key.as_bytes().to_vec(),
            prefix: true,
            ..Default::default()
        }),
        ["get", key] => pb::txn_op::Op::Get(pb::GetRequest {
            key: key.as_bytes().to_vec(),
            read: None,
            session: None,
        }),
        _ => {
            return Err(format!(
                "cannot parse op {s:?}; expected 'put KEY VALUE', 'del KEY', 'delprefix P' or 'get KEY'"
            ))
        }
    };
    Ok(pb::TxnOp { op: Some(op) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each form of the txn language parses to the matching compare or op, and junk is refused.
    #[test]
    fn parses() {
        let c = compare("version /a > 2").unwrap();
        assert_eq!((c.target, c.result, c.number), (1, 2, 2));
        let c = compare("value /a = 'hello world'").unwrap();
        assert_eq!(c.value, b"hello world");
        assert!(compare("missing /a").unwrap().exists.eq(&false));
        assert!(matches!(
            op("put /a 1").unwrap().op,
            Some(pb::txn_op::Op::Put(_))
        ));
        assert!(compare("size /a > 1").is_err());
        assert!(op("put /a").is_err());
    }
}
