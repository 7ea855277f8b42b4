//! gRPC health checking (`grpc.health.v1`, for Kubernetes gRPC probes and load balancers) and
//! server reflection (`grpc.reflection.v1` and `v1alpha`, for grpcurl) on the node's gRPC
//! port. One entry: [`services`]. Neither carries data, so neither asks for a token
//! (docs/security.md); reflection shows the client-facing services only.
//!
//! Health follows readiness: the server (`""`) and `meridian.v1.Kv` are `SERVING` while every
//! group the node hosts has a known leader and this replica is not known to lag it by more
//! than `[http] ready_lag_ms` — the rule `/readyz` answers by ([`unready`]).

use crate::metrics::ScrapeSource;
use meridian_proto::kv as pb;
use std::time::Duration;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;
use tonic_reflection::server::{v1, v1alpha};

/// How often the health status follows readiness.
const HEALTH_PERIOD: Duration = Duration::from_secs(1);

/// The services names health reports on (besides the whole server, `""`).
const HEALTH_SERVICES: [&str; 1] = ["meridian.v1.Kv"];

/// Why this node is not ready to serve, one reason per group (empty: ready): a hosted group
/// with no known leader, or a replica known to lag its leader by more than `max_lag`.
pub fn unready(s: &pb::StatusResponse, max_lag: Duration) -> Vec<String> {
    let mut reasons = Vec::new();
    if s.groups.is_empty() {
        reasons.push("no group is hosted yet".to_string());
    }
    for g in &s.groups {
        if g.leader == 0 {
            reasons.push(format!("group {} ({}): no known leader", g.group, g.name));
        } else if g.lag_ms == u64::MAX {
            reasons.push(format!(
                "group {} ({}): this replica's lag behind its leader is not known yet",
                g.group, g.name
            ));
        } else if g.lag_ms > max_lag.as_millis() as u64 {
            reasons.push(format!(
                "group {} ({}): this replica lags its leader by {} ms (bound {} ms)",
                g.group,
                g.name,
                g.lag_ms,
                max_lag.as_millis()
            ));
        }
    }
    reasons
}

/// The health service and the two reflection services, and a task that keeps health following
/// readiness (from `status`) until `stop` says so.
#[allow(clippy::type_complexity)]
pub fn services(
    status: ScrapeSource,
    max_lag: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<
    (
        HealthServer<impl Health>,
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(meridian_proto::CLIENT_FILE_DESCRIPTOR_SET)
    };
    let reflection = builder().build_v1()?;
    let reflection_alpha = builder().build_v1alpha()?;
    tokio::spawn(async move {
        let mut last = None;
        loop {
            // On this task, not a blocking thread: a deterministic simulation runs the node too,
            // and a thread outside its scheduler would make its runs differ.
            let ready = unready(&status().status, max_lag).is_empty();
            let now = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if last != Some(now) {
                reporter.set_service_status("", now).await;
                for s in HEALTH_SERVICES {
                    reporter.set_service_status(s, now).await;
                }
                last = Some(now);
            }
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_PERIOD) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    Ok((health, reflection, reflection_alpha))
}
