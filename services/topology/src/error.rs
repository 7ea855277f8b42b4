//! What is wrong with a topology file: every problem, each with where it is.

use serde::Serialize;
use std::fmt;

/// One thing wrong with a topology file.
///
/// `location` is a path into the file (`groups[1] ("eu-west").voters[2]`,
/// `rtt_ms.eu-west.ap-northeast`, `domains[3] ("/x/")`), prefixed with the 1-based line it
/// is on (`line 42: ...`). It is empty when the problem concerns the file as a whole (it
/// cannot be read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

/// A topology file that cannot be used, and every reason why.
///
/// Displays as one line per problem: `FILE: LOCATION: MESSAGE`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(source_name, problems))]
pub struct TopologyError {
    /// The file path (or whatever name the caller gave the text).
    pub source_name: String,
    /// Never empty.
    pub problems: Vec<Problem>,
}

impl TopologyError {
    pub(crate) fn single(source_name: &str, location: String, message: String) -> TopologyError {
        TopologyError {
            source_name: source_name.to_string(),
            problems: vec![Problem { location, message }],
        }
    }
}

fn render(source_name: &str, problems: &[Problem]) -> String {
    // A name may hold a newline (TOML quoted keys allow it); keep one problem per line.
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{source_name}: {p}").replace('\n', "\\n"))
        .collect();
    lines.join("\n")
}
