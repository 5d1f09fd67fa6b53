//! A simulated day: many replicas' `RemoteJwks` against one counting JWKS server, with
//! paused time. Shows the load each replica puts on the identity provider and that the
//! jitter spreads replicas that started in lockstep.
//!
//! `cargo test --features axum --test simulation -- --nocapture` prints the figures.
#![cfg(feature = "axum")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tower_jwt_auth::RemoteJwks;

const REPLICAS: usize = 50;
const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(start_paused = true)]
async fn a_day_of_many_replicas_costs_the_idp_one_fetch_per_replica_per_refresh_and_spreads_out() {
    let server = JwksServer::start(&jwks_of(&[&key("es256")])).await;
    let start = tokio::time::Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(RemoteJwks::builder(server.url()).build().await.expect("replica"));
    }
    tokio::time::sleep(DAY).await;

    let fetches_per_replica = (server.hits() - REPLICAS) as f64 / REPLICAS as f64;
    let failures: u64 = replicas.iter().map(|r| r.health().failures).sum();
    let times: Vec<f64> = server
        .times
        .lock()
        .expect("times")
        .iter()
        .map(|t| (*t - start).as_secs_f64())
        .collect();

    // Requests per one-second window, over the second half of the day.
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for t in times.iter().filter(|t| **t > DAY.as_secs_f64() / 2.0) {
        *per_second.entry(*t as u64).or_default() += 1;
    }
    let busiest_second = per_second.values().copied().max().unwrap_or(0);
    let seconds_with_fetches = per_second.len();
    let second_half_fetches: usize = per_second.values().sum();

    println!(
        "simulation: {REPLICAS} replicas, 1 day, default policy (5 min, refresh at 90 % +-10 %): \
         {fetches_per_replica:.1} fetches per replica per day ({:.2} per hour), {failures} failures; \
         second half of the day: {second_half_fetches} fetches over {seconds_with_fetches} distinct seconds, \
         busiest second {busiest_second} fetches (lockstep would be {REPLICAS})",
        fetches_per_replica / 24.0
    );

    // A refresh every 243 s to 297 s: between 290 and 356 fetches a day.
    assert!(
        (290.0..=356.0).contains(&fetches_per_replica),
        "{fetches_per_replica}"
    );
    assert_eq!(failures, 0);
    // Started together, the replicas drift apart: no second sees more than a handful.
    assert!(busiest_second <= 6, "busiest second had {busiest_second} fetches");
    assert!(seconds_with_fetches as f64 > second_half_fetches as f64 * 0.8);
    for replica in &replicas {
        assert!(replica.health().ready);
    }
}
