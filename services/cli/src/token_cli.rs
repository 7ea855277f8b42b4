//! `meridian token keygen|mint|attenuate|inspect|verify`: capability tokens, made and read
//! offline (docs/security.md); `meridian token revoke|revoked`: the cluster's revocation list,
//! through an endpoint. The token logic is `meridian_auth`'s; this is its shell.

use crate::output::Format;
use anyhow::Context;
use meridian_auth::{Grant, Narrowing, Op, OpSet, RootKey, RootPublicKey};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(clap::Subcommand, Debug)]
pub enum TokenCmd {
    /// Make a cluster root key file (mode 0600) and print its public half (what nodes verify with).
    Keygen {
        /// Where to write the key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a token with the root key: OPS under every PREFIX, for TTL.
    Mint {
        /// The root key file (`meridian token keygen`).
        #[arg(long, env = "MERIDIAN_ROOT_KEY")]
        root_key: PathBuf,
        /// A key prefix the token covers (repeatable), e.g. /us-east/app/.
        #[arg(long = "prefix", required = true)]
        prefixes: Vec<String>,
        /// Operations: read, write, watch, lease, lock, admin (comma-separated) or `all`.
        #[arg(long, value_parser = parse_ops)]
        ops: OpSet,
        /// How long the token lives: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Narrow a token: fewer prefixes, fewer operations or less time. No key needed.
    Attenuate {
        /// The token to narrow.
        token: String,
        /// Keep only requests under this prefix (repeatable: under any of them).
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
        /// Keep only these operations.
        #[arg(long, value_parser = parse_ops)]
        ops: Option<OpSet>,
        /// Keep it only this long from now.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
    },
    /// Show a token's blocks (Datalog) and revocation ids. Signatures are not checked.
    Inspect { token: String },
    /// Check a token's signatures against a root public key and, with --op and --key, whether
    /// it allows one request now.
    Verify {
        token: String,
        /// The root public key (`ed25519/...`, as `keygen` prints it).
        #[arg(long, env = "MERIDIAN_ROOT_PUBLIC_KEY")]
        root_public_key: String,
        #[arg(long, requires = "key", value_parser = parse_op)]
        op: Option<Op>,
        #[arg(long, requires = "op")]
        key: Option<String>,
    },
    /// Revoke, in every region, each token carrying one of these blocks: a revocation id (as
    /// `inspect` prints it), or a token (its last block: that token and every token attenuated
    /// from it). Needs `admin` on `/` (--token).
    Revoke {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List the cluster's revoked ids (needs `admin` on `/`).
    Revoked,
}

/// A revocation id as given, or the last block's id of a token given instead.
fn revocation_id(arg: &str) -> anyhow::Result<String> {
    let id = arg.trim().to_ascii_lowercase();
    if meridian_auth::is_revocation_id(&id) {
        return Ok(id);
    }
    let arg = arg.trim();
    let i = meridian_auth::inspect(arg).map_err(|e| {
        anyhow::anyhow!(
            "{:?}… is neither a revocation id (128 hex digits) nor a token: {e}",
            arg.chars().take(24).collect::<String>()
        )
    })?;
    i.revocation_ids
        .last()
        .cloned()
        .context("the token has no blocks")
}

/// `meridian token revoke`.
pub async fn revoke(
    client: meridian_sdk::Client,
    format: Format,
    args: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let ids = args
        .iter()
        .map(|a| revocation_id(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let r = client.revoke_tokens(&ids).await?;
    match format {
        Format::Json => println!(
            "{}",
            json!({"revision": r.revision, "newly_revoked": r.newly_revoked, "ids": ids})
        ),
        Format::Human => println!(
            "revoked {} id(s) ({} new) at revision {} of the global group",
            ids.len(),
            r.newly_revoked,
            r.revision
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `meridian token revoked`.
pub async fn revoked(client: meridian_sdk::Client, format: Format) -> anyhow::Result<ExitCode> {
    let r = client.revoked_tokens().await?;
    match format {
        Format::Json => println!("{}", json!({"revision": r.revision, "ids": r.ids})),
        Format::Human => {
            for id in &r.ids {
                println!("{id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_ops(s: &str) -> Result<OpSet, String> {
    s.parse()
}

fn parse_op(s: &str) -> Result<Op, String> {
    s.parse()
}

/// `90s`, `30m`, `1h`, `7d` (a whole number and a unit), above zero.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 90s, 30m, 1h, 7d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => return Err(format!("{s:?}: the unit is one of s, m, h, d")),
    };
    match secs {
        Some(0) => Err(format!("{s:?}: a ttl above zero")),
        Some(secs) if secs <= 10 * 365 * 86_400 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?}: at most 10 years")),
    }
}

pub fn run(cmd: TokenCmd, format: Format) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Revoke { .. } | TokenCmd::Revoked => {
            anyhow::bail!("`token revoke` and `token revoked` go through an endpoint")
        }
        TokenCmd::Keygen { out } => {
            let key = RootKey::generate();
            write_secret(&out, &key.to_text())?;
            let public = key.public().to_text();
            match format {
                Format::Json => println!(
                    "{}",
                    json!({"key_file": out.display().to_string(), "public_key": public})
                ),
                Format::Human => {
                    println!("wrote {} (keep it secret: it mints tokens)", out.display());
                    println!("public key: {public}");
                }
            }
        }
        TokenCmd::Mint {
            root_key,
            prefixes,
            ops,
            ttl,
        } => {
            let text = std::fs::read_to_string(&root_key)
                .with_context(|| format!("reading the root key {}", root_key.display()))?;
            let key = RootKey::parse(&text)
                .with_context(|| format!("the root key {}", root_key.display()))?;
            let expires = SystemTime::now() + ttl;
            let token = meridian_auth::mint(
                &key,
                &Grant {
                    prefixes,
                    ops,
                    expires,
                },
            )?;
            println!("{token}");
        }
        TokenCmd::Attenuate {
            token,
            prefixes,
            ops,
            ttl,
        } => {
            let narrowed = meridian_auth::attenuate(
                &token,
                &Narrowing {
                    prefixes: (!prefixes.is_empty()).then_some(prefixes),
                    ops,
                    expires: ttl.map(|t| SystemTime::now() + t),
                },
            )?;
            println!("{narrowed}");
        }
        TokenCmd::Inspect { token } => {
            let i = meridian_auth::inspect(&token)?;
            match format {
                Format::Json => println!(
                    "{}",
                    json!({"blocks": i.blocks, "revocation_ids": i.revocation_ids})
                ),
                Format::Human => {
                    for (n, (block, id)) in i.blocks.iter().zip(&i.revocation_ids).enumerate() {
                        let what = if n == 0 { "authority" } else { "attenuation" };
                        println!("block {n} ({what}), revocation id {id}:");
                        for line in block.lines() {
                            println!("  {line}");
                        }
                    }
                }
            }
        }
        TokenCmd::Verify {
            token,
            root_public_key,
            op,
            key,
        } => {
            let root = RootPublicKey::parse(&root_public_key)?;
            let verified = match meridian_auth::verify(&token, &root) {
                Ok(v) => v,
                Err(refusal) => {
                    eprintln!("{refusal}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            if let (Some(op), Some(key)) = (op, key) {
                if let Err(refusal) = verified.authorize(op, &key, SystemTime::now()) {
                    eprintln!("{refusal}");
                    return Ok(ExitCode::FAILURE);
                }
                println!("ok: the token allows {op} on {key:?}");
            } else {
                println!("ok: signed by {}", root.to_text());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to a new file readable by its owner only (refuses to overwrite).
pub fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;
    use std::time::Duration;

    #[test]
    fn ttls_read_as_operators_write_them() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "h",
            "1",
            "1w",
            "0s",
            "-1h",
            "99999999999999999999d",
            "4000d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
