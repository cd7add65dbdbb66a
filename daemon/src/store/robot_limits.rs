//! What a group robot's rate limit has used, kept across restarts: the sends of the last minute
//! and a throttle the robot imposed. Forgotten at a restart, a box sent 20 messages at once after
//! one, and the robot's own limit (DingTalk throttles for 10 minutes past it) held its alarms
//! back 55–71 s; an outside tester. Times are on the box's wall clock, read with suspicion by
//! [`crate::sinks::robot::RateLimit::kept_in`].

use super::Store;
use rusqlite::params;

/// A robot's limit as the store kept it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RobotLimit {
    /// When its messages of the last minute (of the time it was saved) went, oldest first.
    pub sent_ms: Vec<i64>,
    /// Until when it throttles us, if it said so.
    pub throttled_until_ms: Option<i64>,
}

impl Store {
    /// The box's wall clock now, as the store stamps what it records.
    pub fn now_ms(&self) -> i64 {
        self.clock.now()
    }

    /// Robot `sink`'s limit as kept.
    pub fn robot_limit(&self, sink: &str) -> anyhow::Result<RobotLimit> {
        self.essential(|conn| {
            let sent_ms = conn
                .prepare_cached("SELECT at_ms FROM robot_sends WHERE sink = ?1 ORDER BY at_ms")?
                .query_map(params![sink], |row| row.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            let throttled_until_ms =
                rusqlite::OptionalExtension::optional(conn.query_row("SELECT until_ms FROM robot_throttles WHERE sink = ?1", params![sink], |row| row.get(0)))?;
            Ok(RobotLimit { sent_ms, throttled_until_ms })
        })
    }

    /// Robot `sink` was sent a message at `at_ms`; what no longer counts is forgotten.
    pub async fn record_robot_send(&self, sink: &str, at_ms: i64) -> anyhow::Result<()> {
        let sink = sink.to_string();
        let counted_since = at_ms - crate::sinks::robot::WINDOW.as_millis() as i64;
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM robot_sends WHERE sink = ?1 AND at_ms <= ?2", params![sink, counted_since])?;
            tx.execute("INSERT INTO robot_sends (sink, at_ms) VALUES (?1, ?2)", params![sink, at_ms])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Robot `sink` throttles us until `until_ms`.
    pub async fn record_robot_throttle(&self, sink: &str, until_ms: i64) -> anyhow::Result<()> {
        let sink = sink.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO robot_throttles (sink, until_ms) VALUES (?1, ?2) ON CONFLICT (sink) DO UPDATE SET until_ms = excluded.until_ms",
                params![sink, until_ms],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_robot_s_last_minute_and_throttle_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for at in [1_000, 30_000, 70_000, 75_000] {
            store.record_robot_send("dingtalk", at).await.unwrap();
        }
        store.record_robot_send("wecom", 75_000).await.unwrap();
        store.record_robot_throttle("dingtalk", 600_000).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.robot_limit("dingtalk").unwrap(), RobotLimit { sent_ms: vec![30_000, 70_000, 75_000], throttled_until_ms: Some(600_000) });
        assert_eq!(store.robot_limit("wecom").unwrap(), RobotLimit { sent_ms: vec![75_000], throttled_until_ms: None });
    }
}
