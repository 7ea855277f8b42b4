//! `meridian register` and `meridian resolve`: the naming service (docs/naming.md) from the
//! shell, over the SDK's `register` and `Resolver`.

use crate::locks_cli::secs;
use crate::output::Format;
use meridian_sdk::naming::Snapshot;
use meridian_sdk::{Client, Instance};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code of `meridian register` when the registration was lost (its lease expired).
pub const EXIT_REGISTRATION_LOST: u8 = 3;

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// The service: a path of the namespace, e.g. /global/services/echo (its domain decides
    /// placement and residency).
    service: String,
    /// This instance's name within the service.
    instance: String,
    /// Where clients reach the instance (host:port).
    address: String,
    /// Metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = key_value)]
    meta: Vec<(String, String)>,
    /// Seconds the registration outlives this process if it dies without deregistering.
    #[arg(long, value_parser = secs, default_value = "10")]
    ttl: Duration,
}

#[derive(clap::Args, Debug)]
pub struct ResolveArgs {
    /// The service: a path of the namespace, e.g. /global/services/echo.
    service: String,
    /// Keep printing changes (+ added, ~ changed, - gone) until Ctrl-C. With the global
    /// `--region R` (given on the command line), only R's instances, resolved by R's routers.
    #[arg(long)]
    watch: bool,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The service's `meridian://` address (what an SDK `service_channel` or `wan-proxy` dials).
fn uri(service: &str) -> String {
    format!(
        "{}{}",
        meridian_sdk::naming::SCHEME,
        service.trim_start_matches('/')
    )
}

fn instance_json(i: &Instance) -> serde_json::Value {
    json!({
        "instance": i.id, "address": i.address, "region": i.region, "meta": i.meta,
        "revision": i.revision,
    })
}

fn instance_line(i: &Instance) -> String {
    let meta: Vec<String> = i.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}\t{}\t{}\t{}", i.id, i.address, i.region, meta.join(","))
        .trim_end()
        .to_string()
}

pub async fn register(
    client: Client,
    format: Format,
    args: RegisterArgs,
) -> anyhow::Result<ExitCode> {
    let meta: BTreeMap<String, String> = args.meta.into_iter().collect();
    let reg = client
        .register(
            &args.service,
            &args.instance,
            &args.address,
            // The instance's region: that of the router it registers through (with
            // `--region R`, one of R's).
            None,
            meta,
            args.ttl,
        )
        .await?;
    match format {
        Format::Json => println!(
            "{}",
            json!({"registered": reg.key(), "address": args.address, "ttl_ms": args.ttl.as_millis() as u64})
        ),
        Format::Human => println!(
            "registered {} at {} (TTL {:?}); Ctrl-C deregisters",
            reg.key(),
            args.address,
            args.ttl
        ),
    }
    tokio::select! {
        _ = crate::wait_for_signal() => {
            reg.deregister().await?;
            if format == Format::Human {
                println!("deregistered {}/{}", args.service, args.instance);
            }
            Ok(ExitCode::SUCCESS)
        }
        ev = reg.lost() => {
            eprintln!("error: the registration was lost: {ev:?}");
            Ok(ExitCode::from(EXIT_REGISTRATION_LOST))
        }
    }
}

fn visible<'a>(s: &'a Snapshot, region: Option<&str>) -> BTreeMap<&'a str, &'a Instance> {
    s.instances
        .iter()
        .filter(|(_, i)| region.is_none_or(|r| i.region == r))
        .map(|(k, i)| (k.as_str(), i))
        .collect()
}

pub async fn resolve(
    client: Client,
    format: Format,
    args: ResolveArgs,
    only_region: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut resolver = client.resolver(&args.service).await?;
    let region = only_region.as_deref();
    let first = resolver.snapshot();
    let now = visible(&first, region);
    match format {
        Format::Json => {
            let list: Vec<_> = now.values().map(|i| instance_json(i)).collect();
            println!(
                "{}",
                json!({"service": args.service, "uri": uri(&args.service),
                       "revision": first.revision, "instances": list})
            );
        }
        Format::Human => {
            for i in now.values() {
                println!("{}", instance_line(i));
            }
            if now.is_empty() && !args.watch {
                eprintln!("no live instance of {}", args.service);
            }
        }
    }
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    let mut before = first;
    loop {
        let after = tokio::select! {
            _ = crate::wait_for_signal() => return Ok(ExitCode::SUCCESS),
            s = resolver.changed() => s?,
        };
        let (old, new) = (visible(&before, region), visible(&after, region));
        for (id, i) in &new {
            let change = match old.get(id) {
                None => Change::Added,
                Some(o) if o != i => Change::Changed,
                Some(_) => continue,
            };
            print_change(format, change, i, after.revision);
        }
        for (id, i) in &old {
            if !new.contains_key(id) {
                print_change(format, Change::Removed, i, after.revision);
            }
        }
        before = after;
    }
}

/// How an instance changed between two resolver snapshots.
#[derive(Clone, Copy)]
enum Change {
    Added,
    Changed,
    Removed,
}

fn print_change(format: Format, change: Change, i: &Instance, revision: u64) {
    let (mark, kind) = match change {
        Change::Added => ("+", "added"),
        Change::Changed => ("~", "changed"),
        Change::Removed => ("-", "removed"),
    };
    match format {
        Format::Json => println!(
            "{}",
            json!({"change": kind, "revision": revision, "instance": instance_json(i)})
        ),
        Format::Human => println!("{mark} {}", instance_line(i)),
    }
}
