//! The PostgreSQL back-end: the journal's key-value space as a table in a PostgreSQL schema.
//!
//! # Layout
//! One journal lives in one PostgreSQL **schema** (default `toka`, chosen with the
//! `schema` parameter of the connection URL or [`PgBackend::connect_schema`]), so several
//! journals (tests, tenants, later the nodes of a cluster) share a database without
//! seeing each other:
//! - `<schema>.toka_schema (version, applied_at)`: the schema migrations applied, one row
//!   each. Opening applies the missing ones in order, in one transaction; a schema newer
//!   than this build knows is refused ([`Error::UnsupportedSchema`]).
//! - `<schema>.kv (key bytea PRIMARY KEY, value bytea)`: the journal's ordered key space.
//!   `bytea` compares byte-wise (`memcmp`, then length), which is the key order the
//!   journal expects, independent of collations.
//! - `<schema>.anchor (id = 0, value bytea)`: the journal's anchor (see below).
//!
//! # How the contract of [`Backend`] is met
//! All statements run on **one connection owned by a worker thread** of the back-end; the
//! journal's threads (tokio workers included: the `postgres` crate cannot block inside a
//! runtime) hand it jobs over a channel, and it runs them in order.
//! - [`Backend::apply`] queues the writes and returns at once (it waits only while 1,024
//!   jobs are queued already: backpressure for `Buffered` appenders). The worker opens a
//!   transaction if none is open and writes them (consecutive queued batches are merged
//!   into one `INSERT … SELECT unnest(…) ON CONFLICT DO UPDATE` and one `DELETE … = ANY`).
//! - **Read-your-writes**: reads are jobs on the same connection, queued behind those
//!   writes, so they see them (inside the open transaction).
//! - [`Backend::flush`] commits the transaction with `synchronous_commit = on` (set for the
//!   session, whatever the server's default): when it returns, PostgreSQL has written and
//!   fsynced the commit record. So **one transaction per group commit**: every append
//!   applied since the last flush commits in one go, with one WAL fsync.
//! - **Ordered prefix recovery**: what survives a crash of the client (or of the server)
//!   is every committed transaction, and transactions commit in apply order; an
//!   uncommitted transaction vanishes whole.
//! - The **anchor** is stored after each flush: inside the next transaction if one is
//!   already open, otherwise in its own transaction with `synchronous_commit = off` (it
//!   costs no fsync and becomes durable with the next commit; an older anchor never claims
//!   more than is stored).
//! - **Failure**: after any error while a transaction is open (the transaction is then
//!   aborted, so the writes since the last flush are gone), or once the connection is
//!   lost, every later call fails: the journal turns poisoned, and reopening it (a new
//!   connection) recovers what was committed. A write queued by `apply` that fails is
//!   reported by the next call, at the latest by the flush an appender waits for.
//!
//! # One writer per journal
//! A journal opened with a lease ([`PgBackend::connect_fenced`]) is **fenced** instead:
//! every transaction it writes commits only if its lease is still held, checked in the
//! database in the same round trip as the `COMMIT` (see [`Leases`](crate::Leases)), which
//! is how the nodes of a cluster hand journals over. Otherwise
//! the worker's connection holds a session-level advisory lock on the schema's journal
//! for as long as it is open, so a second process (or a second handle) opening the same
//! journal is refused, as sled's file lock does. PostgreSQL releases the lock when the
//! connection ends, also when the process was killed; opening retries for
//! up to [`PG_LOCK_RETRY_FOR`] meanwhile. The connection is named
//! `toka-journal/<schema>` (`application_name`, seen in `pg_stat_activity`); a follower's
//! `toka-follower/<schema>`. Followers take no lock: any number of them read beside the
//! writer.
//!
//! # Notifications and followers
//! Every transaction that writes records is followed by `NOTIFY <channel>, '<head>'`,
//! sent with its `COMMIT` in the **same round trip** (fenced: lease check; `COMMIT`;
//! `NOTIFY`), where `<head>` is the highest log position it wrote and the channel is
//! derived from the schema ([`PgBackend::notify_channel`]). The `NOTIFY` runs only if the
//! `COMMIT` succeeded (a failed statement skips the rest of the round trip; a failed lease
//! check aborts the transaction before), so a listener learns of durable events only. It
//! is a small transaction of its own, committed without waiting for the disk: PostgreSQL
//! holds a database-wide lock from a notifying transaction's commit until its WAL is
//! flushed, so a `NOTIFY` inside the records' transaction would serialize the commits of
//! every journal in the database (with 8 writers, 0.25× the commits/s; this way 0.9×).
//! A refused notification (a full queue: a listener stopped reading) does not fail the
//! commit; followers then catch up by polling.
//!
//! A **follower** ([`PgBackend::connect_follower`], or
//! [`PgJournal::follow`](crate::PgJournal::follow) for the whole journal) reads a journal
//! that another process writes: no advisory lock, no lease, no migration, a
//! `default_transaction_read_only` session, and [`Backend::apply`] fails. It sees committed
//! rows only. A listening thread of its own (`LISTEN` on a second connection, named
//! `toka-listen/<schema>`) wakes it on each commit, and it polls the head as a fallback
//! ([`FollowConfig`]); both connections reconnect after being lost (a read that found its
//! connection gone runs again on a fresh one), and what committed meanwhile is found by
//! position.
//!
//! # Secrets
//! Connection URLs may carry a password. It is never logged nor put in an error: use
//! [`redact_url`](crate::redact_url) to show a URL.
//!
//! # Not (yet) here
//! - TLS: connections are plain (`NoTls`); use a local socket, 127.0.0.1 or a trusted
//!   network.
//! - Reconnecting a writer: a lost connection poisons the journal (its open transaction,
//!   and so its unflushed writes, are gone); reopen it. Followers reconnect.
//! - Subscriptions of the writer itself are fed in-process by its acknowledged head; only
//!   followers (other processes: cluster nodes serving a shard's events) listen.
//! - Writer fencing for a cluster is [`PgBackend::connect_fenced`]; each journal lives in
//!   a schema of its own, with its own `toka_schema` migrations, as laid out above.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};

use super::postgres_lease::{Lease, bound_network_waits};
use super::{Backend, Entry, WriteBatch};
use crate::Error;

/// The schema used when the URL names none.
pub const DEFAULT_PG_SCHEMA: &str = "toka";

/// The newest schema version this build knows (the number of migrations).
pub const PG_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// How long opening waits for the journal's advisory lock, which a connection that just
/// closed (or whose process was killed) may still hold for a moment.
pub const PG_LOCK_RETRY_FOR: Duration = Duration::from_secs(5);

/// The migrations, in order: migration `i` brings the schema to version `i + 1`. `{s}` is
/// replaced with the quoted schema name. Never edit a released one; add a new one.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE {s}.kv (key bytea PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE {s}.anchor (id smallint PRIMARY KEY CHECK (id = 0), value bytea NOT NULL);",
];

/// Jobs queued for the worker at most: past this, `apply` (and reads) wait for room, so
/// a `Buffered` journal's appenders cannot run ahead of PostgreSQL without bound.
const QUEUE: usize = 1024;

/// How long a transaction may stay open with no job coming before the worker commits it.
const IDLE_COMMIT: Duration = Duration::from_millis(200);

/// Rows per page of a range scan (values are at most a pack or one record).
const PAGE: i64 = 64;

/// PostgreSQL storage for [`PgJournal`](crate::PgJournal). Cheap to clone (clones share
/// the worker and its connection).
#[derive(Clone)]
pub struct PgBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("schema", &self.shared.schema)
            .finish()
    }
}

type Task = Box<dyn FnOnce(&mut Conn) + Send>;

enum Job {
    Apply(WriteBatch),
    Run(Task),
}

struct Shared {
    schema: String,
    /// The URL it was opened with (for a follower's listening connection).
    url: String,
    /// Opened with [`PgBackend::connect_follower`].
    follower: bool,
    jobs: Option<mpsc::SyncSender<Job>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Tells the listening thread ([`PgBackend::listen`]) to stop.
    listener: Mutex<Option<Arc<AtomicBool>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(stop) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stop.store(true, Ordering::Release);
        }
        // Closing the channel ends the worker, which closes the connection (an open
        // transaction, holding writes nobody flushed, is rolled back) and so releases the
        // advisory lock. Waiting for it lets a reopen right after find the lock free.
        self.jobs = None;
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// An error of this back-end that is not PostgreSQL's own.
#[derive(Debug)]
struct PgFailure(String);

impl std::fmt::Display for PgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgFailure {}

fn failure(op: &'static str, message: impl Into<String>) -> Error {
    Error::backend(op, PgFailure(message.into()))
}

impl PgBackend {
    /// Connects to the database of `url` (`postgres://user[:password]@host[:port]/db`, or
    /// libpq's `key=value` form) and opens the journal in the schema named by the URL's
    /// `schema` parameter (`…/db?schema=agents`), default [`DEFAULT_PG_SCHEMA`]. Creates
    /// the schema and applies missing migrations.
    ///
    /// # Errors
    /// [`Error::Backend`] if the URL is malformed, the server cannot be reached or refuses
    /// the login, or another connection holds the journal; [`Error::UnsupportedSchema`]
    /// if the schema was migrated by a newer build. No error contains the password.
    pub fn connect(url: &str) -> Result<Self, Error> {
        let (url, schema) = split_schema(url)?;
        Self::connect_schema(&url, schema.as_deref().unwrap_or(DEFAULT_PG_SCHEMA))
    }

    /// Like [`PgBackend::connect`], with the schema given apart (`url` must then carry no
    /// `schema` parameter). Schema names are 1 to 63 characters of `a-z`, `0-9` and `_`,
    /// not starting with a digit.
    ///
    /// # Errors
    /// As [`PgBackend::connect`]; also for an invalid schema name.
    pub fn connect_schema(url: &str, schema: &str) -> Result<Self, Error> {
        Self::open(url, schema, Mode::Writer(None))
    }

    /// Opens the journal in `schema` as a **follower**: a reader of a journal that another
    /// process (or handle) writes. It takes no lock and no lease, applies no migration and
    /// never writes (its session is `default_transaction_read_only`, and its
    /// [`Backend::apply`] fails); it sees what the writer committed. If its connection is
    /// lost, the next call connects again. The journal must exist (its writer created it).
    /// [`PgJournal::follow`](crate::PgJournal::follow) opens one and wakes its
    /// subscriptions on the writer's commits.
    ///
    /// # Errors
    /// As [`PgBackend::connect_schema`]; also when `schema` holds no journal yet.
    pub fn connect_follower(url: &str, schema: &str) -> Result<Self, Error> {
        Self::open(url, schema, Mode::Follower)
    }

    /// The channel every commit of the journal in `schema` notifies (`NOTIFY`), with the
    /// log head it made durable as payload (decimal): `toka_<schema>` for a schema of up
    /// to 40 bytes, else `toka_` + its first 24 bytes + `_` + 16 hex digits of a hash of
    /// it (a channel is an identifier of at most 63 bytes). Quote it in SQL
    /// (`LISTEN "toka_agents"`).
    pub fn notify_channel(schema: &str) -> String {
        notify_channel(schema)
    }

    /// Opens the journal in `schema` **fenced** by `lease` (see
    /// [`Leases`](crate::Leases)): instead of the advisory lock, every transaction it
    /// writes first checks in the database that `lease` is still held at its epoch, so
    /// once the lease is lost the journal commits nothing more and its calls fail with
    /// [`Error::Fenced`]. Its connection gives up on a silent network within seconds.
    ///
    /// # Errors
    /// As [`PgBackend::connect_schema`] (without the lock wait).
    pub fn connect_fenced(url: &str, schema: &str, lease: &Lease) -> Result<Self, Error> {
        Self::open(url, schema, Mode::Writer(Some(lease.clone())))
    }

    fn open(url: &str, schema: &str, mode: Mode) -> Result<Self, Error> {
        const OP: &str = "opening the PostgreSQL journal";
        validate_schema(schema)?;
        let mut config = postgres::Config::from_str(url).map_err(|e| Error::backend(OP, e))?;
        // Names the connection in `pg_stat_activity` (at most 63 bytes are kept).
        let role = match mode {
            Mode::Writer(_) => "journal",
            Mode::Follower => "follower",
        };
        config.application_name(&format!("toka-{role}/{schema}"));
        if matches!(mode, Mode::Follower) {
            // A follower cannot write, even by mistake: the server refuses it too.
            bound_network_waits(&mut config);
            config.options("-c default_transaction_read_only=on");
        }
        if let Mode::Writer(Some(lease)) = &mode {
            bound_network_waits(&mut config);
            // A transaction left open by a paused or cut-off holder must not keep its
            // locks (the new holder writes the same keys): the server ends such a session
            // after a lease period (a live journal commits within `IDLE_COMMIT`).
            let idle = lease.period().max(Duration::from_secs(1)).as_millis();
            config.options(&format!("-c idle_in_transaction_session_timeout={idle}"));
        }
        let (jobs, receive) = mpsc::sync_channel::<Job>(QUEUE);
        let (opened_tx, opened) = mpsc::sync_channel::<Result<(), Error>>(1);
        let worker_schema = schema.to_owned();
        let follower = matches!(mode, Mode::Follower);
        let thread = std::thread::Builder::new()
            .name(format!("toka-pg-{schema}"))
            .spawn(move || match Conn::open(&config, &worker_schema, mode) {
                Ok(conn) => {
                    let _ = opened_tx.send(Ok(()));
                    run(conn, receive);
                }
                Err(error) => {
                    let _ = opened_tx.send(Err(error));
                }
            })
            .map_err(|e| Error::backend("starting the PostgreSQL worker thread", e))?;
        let result = opened
            .recv()
            .unwrap_or_else(|_| Err(failure(OP, "the PostgreSQL worker thread stopped")));
        let shared = Arc::new(Shared {
            schema: schema.to_owned(),
            url: url.to_owned(),
            follower,
            jobs: Some(jobs),
            thread: Mutex::new(Some(thread)),
            listener: Mutex::new(None),
        });
        result?;
        tracing::debug!(schema, "PostgreSQL journal back-end connected");
        Ok(PgBackend { shared })
    }

    /// The schema holding this journal.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// The schema version stored in the database (after opening: [`PG_SCHEMA_VERSION`]).
    ///
    /// # Errors
    /// [`Error::Backend`].
    pub fn schema_version(&self) -> Result<i32, Error> {
        self.shared.call("reading the schema version", |conn| {
            let sql = format!(
                "SELECT coalesce(max(version), 0) FROM {}.toka_schema",
                quote(&conn.schema)
            );
            conn.query(|client, _| client.query_one(&sql, &[]).map(|row| row.get(0)))
        })
    }
}

impl Shared {
    fn sender(&self, op: &'static str) -> Result<&mpsc::SyncSender<Job>, Error> {
        self.jobs
            .as_ref()
            .ok_or_else(|| failure(op, "the PostgreSQL back-end is closed"))
    }

    /// Runs `f` on the worker and waits for its result.
    fn call<R: Send + 'static>(
        &self,
        op: &'static str,
        mut f: impl FnMut(&mut Conn) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        let task: Task = Box::new(move |conn: &mut Conn| {
            conn.reconnect_follower();
            if conn.follower.is_some() && conn.failed.is_none() {
                // A follower's read is harmless to repeat: one whose connection was lost
                // (terminated, restarted server) is run again on a fresh one, once.
                let result = f(conn);
                let lost = result.is_err() && (conn.client.is_closed() || conn.failed.is_some());
                if !lost {
                    let _ = tx.send(result.map_err(|e| Error::backend(op, e)));
                    return;
                }
                conn.failed
                    .get_or_insert_with(|| "the connection was lost".into());
                conn.reconnect_follower();
            }
            let result = match (conn.fenced(), &conn.failed) {
                (Some(fenced), _) => Err(fenced),
                (None, Some(reason)) => Err(failure(
                    op,
                    format!(
                        "the PostgreSQL connection failed earlier ({reason}); reopen the journal"
                    ),
                )),
                (None, None) => {
                    let result = f(conn);
                    // The call itself may have found the lease lost.
                    match conn.fenced() {
                        Some(fenced) => Err(fenced),
                        None => result.map_err(|e| Error::backend(op, e)),
                    }
                }
            };
            let _ = tx.send(result);
        });
        self.sender(op)?
            .send(Job::Run(task))
            .map_err(|_| failure(op, "the PostgreSQL worker thread stopped"))?;
        rx.recv()
            .unwrap_or_else(|_| Err(failure(op, "the PostgreSQL worker thread stopped")))
    }
}

/// Checks a schema name: 1–63 of `a-z0-9_`, not starting with a digit (no quoting
/// surprises, and within PostgreSQL's identifier length).
pub(super) fn validate_schema(schema: &str) -> Result<(), Error> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(failure(
            "opening the PostgreSQL journal",
            format!(
                "invalid schema name {schema:?}: use 1 to 63 of a-z, 0-9 and _, not starting with a digit"
            ),
        ))
    }
}

/// The schema version of the journal in `schema` (quoted: `s`), refused with
/// [`Error::UnsupportedSchema`] when newer than this build knows.
fn schema_version(
    client: &mut impl postgres::GenericClient,
    s: &str,
    schema: &str,
    op: &'static str,
) -> Result<i32, Error> {
    let found: i32 = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {s}.toka_schema"),
            &[],
        )
        .map_err(|e| Error::backend(op, e))?
        .get(0);
    if found > PG_SCHEMA_VERSION {
        return Err(Error::UnsupportedSchema {
            schema: schema.to_owned(),
            found: i64::from(found),
            supported: i64::from(PG_SCHEMA_VERSION),
        });
    }
    Ok(found)
}

pub(super) fn quote(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Splits the `schema` parameter off a `postgres://` URL: `(the URL without it, the
/// schema)`. Other forms (libpq's `key=value`) pass unchanged, with no schema.
///
/// # Errors
/// None today; kept fallible for stricter parsing.
pub fn split_schema(url: &str) -> Result<(String, Option<String>), Error> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok((url.to_owned(), None));
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for param in query.split('&') {
        match param.split_once('=') {
            Some(("schema", value)) => schema = Some(value.to_owned()),
            _ => kept.push(param),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, schema))
}

/// A fenced journal's lease and the statement checking it before each commit.
struct Fence {
    lease: Lease,
    /// Checks the lease, share-locking its row; raises [`LEASE_LOST`] when the lease is
    /// not held (the transaction is then aborted, and the `COMMIT` sent after it in the
    /// same round trip never runs).
    check: String,
}

/// The SQLSTATE the fenced commit raises when the lease is lost.
const LEASE_LOST: &str = "TK001";

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The worker's connection and its prepared statements.
struct Conn {
    client: Client,
    schema: String,
    stmts: Stmts,
    /// A transaction is open (writes since the last flush).
    in_tx: bool,
    /// Why the connection is unusable, once it is.
    failed: Option<String>,
    /// The lease every transaction checks (a fenced journal), with its statements.
    fence: Option<Fence>,
    /// The lease was found lost: nothing more is written.
    lost_lease: bool,
    /// `NOTIFY <channel>, '<head>'` goes with every commit that moves the log head.
    channel: String,
    /// The highest log head written in the open transaction (see [`WriteBatch::head`]).
    pending_head: u64,
    /// The head announced by the last commit.
    notified_head: u64,
    /// A follower's connection settings: it reconnects after losing its connection
    /// (`None`: a writer, which must be reopened instead).
    follower: Option<postgres::Config>,
}

struct Stmts {
    get: Statement,
    last_in: Statement,
    page_from: Statement,
    page_after: Statement,
    upsert: Statement,
    delete: Statement,
    anchor_get: Statement,
    anchor_put: Statement,
}

/// How a connection uses the journal.
#[derive(Clone)]
enum Mode {
    /// The journal's writer: the advisory lock, or fenced by a lease.
    Writer(Option<Lease>),
    /// A reader of a journal another process writes: no lock, no migration, never writes.
    Follower,
}

impl Conn {
    fn open(config: &postgres::Config, schema: &str, mode: Mode) -> Result<Self, Error> {
        const OP: &str = "opening the PostgreSQL journal";
        let mut client = config.connect(NoTls).map_err(|e| Error::backend(OP, e))?;
        let err = |e| Error::backend(OP, e);
        let follower = matches!(mode, Mode::Follower).then(|| config.clone());
        let fence = match mode {
            Mode::Writer(fence) => {
                // Durability must not depend on the server's or the role's defaults.
                client
                    .batch_execute("SET synchronous_commit TO on")
                    .map_err(err)?;
                let fsync: String = client.query_one("SHOW fsync", &[]).map_err(err)?.get(0);
                if fsync != "on" {
                    tracing::warn!(
                        "the PostgreSQL server runs with fsync = {fsync}: a crash of its machine can lose acknowledged events"
                    );
                }
                // A fenced journal's lease stands in for the lock (a partitioned old
                // holder's session could keep the lock for long after its lease expired).
                if fence.is_none() {
                    lock_journal(&mut client, schema)?;
                }
                migrate(&mut client, schema)?;
                fence
            }
            Mode::Follower => {
                check_followed(&mut client, schema)?;
                None
            }
        };
        let fence = fence.map(|lease| {
            let check = format!(
                "DO $toka$ BEGIN
                   IF NOT EXISTS (SELECT 1 FROM {}.toka_leases
                                  WHERE name = {} AND holder = {} AND epoch = {}
                                    AND expires_at > clock_timestamp()
                                  FOR SHARE) THEN
                     RAISE EXCEPTION 'the journal''s lease is lost' USING ERRCODE = '{LEASE_LOST}';
                   END IF;
                 END $toka$;",
                quote(lease.schema()),
                literal(lease.name()),
                literal(lease.holder()),
                lease.epoch()
            );
            Fence { lease, check }
        });
        let s = quote(schema);
        let mut prepare = |sql: String| client.prepare(&sql).map_err(err);
        let stmts = Stmts {
            get: prepare(format!("SELECT value FROM {s}.kv WHERE key = $1"))?,
            last_in: prepare(format!(
                "SELECT key, value FROM {s}.kv WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT 1"
            ))?,
            page_from: prepare(format!(
                "SELECT key, value FROM {s}.kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3"
            ))?,
            page_after: prepare(format!(
                "SELECT key, value FROM {s}.kv WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3"
            ))?,
            upsert: prepare(format!(
                "INSERT INTO {s}.kv (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ))?,
            delete: prepare(format!("DELETE FROM {s}.kv WHERE key = ANY($1::bytea[])"))?,
            anchor_get: prepare(format!("SELECT value FROM {s}.anchor WHERE id = 0"))?,
            anchor_put: prepare(format!(
                "INSERT INTO {s}.anchor (id, value) VALUES (0, $1) \
                 ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value"
            ))?,
        };
        Ok(Conn {
            client,
            schema: schema.to_owned(),
            stmts,
            in_tx: false,
            failed: None,
            fence,
            lost_lease: false,
            channel: quote(&notify_channel(schema)),
            pending_head: 0,
            notified_head: 0,
            follower,
        })
    }

    /// A follower whose connection failed connects again (a writer must be reopened:
    /// its transaction, and so its writes since the last flush, are gone).
    fn reconnect_follower(&mut self) {
        let Some(config) = &self.follower else {
            return;
        };
        if self.failed.is_none() && !self.client.is_closed() {
            return;
        }
        match Conn::open(config, &self.schema, Mode::Follower) {
            Ok(fresh) => {
                tracing::info!(schema = %self.schema, "the PostgreSQL follower reconnected");
                *self = fresh;
            }
            Err(error) => {
                self.failed = Some(format!("reconnecting failed: {error}"));
            }
        }
    }

    /// Runs `f`; an error inside a transaction (which PostgreSQL then aborts) or on a
    /// closed connection makes the connection unusable.
    fn query<R>(
        &mut self,
        f: impl FnOnce(&mut Client, &Stmts) -> Result<R, postgres::Error>,
    ) -> Result<R, postgres::Error> {
        let result = f(&mut self.client, &self.stmts);
        if let Err(error) = &result {
            if self.in_tx || self.client.is_closed() {
                self.fail(error.to_string());
            }
        }
        result
    }

    fn fail(&mut self, reason: String) {
        if self.follower.is_some() {
            tracing::warn!(%reason, "the PostgreSQL follower connection failed; it reconnects");
        } else {
            tracing::error!(%reason, "the PostgreSQL journal connection failed; reopen the journal");
        }
        if self.in_tx {
            // The transaction is aborted: its writes are gone. Try to leave it cleanly.
            let _ = self.client.batch_execute("ROLLBACK");
            self.in_tx = false;
            self.pending_head = self.notified_head;
        }
        self.failed.get_or_insert(reason);
    }

    /// [`Error::Fenced`] once a fenced journal found its lease lost.
    fn fenced(&self) -> Option<Error> {
        match &self.fence {
            Some(fence) if self.lost_lease => Some(Error::Fenced {
                lease: fence.lease.name().to_owned(),
                epoch: fence.lease.epoch(),
            }),
            _ => None,
        }
    }

    /// Opens a transaction unless one is open; `Ok(false)`: a fenced journal's lease was
    /// found lost, nothing may be written.
    fn begin(&mut self) -> Result<bool, postgres::Error> {
        if self.in_tx {
            return Ok(true);
        }
        if self.lost_lease {
            return Ok(false);
        }
        self.client.batch_execute("BEGIN")?;
        self.in_tx = true;
        Ok(true)
    }

    /// Commits the open transaction. A fenced journal checks its lease right before, in
    /// the transaction and the same round trip, share-locking the lease's row until the
    /// commit: a new holder's take-over waits for that commit, and a commit after a
    /// take-over is refused (rolled back), so writes of two holdings never interleave.
    /// The row is locked only while committing, so renewing the lease never waits for a
    /// transaction in progress.
    fn commit(&mut self) -> Result<(), postgres::Error> {
        if !self.in_tx {
            return Ok(());
        }
        // One round trip: [lease check;] COMMIT[; BEGIN; SET LOCAL synchronous_commit TO
        // off; NOTIFY …; COMMIT]. A statement that fails skips the rest, so nothing is
        // notified unless the records committed, and a listener woken by it finds them.
        // The notification goes in a small transaction of its own, committed without
        // waiting for the disk: PostgreSQL holds a database-wide lock from a notifying
        // transaction's commit until its WAL is flushed, which inside the records'
        // transaction would serialize the fsyncs of every journal's commits (measured
        // with 8 writers: 0.25x the commits/s; in a transaction of its own, 0.9x).
        let mut sql = String::new();
        if let Some(fence) = &self.fence {
            sql.push_str(&fence.check);
            sql.push('\n');
        }
        sql.push_str("COMMIT");
        let notify = self.pending_head > self.notified_head;
        if notify {
            sql.push_str(&format!(
                ";\nBEGIN; SET LOCAL synchronous_commit TO off; NOTIFY {}, '{}'; COMMIT",
                self.channel, self.pending_head
            ));
        }
        let committed = self.client.batch_execute(&sql);
        match committed {
            Ok(()) => {
                self.in_tx = false;
                self.notified_head = self.notified_head.max(self.pending_head);
                Ok(())
            }
            Err(error) if notify && notification_failed(&error) => {
                // The records committed; only their notification was refused (a full
                // notification queue, when a listener stopped reading): followers find
                // them at their next poll. Leave the notification's transaction.
                tracing::warn!(%error, "a commit's NOTIFY failed; followers catch up by polling");
                let _ = self.client.batch_execute("ROLLBACK");
                self.in_tx = false;
                self.notified_head = self.notified_head.max(self.pending_head);
                Ok(())
            }
            Err(error) if error.code().map(|c| c.code()) == Some(LEASE_LOST) => {
                if let Some(fence) = &self.fence {
                    tracing::error!(
                        lease = fence.lease.name(),
                        epoch = fence.lease.epoch(),
                        "the journal's lease is lost: it writes nothing more"
                    );
                }
                self.lost_lease = true;
                let _ = self.client.batch_execute("ROLLBACK");
                self.in_tx = false;
                self.pending_head = self.notified_head;
                Ok(()) // rolled back: `call` reports the lost lease
            }
            Err(error) => {
                self.fail(format!("a commit failed: {error}"));
                Err(error)
            }
        }
    }

    /// Writes the merged final state of some batches (key → value, `None`: removed).
    fn apply(&mut self, writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>, head: u64) {
        if self.failed.is_some() || self.lost_lease || writes.is_empty() {
            return;
        }
        if self.follower.is_some() {
            self.fail("a follower never writes; this write was dropped".into());
            return;
        }
        let result = (|| {
            if !self.begin()? {
                return Ok(()); // dropped: the next call reports the lost lease
            }
            let (mut keys, mut values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
            for (key, value) in &writes {
                match value {
                    Some(value) => {
                        keys.push(key.as_slice());
                        values.push(value.as_slice());
                    }
                    None => removed.push(key.as_slice()),
                }
            }
            if !removed.is_empty() {
                self.client.execute(&self.stmts.delete, &[&removed])?;
            }
            if !keys.is_empty() {
                let params: [&(dyn ToSql + Sync); 2] = [&keys, &values];
                self.client.execute(&self.stmts.upsert, &params)?;
            }
            Ok::<_, postgres::Error>(())
        })();
        match result {
            Ok(()) if self.in_tx => self.pending_head = self.pending_head.max(head),
            Ok(()) => {}
            Err(error) => self.fail(format!("a write failed: {error}")),
        }
    }
}

/// The channel of [`PgBackend::notify_channel`], unquoted.
fn notify_channel(schema: &str) -> String {
    if schema.len() <= 40 {
        return format!("toka_{schema}");
    }
    let hash = blake3::hash(schema.as_bytes()).to_hex();
    // Schema names are ASCII (checked), so any byte index is a char boundary.
    let head = schema.get(..24).unwrap_or(schema);
    format!("toka_{head}_{}", &hash[..16])
}

/// Whether a commit's error is its notification's (raised after the records committed):
/// PostgreSQL refuses a `NOTIFY` when its notification queue is full.
fn notification_failed(error: &postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        *db.code() == postgres::error::SqlState::PROGRAM_LIMIT_EXCEEDED
            || db.message().to_ascii_lowercase().contains("notif")
    })
}

/// Checks that `schema` holds a journal a follower can read: created by its writer, at
/// the schema version this build knows.
fn check_followed(client: &mut Client, schema: &str) -> Result<(), Error> {
    const OP: &str = "opening a PostgreSQL journal to follow";
    let s = quote(schema);
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
            &[&format!("{s}.toka_schema"), &format!("{s}.kv")],
        )
        .map_err(|e| Error::backend(OP, e))?
        .get(0);
    if !exists {
        return Err(failure(
            OP,
            format!("schema {schema:?} holds no journal yet (its writer creates it)"),
        ));
    }
    let found = schema_version(client, &s, schema, OP)?;
    if found < PG_SCHEMA_VERSION {
        return Err(failure(
            OP,
            format!(
                "the journal in schema {schema:?} is at schema version {found}, older than this build's {PG_SCHEMA_VERSION}: open it with its writer first"
            ),
        ));
    }
    Ok(())
}

/// How a follower learns that its journal moved on ([`PgJournal::follow_with`](crate::PgJournal::follow_with)).
///
/// A follower **listens** on a connection of its own (`LISTEN`) for the notification
/// every commit of the journal sends (see [`PgBackend::notify_channel`]), and also
/// **polls** the journal's head every [`FollowConfig::poll_interval`], a fallback for
/// notifications it missed while its listening connection was down (it reconnects).
/// Either only wakes its subscriptions: they read by position, so nothing is lost or
/// repeated whichever wakes them.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    poll_interval: Duration,
    listen: bool,
}

impl Default for FollowConfig {
    /// Listening, with a poll every second.
    fn default() -> Self {
        FollowConfig {
            poll_interval: Duration::from_secs(1),
            listen: true,
        }
    }
}

impl FollowConfig {
    /// How often the head is read when no notification came (default 1 s; at least 10 ms).
    #[must_use]
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Whether to `LISTEN` for commits (default `true`; `false` polls only, e.g. to
    /// compare the two).
    #[must_use]
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }
}

/// How often the listening thread checks whether it should stop.
const LISTEN_TICK: Duration = Duration::from_millis(100);

impl PgBackend {
    /// Starts the thread that tells a follower about commits: `wake(Some(head))` for each
    /// notification of a commit (with the head it made durable), `wake(None)` every poll
    /// interval and after (re)connecting the listening connection (the caller then reads
    /// the head itself). It stops when `wake` returns `false` or this back-end is dropped.
    pub(crate) fn listen(
        &self,
        follow: &FollowConfig,
        mut wake: impl FnMut(Option<u64>) -> bool + Send + 'static,
    ) -> Result<(), Error> {
        const OP: &str = "listening for the PostgreSQL journal's commits";
        if !self.shared.follower {
            return Err(failure(OP, "only a follower listens"));
        }
        let schema = self.shared.schema.clone();
        let mut config =
            postgres::Config::from_str(&self.shared.url).map_err(|e| Error::backend(OP, e))?;
        config.application_name(&format!("toka-listen/{schema}"));
        bound_network_waits(&mut config);
        let listen_sql = format!("LISTEN {}", quote(&notify_channel(&schema)));
        let stop = Arc::new(AtomicBool::new(false));
        *self
            .shared
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&stop));
        let (poll, listen) = (follow.poll_interval, follow.listen);
        // The first attempt to listen is waited for: once this returns, every later
        // commit wakes the follower (unless the connection failed: then it retries).
        let (started_tx, started) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name(format!("toka-pg-listen-{schema}"))
            .spawn(move || {
                let mut client: Option<Client> = None;
                let mut backoff = Duration::from_millis(50);
                let mut next_poll = Instant::now() + poll;
                let mut started_tx = Some(started_tx);
                while !stop.load(Ordering::Acquire) {
                    if !listen || client.is_some() {
                        started_tx.take();
                    }
                    if listen && client.is_none() {
                        let connected = config.connect(NoTls).and_then(|mut c| {
                            c.batch_execute(&listen_sql)?;
                            Ok(c)
                        });
                        match connected {
                            Ok(c) => {
                                client = Some(c);
                                backoff = Duration::from_millis(50);
                                // Whatever committed while not listening.
                                if !wake(None) {
                                    return;
                                }
                                next_poll = Instant::now() + poll;
                            }
                            Err(error) => {
                                started_tx.take();
                                tracing::warn!(%schema, %error, "a follower cannot listen for commits; it polls meanwhile");
                                std::thread::sleep(backoff.min(poll));
                                backoff = (backoff * 2).min(Duration::from_secs(1));
                            }
                        }
                    }
                    let tick = LISTEN_TICK.min(next_poll.saturating_duration_since(Instant::now()));
                    let mut head = None;
                    match client.as_mut() {
                        Some(c) => {
                            let mut lost = false;
                            let mut notes = c.notifications();
                            let mut take = |note: postgres::Notification| {
                                let at = note.payload().parse::<u64>().unwrap_or(0);
                                head = Some(head.unwrap_or(0).max(at));
                            };
                            let first = notes.timeout_iter(tick).next();
                            match first {
                                Ok(Some(note)) => {
                                    take(note);
                                    // And every one already arrived, without waiting.
                                    let mut more = notes.iter();
                                    loop {
                                        match more.next() {
                                            Ok(Some(note)) => take(note),
                                            Ok(None) => break,
                                            Err(_) => {
                                                lost = true;
                                                break;
                                            }
                                        }
                                    }
                                }
                                Ok(None) => {}
                                Err(_) => lost = true,
                            }
                            drop(notes);
                            if lost || c.is_closed() {
                                tracing::warn!(%schema, "a follower's listening connection was lost; it reconnects");
                                client = None;
                            }
                        }
                        None => std::thread::sleep(tick),
                    }
                    if let Some(head) = head {
                        if !wake(Some(head).filter(|h| *h > 0)) {
                            return;
                        }
                    }
                    if Instant::now() >= next_poll {
                        if !wake(None) {
                            return;
                        }
                        next_poll = Instant::now() + poll;
                    }
                }
            })
            .map_err(|e| Error::backend("starting the PostgreSQL listening thread", e))?;
        let _ = started.recv();
        Ok(())
    }
}

/// Takes the session-level advisory lock of `schema`'s journal, retrying for a while.
fn lock_journal(client: &mut Client, schema: &str) -> Result<(), Error> {
    const OP: &str = "locking the PostgreSQL journal";
    let hash = blake3::hash(format!("toka-journal/{schema}").as_bytes());
    let mut key = [0; 8];
    key.copy_from_slice(&hash.as_bytes()[..8]);
    let key = i64::from_be_bytes(key);
    let deadline = Instant::now() + PG_LOCK_RETRY_FOR;
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .map_err(|e| Error::backend(OP, e))?
            .get(0);
        if locked {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(failure(
                OP,
                format!(
                    "the journal in schema {schema:?} is open in another connection (its advisory lock is held)"
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates the schema if needed and applies the missing migrations, in one transaction.
fn migrate(client: &mut Client, schema: &str) -> Result<(), Error> {
    const OP: &str = "migrating the PostgreSQL journal schema";
    let s = quote(schema);
    let mut tx = client.transaction().map_err(|e| Error::backend(OP, e))?;
    // Creating a schema races with other sessions creating the same one; the lock
    // serializes migrations of the whole database (they are rare and quick).
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock(7435370656391717479);
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.toka_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .map_err(|e| Error::backend(OP, e))?;
    let found = schema_version(&mut tx, &s, schema, OP)?;
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(&sql.replace("{s}", &s))
            .map_err(|e| Error::backend(OP, e))?;
        tx.execute(
            &format!("INSERT INTO {s}.toka_schema (version) VALUES ($1)"),
            &[&version],
        )
        .map_err(|e| Error::backend(OP, e))?;
        tracing::info!(schema, version, "applied a PostgreSQL journal migration");
    }
    tx.commit().map_err(|e| Error::backend(OP, e))
}

/// The worker: runs jobs in order; merges consecutive queued writes into one statement.
fn run(mut conn: Conn, jobs: mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None if conn.in_tx && conn.failed.is_none() => match jobs.recv_timeout(IDLE_COMMIT) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Nobody flushed what is written (an index checkpoint, say): commit
                    // it rather than keep a transaction open, and its locks held.
                    let _ = conn.commit();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        match job {
            Job::Run(task) => task(&mut conn),
            Job::Apply(batch) => {
                let mut writes = BTreeMap::new();
                let mut head = merge(&mut writes, batch);
                loop {
                    match jobs.try_recv() {
                        Ok(Job::Apply(batch)) => head = head.max(merge(&mut writes, batch)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                conn.apply(writes, head);
            }
        }
    }
    if conn.in_tx {
        // Writes nobody flushed: the journal flushes before it closes, so only a journal
        // that failed gets here. Roll back explicitly rather than leave it to the server.
        let _ = conn.client.batch_execute("ROLLBACK");
    }
}

/// Adds a batch's writes to `writes`; returns the log head it reaches (0: none).
fn merge(writes: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>, batch: WriteBatch) -> u64 {
    for (key, value) in batch.ops {
        writes.insert(key, value);
    }
    batch.head
}

/// The range iterator of [`PgBackend`]: pages of 64 rows by keyset queries, each
/// page one job on the worker (a scan holds no transaction or cursor open).
pub struct PgRange {
    shared: Arc<Shared>,
    /// The last key returned (`None`: start at `start`, inclusive).
    after: Option<Vec<u8>>,
    start: Vec<u8>,
    end: Vec<u8>,
    page: std::vec::IntoIter<Entry<Vec<u8>>>,
    done: bool,
}

impl std::fmt::Debug for PgRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgRange")
    }
}

impl Iterator for PgRange {
    type Item = Result<Entry<Vec<u8>>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(entry) = self.page.next() {
            return Some(Ok(entry));
        }
        if self.done {
            return None;
        }
        let (from, inclusive) = match &self.after {
            Some(key) => (key.clone(), false),
            None => (self.start.clone(), true),
        };
        let end = self.end.clone();
        let page = self.shared.call("scanning a range", move |conn| {
            conn.query(|client, stmts| {
                let stmt = if inclusive {
                    &stmts.page_from
                } else {
                    &stmts.page_after
                };
                let rows = client.query(stmt, &[&from, &end, &PAGE])?;
                Ok(rows
                    .into_iter()
                    .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
                    .collect::<Vec<_>>())
            })
        });
        match page {
            Ok(page) => {
                match page.last() {
                    Some((key, _)) if page.len() as i64 == PAGE => {
                        self.after = Some(key.clone());
                    }
                    _ => self.done = true,
                }
                self.page = page.into_iter();
                self.page.next().map(Ok)
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

impl Backend for PgBackend {
    type Value = Vec<u8>;
    type Range = PgRange;

    /// Queues the writes for the worker and returns; they run in the open transaction
    /// before any later read or flush (see the module docs).
    fn apply(&self, batch: WriteBatch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        const OP: &str = "writing to PostgreSQL";
        self.shared
            .sender(OP)?
            .send(Job::Apply(batch))
            .map_err(|_| failure(OP, "the PostgreSQL worker thread stopped"))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, Error> {
        let key = key.to_vec();
        self.shared.call("reading a key", move |conn| {
            conn.query(|client, stmts| {
                Ok(client
                    .query_opt(&stmts.get, &[&key])?
                    .map(|row| row.get::<_, Vec<u8>>(0)))
            })
        })
    }

    fn range(&self, start: &[u8], end: &[u8]) -> Self::Range {
        PgRange {
            shared: Arc::clone(&self.shared),
            after: None,
            start: start.to_vec(),
            end: end.to_vec(),
            page: Vec::new().into_iter(),
            done: start >= end,
        }
    }

    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry<Self::Value>>, Error> {
        if start >= end {
            return Ok(None);
        }
        let (start, end) = (start.to_vec(), end.to_vec());
        self.shared
            .call("reading the last key of a range", move |conn| {
                conn.query(|client, stmts| {
                    Ok(client
                        .query_opt(&stmts.last_in, &[&start, &end])?
                        .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1))))
                })
            })
    }

    /// Commits the open transaction; PostgreSQL fsyncs its WAL before `COMMIT` returns.
    fn flush(&self) -> Result<(), Error> {
        self.shared
            .call("committing to PostgreSQL", |conn| conn.commit())
    }

    fn write_anchor(&self, anchor: &[u8]) -> Result<(), Error> {
        let anchor = anchor.to_vec();
        self.shared.call("writing the anchor", move |conn| {
            if conn.in_tx {
                return conn.query(|client, stmts| {
                    client.execute(&stmts.anchor_put, &[&anchor]).map(drop)
                });
            }
            // Its own transaction, without waiting for an fsync: durable with the next
            // commit (or within the server's wal_writer_delay).
            if conn.fence.is_some() {
                // Fenced: the transaction starts with the lease check.
                if !conn.begin()? {
                    return Ok(()); // `call` reports the lost lease
                }
                conn.query(|client, stmts| {
                    client.batch_execute("SET LOCAL synchronous_commit TO off")?;
                    client.execute(&stmts.anchor_put, &[&anchor]).map(drop)
                })?;
                return conn.commit();
            }
            let hex: String = anchor.iter().map(|b| format!("{b:02x}")).collect();
            let sql = format!(
                "BEGIN; SET LOCAL synchronous_commit TO off;
                 INSERT INTO {s}.anchor (id, value) VALUES (0, '\\x{hex}'::bytea)
                 ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value;
                 COMMIT;",
                s = quote(&conn.schema)
            );
            conn.query(|client, _| client.batch_execute(&sql))
        })
    }

    fn read_anchor(&self) -> Result<Option<Vec<u8>>, Error> {
        self.shared.call("reading the anchor", |conn| {
            conn.query(|client, stmts| {
                Ok(client
                    .query_opt(&stmts.anchor_get, &[])?
                    .map(|row| row.get::<_, Vec<u8>>(0)))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_split_off() {
        let (url, schema) = split_schema("postgres://u:p@h/db?schema=abc&sslmode=disable").unwrap();
        assert_eq!(url, "postgres://u:p@h/db?sslmode=disable");
        assert_eq!(schema.as_deref(), Some("abc"));
        let (url, schema) = split_schema("postgres://u@h/db?schema=abc").unwrap();
        assert_eq!(
            (url.as_str(), schema.as_deref()),
            ("postgres://u@h/db", Some("abc"))
        );
        let (url, schema) = split_schema("host=h user=u").unwrap();
        assert_eq!((url.as_str(), schema), ("host=h user=u", None));
    }

    #[test]
    fn schema_names_are_checked() {
        for good in ["toka", "a_1", "_x"] {
            validate_schema(good).unwrap();
        }
        for bad in ["", "1a", "A", "a-b", "a\"b", &"x".repeat(64)] {
            assert!(validate_schema(bad).is_err(), "{bad:?}");
        }
    }
}
