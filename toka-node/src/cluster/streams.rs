//! A shard's events read on any node, from a **follower** of the shard's journal
//! ([`PgJournal::follow`]): `GET /events/stream?shard=N` and `GET /events?shard=N`.
//!
//! The node that receives the request serves it itself, whoever holds the shard: its
//! follower reads what the holder committed, and is woken by the commits' `NOTIFY`. So a
//! stream is not tied to the holder: it keeps going, gap-free and in order, when the
//! holder is killed or hands the shard over and another node takes it (the new holder
//! continues the same journal). The token is checked here, as the shard's own route would
//! (`api.events.read`).
//!
//! One follower per shard is opened on the first such request and kept (two
//! connections to the database: one reading, one listening).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use toka_store::{Journal, JournalConfig, PgJournal};
use toka_tools::Verified;
use tokio::sync::{Mutex, watch};

use super::Cluster;
use crate::server::auth::admit;
use crate::server::{ApiError, EventsQuery, StreamQuery, event_sse, read_events};

/// The followers of the shards' journals this node opened, and what ends their streams.
pub(crate) struct Followers {
    journals: Mutex<HashMap<u32, Arc<PgJournal>>>,
    config: JournalConfig,
    /// Turns true when the node stops: every stream served from a follower ends.
    closing: watch::Sender<bool>,
}

impl Followers {
    /// Followers opened with `config` (the shards' encryption key, if any).
    pub(crate) fn new(config: JournalConfig) -> Self {
        Followers {
            journals: Mutex::new(HashMap::new()),
            config,
            closing: watch::channel(false).0,
        }
    }

    /// Ends every stream served from a follower (the node is stopping).
    pub(crate) fn close_streams(&self) {
        self.closing.send_replace(true);
    }
}

/// The follower of `shard`'s journal, opened on first use.
async fn follower(cluster: &Arc<Cluster>, shard: u32) -> Result<Arc<PgJournal>, Response> {
    let mut journals = cluster.followers.journals.lock().await;
    if let Some(journal) = journals.get(&shard) {
        return Ok(Arc::clone(journal));
    }
    let settings = &cluster.settings;
    let url = format!(
        "{}{}schema={}",
        settings.url,
        super::sep(&settings.url),
        settings.shard_schema(shard)
    );
    let config = cluster.followers.config.clone();
    let opened = tokio::task::spawn_blocking(move || PgJournal::follow(&url, config))
        .await
        .map_err(|e| ApiError::internal(format!("opening a follower: {e}")).into_response())?;
    match opened {
        Ok(journal) => {
            let journal = Arc::new(journal);
            journals.insert(shard, Arc::clone(&journal));
            Ok(journal)
        }
        Err(error) => {
            tracing::warn!(shard, %error, "cannot follow the shard's journal");
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("shard {shard}'s journal cannot be read yet; retry shortly"),
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            Err(response)
        }
    }
}

/// `GET /events/stream?shard=N` (`stream`) or `GET /events?shard=N`, answered here from
/// a follower of shard `shard`; `uri` is the request's, without `shard`.
pub(crate) async fn serve(
    cluster: &Arc<Cluster>,
    token: &Verified,
    shard: u32,
    uri: &Uri,
    stream: bool,
) -> Response {
    if let Err(message) = admit(&cluster.authority, token, "api.events.read", None) {
        return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
    }
    if stream {
        let query = match Query::<StreamQuery>::try_from_uri(uri) {
            Ok(Query(query)) => query,
            Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
        };
        let journal = match follower(cluster, shard).await {
            Ok(journal) => journal,
            Err(refused) => return refused,
        };
        let subscription = journal.subscribe(query.first());
        return event_sse(subscription, cluster.followers.closing.subscribe()).into_response();
    }
    let query = match Query::<EventsQuery>::try_from_uri(uri) {
        Ok(Query(query)) => query,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    let journal = match follower(cluster, shard).await {
        Ok(journal) => journal,
        Err(refused) => return refused,
    };
    // Reads block on the database: off the async workers.
    let read = tokio::task::spawn_blocking(move || {
        read_events(&*journal as &dyn Journal, &query).map(axum::Json)
    })
    .await;
    match read {
        Ok(Ok(json)) => json.into_response(),
        Ok(Err(error)) => error.into_response(),
        Err(e) => ApiError::internal(format!("reading events: {e}")).into_response(),
    }
}
