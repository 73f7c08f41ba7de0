//! The cluster's bookkeeping tables in PostgreSQL, beside the shard leases (all in the
//! schema `<base>_cluster`): the shard count the cluster was made with, the members and
//! their heartbeats, which shard each agent lives in, and the revoked tokens. Every time
//! is the database's clock. The calls block: make them on the blocking pool.

use std::time::Duration;

use toka_store::PgSession;

/// A node of the cluster as the members table has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: String,
    /// Where other nodes reach its API.
    pub(crate) address: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub(crate) silent_ms: i64,
}

/// The tables.
pub(crate) struct Catalog {
    session: PgSession,
    /// The quoted schema name.
    schema: String,
}

impl Catalog {
    /// Connects, creates the tables if missing, and checks that the cluster was made with
    /// `shards` shards and the same keys (`keys`: a fingerprint of the root and seal
    /// keys); the first node to start records both.
    pub(crate) fn open(
        url: &str,
        schema: &str,
        shards: u32,
        keys: &str,
    ) -> anyhow::Result<Catalog> {
        let catalog = Catalog {
            session: PgSession::new(url, &format!("toka-cluster/{schema}"))?,
            schema: format!("\"{schema}\""),
        };
        let s = catalog.schema.clone();
        let wanted = i32::try_from(shards)?;
        let (recorded, recorded_keys): (i32, String) =
            catalog.session.run("creating the cluster tables", |client| {
            client.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock(7435370656391717479);
                 CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.toka_cluster (
                     id smallint PRIMARY KEY CHECK (id = 0), shards integer NOT NULL,
                     keys text NOT NULL);
                 CREATE TABLE IF NOT EXISTS {s}.toka_members (
                     id text PRIMARY KEY, address text NOT NULL,
                     heartbeat_at timestamptz NOT NULL,
                     joined_at timestamptz NOT NULL DEFAULT clock_timestamp());
                 CREATE TABLE IF NOT EXISTS {s}.toka_agents (
                     id text PRIMARY KEY, shard integer NOT NULL);
                 CREATE TABLE IF NOT EXISTS {s}.toka_revocations (
                     identifier text PRIMARY KEY, reason text NOT NULL,
                     at timestamptz NOT NULL DEFAULT clock_timestamp());"
            ))?;
            client.execute(
                &format!(
                    "INSERT INTO {s}.toka_cluster (id, shards, keys) VALUES (0, $1, $2) ON CONFLICT DO NOTHING"
                ),
                &[&wanted, &keys],
            )?;
            let row = client.query_one(&format!("SELECT shards, keys FROM {s}.toka_cluster"), &[])?;
            Ok((row.get(0), row.get(1)))
        })?;
        if recorded_keys != keys {
            anyhow::bail!(
                "this node's root and seal keys are not the cluster's: every node must run on a \
                 copy of one data directory (made by `toka-node init`), so that a token and a \
                 sealed argument from any node open on every other"
            );
        }
        if recorded != wanted {
            anyhow::bail!(
                "the cluster was made with {recorded} shards; this node is configured with {wanted} \
                 (the count cannot change: set [cluster] shards = {recorded})"
            );
        }
        Ok(catalog)
    }

    /// Says this node is alive and where it is reached.
    pub(crate) fn heartbeat(&self, id: &str, address: &str) -> anyhow::Result<()> {
        let s = &self.schema;
        self.session.run("sending a heartbeat", |client| {
            client.execute(
                &format!(
                    "INSERT INTO {s}.toka_members (id, address, heartbeat_at)
                     VALUES ($1, $2, clock_timestamp())
                     ON CONFLICT (id) DO UPDATE
                     SET address = EXCLUDED.address, heartbeat_at = EXCLUDED.heartbeat_at"
                ),
                &[&id, &address],
            )
        })?;
        Ok(())
    }

    /// Removes this node from the members (a graceful leave: the others rebalance at once).
    pub(crate) fn leave(&self, id: &str) -> anyhow::Result<()> {
        let s = &self.schema;
        self.session.run("leaving the cluster", |client| {
            client.execute(
                &format!("DELETE FROM {s}.toka_members WHERE id = $1"),
                &[&id],
            )
        })?;
        Ok(())
    }

    /// Every member, by id, with how long it has been silent.
    pub(crate) fn members(&self) -> anyhow::Result<Vec<Member>> {
        let s = &self.schema;
        let rows = self.session.run("listing the members", |client| {
            client.query(
                &format!(
                    "SELECT id, address,
                            (extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::bigint
                     FROM {s}.toka_members ORDER BY id"
                ),
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|row| Member {
                id: row.get(0),
                address: row.get(1),
                silent_ms: row.get(2),
            })
            .collect())
    }

    /// The shard agent `id` lives in, if recorded.
    pub(crate) fn shard_of(&self, id: &str) -> anyhow::Result<Option<u32>> {
        let s = &self.schema;
        let row = self.session.run("looking an agent up", |client| {
            client.query_opt(
                &format!("SELECT shard FROM {s}.toka_agents WHERE id = $1"),
                &[&id],
            )
        })?;
        Ok(row.and_then(|row| u32::try_from(row.get::<_, i32>(0)).ok()))
    }

    /// Records agent `id` in `shard` unless it is recorded already; answers the shard it
    /// is recorded in (then `shard` or an earlier one).
    pub(crate) fn reserve(&self, id: &str, shard: u32) -> anyhow::Result<u32> {
        let s = &self.schema;
        let shard = i32::try_from(shard)?;
        let row = self.session.run("recording an agent's shard", |client| {
            client.execute(
                &format!(
                    "INSERT INTO {s}.toka_agents (id, shard) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                ),
                &[&id, &shard],
            )?;
            client.query_one(
                &format!("SELECT shard FROM {s}.toka_agents WHERE id = $1"),
                &[&id],
            )
        })?;
        Ok(u32::try_from(row.get::<_, i32>(0))?)
    }

    /// Records the agents of `shard` (those spawned by agents, which no API call
    /// recorded); ids recorded in another shard are left as they are and returned.
    pub(crate) fn record_agents(&self, shard: u32, ids: &[String]) -> anyhow::Result<Vec<String>> {
        let s = &self.schema;
        let shard = i32::try_from(shard)?;
        let rows = self.session.run("recording agents' shard", |client| {
            client.execute(
                &format!(
                    "INSERT INTO {s}.toka_agents (id, shard)
                     SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING"
                ),
                &[&ids, &shard],
            )?;
            client.query(
                &format!(
                    "SELECT id FROM {s}.toka_agents WHERE id = ANY($1::text[]) AND shard <> $2"
                ),
                &[&ids, &shard],
            )
        })?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Publishes revocations made on this node, and answers every revocation in the
    /// cluster as `(identifier, reason)`.
    pub(crate) fn sync_revocations(
        &self,
        ours: &[(String, String)],
    ) -> anyhow::Result<Vec<(String, String)>> {
        let s = &self.schema;
        let (ids, reasons): (Vec<&str>, Vec<&str>) = ours
            .iter()
            .map(|(id, reason)| (id.as_str(), reason.as_str()))
            .unzip();
        let rows = self.session.run("sharing revocations", |client| {
            if !ids.is_empty() {
                client.execute(
                    &format!(
                        "INSERT INTO {s}.toka_revocations (identifier, reason)
                         SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING"
                    ),
                    &[&ids, &reasons],
                )?;
            }
            client.query(
                &format!("SELECT identifier, reason FROM {s}.toka_revocations"),
                &[],
            )
        })?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}

/// Whether a member silent for `silent_ms` counts as alive under leases of `lease`.
pub(crate) fn alive(member: &Member, lease: Duration) -> bool {
    u128::try_from(member.silent_ms.max(0)).unwrap_or(u128::MAX) < lease.as_millis()
}
