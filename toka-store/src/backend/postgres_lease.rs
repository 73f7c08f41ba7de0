//! Leases with fencing epochs, kept in PostgreSQL: which writer may write a journal.
//!
//! Several processes that share a PostgreSQL database (the nodes of a cluster) decide who
//! writes which journal with a **lease**: a row `(name, holder, epoch, expires_at)` in
//! `<schema>.toka_leases`. Every time is PostgreSQL's clock (`clock_timestamp()`), so the
//! processes' own clocks never matter.
//! - [`Leases::try_acquire`] takes a lease that is free or expired, and **increments its
//!   epoch**: each holding of a lease has an epoch of its own, never reused.
//! - [`Leases::renew`] extends it, only for the same holder and epoch, and only before it
//!   expired: a lease that expired is lost, even if nobody took it yet.
//! - [`Leases::release`] gives it up at once (a graceful hand-over).
//!
//! A journal opened with a lease ([`PgBackend::connect_fenced`](crate::PgBackend::connect_fenced),
//! [`PgJournal::connect_fenced`](crate::PgJournal::connect_fenced)) is **fenced**: every
//! transaction it writes commits only if, in the same round trip, the database finds its
//! lease still held at its epoch and not expired; that check share-locks the lease's row
//! until the commit. So a writer that lost its lease (paused, cut off by a partition, or
//! simply slow) commits nothing more: its transaction is rolled back and the write fails
//! with [`Error::Fenced`], and a new holder's `try_acquire` waits for a commit already past
//! the check, so their writes never interleave.
//!
//! The calls block (the `postgres` crate runs its own small runtime): call them from a
//! thread of your own or `tokio::task::spawn_blocking`, never on an async worker. A lost
//! connection is reopened by the next call.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::postgres::{quote, validate_schema};
use crate::Error;

/// The right to write one journal, at one epoch (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    schema: String,
    name: String,
    holder: String,
    epoch: i64,
    period: Duration,
}

impl Lease {
    /// The schema of the lease table.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The lease's name (what it guards, e.g. a shard's journal).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who holds it.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Its fencing epoch: one more than the previous holding's.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The period it was taken for (and is renewed by).
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// One row of the lease table, as [`Leases::list`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease's name.
    pub name: String,
    /// Its last holder (`None`: never held).
    pub holder: Option<String>,
    /// Its current epoch (0: never held).
    pub epoch: i64,
    /// Milliseconds until it expires, by the database's clock; 0 or less: expired or
    /// released.
    pub remaining_ms: i64,
}

/// A blocking PostgreSQL connection that reopens itself: a call after the connection was
/// lost connects again. Its network waits are bounded (a silent server fails a call within
/// seconds), so a caller keeping a lease notices in time. Used by [`Leases`], and by
/// anything else that keeps small bookkeeping tables beside the journals (a cluster's
/// membership).
///
/// The calls block: make them from a thread of your own or `spawn_blocking`.
pub struct PgSession {
    config: postgres::Config,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgSession")
    }
}

impl PgSession {
    /// A session to the database of `url` (no `schema` parameter), named `name` in
    /// `pg_stat_activity`. Connects on the first call.
    ///
    /// # Errors
    /// [`Error::Backend`] for a malformed URL. No error contains the password.
    pub fn new(url: &str, name: &str) -> Result<Self, Error> {
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| Error::backend("reading a PostgreSQL URL", e))?;
        config.application_name(name);
        // A cut-off database must fail calls within seconds, not after TCP's minutes, so
        // that a lease holder notices before its lease runs out; a row lock held by
        // someone else fails a call after a second instead of blocking it.
        bound_network_waits(&mut config);
        config.options("-c lock_timeout=1000");
        Ok(PgSession {
            config,
            client: Mutex::new(None),
        })
    }

    /// Runs `f` on the connection, opening it first if it is not open (or was lost).
    ///
    /// # Errors
    /// [`Error::Backend`] naming `op`, if connecting or `f` fails.
    pub fn run<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Client) -> Result<R, postgres::Error>,
    ) -> Result<R, Error> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(Client::is_closed) {
            *slot = None;
        }
        let client = match slot.as_mut() {
            Some(client) => client,
            None => slot.insert(
                self.config
                    .connect(NoTls)
                    .map_err(|e| Error::backend(op, e))?,
            ),
        };
        let result = f(client);
        if result.is_err() && client.is_closed() {
            *slot = None;
        }
        result.map_err(|e| Error::backend(op, e))
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        // The `postgres` client closes its connection by blocking on its own runtime,
        // which panics on a tokio worker: close it on a thread of its own there.
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(client) = client {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("toka-pg-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

/// A connection to a lease table (see the [module docs](self)).
#[derive(Debug)]
pub struct Leases {
    session: PgSession,
    schema: String,
}

impl Leases {
    /// Connects to the database of `url` (as [`PgBackend::connect`](crate::PgBackend::connect),
    /// without a `schema` parameter) and creates the lease table in `schema` if it is
    /// missing.
    ///
    /// # Errors
    /// [`Error::Backend`] for a malformed URL, an unreachable or refusing server, or an
    /// invalid schema name. No error contains the password.
    pub fn connect(url: &str, schema: &str) -> Result<Self, Error> {
        const OP: &str = "opening the PostgreSQL lease table";
        validate_schema(schema)?;
        let leases = Leases {
            session: PgSession::new(url, &format!("toka-leases/{schema}"))?,
            schema: schema.to_owned(),
        };
        leases.with_client(OP, |client, s| {
            client.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock(7435370656391717479);
                 CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.toka_leases (
                     name text PRIMARY KEY,
                     holder text,
                     epoch bigint NOT NULL DEFAULT 0,
                     expires_at timestamptz NOT NULL DEFAULT '-infinity'
                 );"
            ))
        })?;
        Ok(leases)
    }

    /// The schema holding the lease table.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Takes the lease `name` for `holder` for `ttl` if it is free, released or expired,
    /// with the next epoch; `None` if another holding is still live.
    ///
    /// # Errors
    /// [`Error::Backend`] if the database cannot be reached.
    pub fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        let (name_owned, holder_owned) = (name.to_owned(), holder.to_owned());
        let ttl_ms = millis(ttl);
        let epoch = self.with_client("acquiring a lease", |client, s| {
            client.execute(
                &format!("INSERT INTO {s}.toka_leases (name) VALUES ($1) ON CONFLICT DO NOTHING"),
                &[&name_owned],
            )?;
            let row = client.query_opt(
                &format!(
                    "UPDATE {s}.toka_leases
                     SET holder = $2, epoch = epoch + 1,
                         expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
                     WHERE name = $1 AND expires_at <= clock_timestamp()
                     RETURNING epoch"
                ),
                &[&name_owned, &holder_owned, &ttl_ms],
            )?;
            Ok(row.map(|row| row.get::<_, i64>(0)))
        })?;
        Ok(epoch.map(|epoch| Lease {
            schema: self.schema.clone(),
            name: name.to_owned(),
            holder: holder.to_owned(),
            epoch,
            period: ttl,
        }))
    }

    /// Extends `lease` to `ttl` from now; `false` if it is lost (expired, released, or
    /// taken at a later epoch): then its journal is fenced and must be closed.
    ///
    /// # Errors
    /// [`Error::Backend`] if the database cannot be reached (the lease may still expire
    /// meanwhile: count its time from before the call).
    pub fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error> {
        let (name, holder, epoch, ttl_ms) = (
            lease.name.clone(),
            lease.holder.clone(),
            lease.epoch,
            millis(ttl),
        );
        self.with_client("renewing a lease", |client, s| {
            client
                .execute(
                    &format!(
                        "UPDATE {s}.toka_leases
                         SET expires_at = clock_timestamp() + $4::bigint * interval '1 millisecond'
                         WHERE name = $1 AND holder = $2 AND epoch = $3
                           AND expires_at > clock_timestamp()"
                    ),
                    &[&name, &holder, &epoch, &ttl_ms],
                )
                .map(|rows| rows == 1)
        })
    }

    /// Gives `lease` up at once, so the next [`Leases::try_acquire`] gets it; `false` if it
    /// was no longer held. Close its journal first: once released, its writes are refused.
    ///
    /// # Errors
    /// [`Error::Backend`] if the database cannot be reached.
    pub fn release(&self, lease: &Lease) -> Result<bool, Error> {
        let (name, holder, epoch) = (lease.name.clone(), lease.holder.clone(), lease.epoch);
        self.with_client("releasing a lease", |client, s| {
            client
                .execute(
                    &format!(
                        "UPDATE {s}.toka_leases SET expires_at = '-infinity'
                         WHERE name = $1 AND holder = $2 AND epoch = $3"
                    ),
                    &[&name, &holder, &epoch],
                )
                .map(|rows| rows == 1)
        })
    }

    /// Every lease in the table, by name.
    ///
    /// # Errors
    /// [`Error::Backend`] if the database cannot be reached.
    pub fn list(&self) -> Result<Vec<LeaseState>, Error> {
        self.with_client("listing the leases", |client, s| {
            let rows = client.query(
                &format!(
                    "SELECT name, holder, epoch,
                            CASE WHEN expires_at = '-infinity' THEN 0
                                 ELSE (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint
                            END
                     FROM {s}.toka_leases ORDER BY name"
                ),
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|row| LeaseState {
                    name: row.get(0),
                    holder: row.get(1),
                    epoch: row.get(2),
                    remaining_ms: row.get(3),
                })
                .collect())
        })
    }

    /// Runs `f` with the connection and the quoted schema name.
    fn with_client<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Client, &str) -> Result<R, postgres::Error>,
    ) -> Result<R, Error> {
        let schema = quote(&self.schema);
        self.session.run(op, |client| f(client, &schema))
    }
}

/// Bounds how long a connection waits on a silent network: connecting, unacknowledged
/// sends and an idle peer each fail within a few seconds.
pub(crate) fn bound_network_waits(config: &mut postgres::Config) {
    config
        .connect_timeout(Duration::from_secs(2))
        .tcp_user_timeout(Duration::from_secs(2))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(1))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(2);
}

/// A duration in whole milliseconds, for PostgreSQL intervals.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
