//! `meridian sim check HISTORY.edn`: a recorded history (Jepsen EDN, as `sim sweep --export`
//! writes it) checked for linearizability by both Meridian's checker and an independent one
//! (stateright's tester, `meridian-crosscheck`). Exit 0: both find it linearizable; 1: both
//! find it is not; 2: the file does not read, or the checkers disagree (a bug in one of them).

use anyhow::Context;
use meridian_crosscheck::Verdict;
use std::path::Path;
use std::process::ExitCode;

/// Largest history file read.
const FILE_BYTES_MAX: u64 = 1 << 30;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let name = path.display().to_string();
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {name}"))?
        .len();
    if size > FILE_BYTES_MAX {
        anyhow::bail!("{name} is {size} bytes; histories of at most {FILE_BYTES_MAX} are read");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    match meridian_crosscheck::agree_on_edn(&text) {
        Ok((Verdict::Linearizable(keys), ops)) => {
            println!(
                "{name}: linearizable ({ops} operations, {keys} keys; Meridian's checker and \
                 stateright agree)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok((Verdict::NotLinearizable { key }, ops)) => {
            let why = meridian_crosscheck::edn::from_edn(&text)
                .ok()
                .and_then(|ops| meridian_checker::check_linearizable(&ops).err())
                .map(|v| v.to_string())
                .unwrap_or_default();
            println!(
                "{name}: NOT linearizable ({ops} operations; both checkers agree): key {key}\n{why}"
            );
            Ok(ExitCode::from(1))
        }
        Ok((Verdict::NotChecked(why), _)) => {
            eprintln!("{name}: not checked: {why}");
            Ok(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            Ok(ExitCode::from(2))
        }
    }
}
