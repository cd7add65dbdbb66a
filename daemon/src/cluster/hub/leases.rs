//! A dead box is an alarm: every box renews its key in the lease bucket, whose entries expire
//! after the hub's lease lifetime. Each round the hub compares the boxes it knows with the live
//! leases; a box whose lease is gone gets one `box-down` (listing its open incidents as it last
//! reported them) and, when its lease is back, one clearing — both posted to the webhook.
//!
//! Invariants: the down flag in PostgreSQL changes only after the webhook took the message, so a
//! crash in between repeats a message, never loses one; a round that cannot read the leases
//! (the hub itself is cut off) decides nothing; only the active hub decides, under its fencing
//! token ([`super::active`]).

use super::active::Fence;
use super::metrics::HubMetrics;
use super::postgres;
use super::HubOptions;
use crate::cluster::wire::Lease;
use async_nats::jetstream::kv;
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the leases are compared.
const ROUND: Duration = Duration::from_secs(1);

/// Runs rounds until `term` ends (the hub stops or is no longer the active one).
pub async fn watch(leases: kv::Store, options: HubOptions, fence: Fence, term: CancellationToken, metrics: Arc<HubMetrics>) {
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(5)).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %error, "cannot build the HTTP client: no box-down alarms");
            return;
        }
    };
    let mut db: Option<tokio_postgres::Client> = None;
    let mut failing = false;
    loop {
        let round = async {
            if db.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                db = Some(postgres::connect(&options.postgres).await?);
            }
            let Some(client) = db.as_ref() else { return anyhow::Ok(()) };
            round(&leases, client, &http, &options.webhook, fence.token(), &metrics).await
        };
        match round.await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("box lease watch running again");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(error = %format!("{error:#}"), "box lease watch cannot run a round");
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(ROUND) => {}
            () = term.cancelled() => return,
        }
    }
}

async fn round(leases: &kv::Store, db: &tokio_postgres::Client, http: &reqwest::Client, webhook: &str, fence: i64, metrics: &HubMetrics) -> anyhow::Result<()> {
    // Every round claims the database for this hub's term: a hub that lost its lease without
    // knowing it yet (paused, cut off) finds a newer token here and decides nothing.
    anyhow::ensure!(postgres::claim_fence(db, fence).await?, "another hub is active (fencing token {fence} is old)");
    let mut alive: BTreeMap<String, String> = BTreeMap::new();
    let keys: Vec<String> = leases.keys().await?.try_collect().await?;
    for key in keys {
        let district = match leases.get(key.clone()).await? {
            Some(value) => serde_json::from_slice::<Lease>(&value).map(|l| l.district).unwrap_or_default(),
            // Expired between the listing and the read.
            None => continue,
        };
        alive.insert(key, district);
    }
    for (box_id, district) in &alive {
        postgres::register_box(db, box_id, district).await?;
    }
    for known in postgres::boxes(db).await? {
        let is_alive = alive.contains_key(&known.box_id);
        if is_alive != known.down {
            continue;
        }
        let event = if is_alive { "cleared" } else { "raised" };
        let open = postgres::open_incidents(db, &known.box_id).await?;
        let body = serde_json::json!({
            "kind": "box-down",
            "event": event,
            "box": known.box_id,
            "district": known.district,
            "at_ms": crate::clock::Clock::System.now(),
            "open_incidents": open,
        });
        let response = http.post(webhook).json(&body).send().await?;
        anyhow::ensure!(response.status().is_success(), "the webhook answered {} to box-down {event}", response.status());
        if !postgres::set_down(db, &known.box_id, !is_alive, fence).await? {
            anyhow::bail!("another hub became active while box-down {event} of {} was posted", known.box_id);
        }
        metrics.count_box_down(event);
        if is_alive {
            tracing::info!(box_id = %known.box_id, "box is back: box-down cleared");
        } else {
            tracing::error!(box_id = %known.box_id, open_incidents = open.len(), "box lease expired: box-down raised");
        }
    }
    Ok(())
}
