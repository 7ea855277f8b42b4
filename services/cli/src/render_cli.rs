//! `meridian topology render TOPOLOGY --out DIR` (docs/deploy.md): the files of a deployment,
//! rendered by `meridian_deploy::render` and written here.

use anyhow::Context;
use meridian_deploy::{Options, Security};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// The topology file (refused as `topology check` refuses it).
    pub topology: PathBuf,
    /// A new (or empty) directory to write into.
    #[arg(long)]
    pub out: PathBuf,
    /// The cluster's root public key (`meridian token keygen` prints it): nodes verify tokens
    /// with it, and mTLS uses CONFIG_ROOT/tls/{ca.pem,node-ID.pem,node-ID.key}.
    #[arg(long, env = "MERIDIAN_ROOT_PUBLIC_KEY", conflicts_with = "insecure")]
    pub root_public_key: Option<String>,
    /// Render nodes without token checks or TLS (security.mode = "insecure").
    #[arg(long)]
    pub insecure: bool,
    /// Where the rendered files are installed on each machine.
    #[arg(long, default_value = meridian_deploy::CONFIG_ROOT)]
    pub config_root: String,
    /// Under which each node keeps its data (DATA_ROOT/node-ID).
    #[arg(long, default_value = meridian_deploy::DATA_ROOT)]
    pub data_root: String,
    /// The meridian binary the units run.
    #[arg(long, default_value = meridian_deploy::BINARY)]
    pub binary: String,
    /// The system user the units run nodes as.
    #[arg(long, default_value = meridian_deploy::USER)]
    pub user: String,
    /// Listen on every interface at the node's port (the topology's address is advertised).
    #[arg(long)]
    pub listen_any: bool,
    /// Rehearse on one machine: nodes dial other regions through the WAN emulator's relays
    /// (run `meridian wan-proxy $(cat OUT/wan-proxy.args)`); loopback addresses only.
    #[arg(long)]
    pub wan_emulator: bool,
}

pub fn run(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let security = match (args.root_public_key, args.insecure) {
        (Some(key), _) => Security::Secure {
            root_public_key: key,
        },
        (None, true) => Security::Insecure,
        (None, false) => anyhow::bail!(
            "give --root-public-key KEY (the public half `meridian token keygen` prints) for \
             nodes that check tokens and use mTLS, or --insecure for nodes that do neither"
        ),
    };
    let text = std::fs::read_to_string(&args.topology)
        .with_context(|| format!("reading {}", args.topology.display()))?;
    let options = Options {
        config_root: args.config_root,
        data_root: args.data_root,
        binary: args.binary,
        user: args.user,
        listen_any: args.listen_any,
        security,
        wan_emulator: args.wan_emulator,
    };
    let files = match meridian_deploy::render(&text, &args.topology.display().to_string(), &options)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    empty_dir(&args.out)?;
    for f in &files {
        let path = args.out.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, &f.text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "rendered {} files into {} (install them under {}; docs/deploy.md)",
        files.len(),
        args.out.display(),
        options.config_root
    );
    Ok(ExitCode::SUCCESS)
}

/// Makes `dir` if absent; refuses one that holds anything (a file of an earlier render would
/// otherwise stay beside this one's).
fn empty_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!(
                    "{} is not empty: render into a new directory (files of an earlier render \
                     would stay beside this one's)",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}
