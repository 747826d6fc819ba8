//! Persistence: the content table and the transactional outbox, in SQLite or PostgreSQL.
//!
//! Both backends go through sqlx's `Any` driver and share every query (both
//! accept `$1` placeholders, and the schema keeps to types both have: text
//! and 64-bit integers). Only the migrations differ, one directory per
//! backend, embedded in the binary and run on open.
//!
//! # The outbox
//!
//! [`Store::create`] inserts the content row and its `content.created` event
//! into `outbox` in one transaction: either both exist or neither does, so an
//! event is never announced for content that was not stored, and stored
//! content is never left without its event. The relay later reads undelivered
//! outbox rows oldest first, appends them to the event log, and marks them
//! delivered. On PostgreSQL the relay's rows are locked (`FOR UPDATE SKIP
//! LOCKED`) until marked, so several content instances can relay side by
//! side without handing the same row to the log twice.

use std::path::Path;
use std::time::Duration;

use herald_notifier::ContentCreated;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};
use uuid::Uuid;

use crate::model::{Content, NewContent, now_micros, rfc3339};
use crate::page::{Cursor, Page, PageRequest};

/// The SQLite schema, embedded.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The PostgreSQL schema, embedded.
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a request waits for a free database connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (the default), or an in-memory SQLite database.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no database this service supports.
    #[error(
        "unsupported database url {0:?}: use sqlite://path/to/herald.db or postgres://user@host/db"
    )]
    BadUrl(String),
    /// The directory for the SQLite file could not be created.
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The database refused or failed a statement, or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored timestamp cannot be represented (a corrupted row).
    #[error("stored timestamp {0} is out of range")]
    BadTimestamp(i64),
}

impl StoreError {
    /// Whether the failure is the database being unreachable or overloaded,
    /// which clients should retry (503), rather than a bug or bad data (500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_code(&code)),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The content database: a connection pool and the backend it talks to.
#[derive(Debug, Clone)]
pub struct Store {
    /// Connections, shared by requests and the relay.
    pool: AnyPool,
    /// Which SQL dialect's migrations were applied; the relay locks rows only on PostgreSQL.
    backend: Backend,
}

/// Undelivered outbox rows handed to the relay, oldest first.
pub(crate) struct OutboxBatch {
    /// On PostgreSQL, the transaction holding the rows' locks until they are marked.
    tx: Option<Transaction<'static, Any>>,
    /// The rows.
    pub(crate) rows: Vec<OutboxRow>,
}

/// One outbox row as the relay needs it.
pub(crate) struct OutboxRow {
    /// The row's position, to mark it delivered.
    pub(crate) seq: i64,
    /// The event's JSON text, appended to the log verbatim.
    pub(crate) payload: String,
}

impl Store {
    /// Opens (creating the SQLite file and its directory if needed) and migrates the database at `url`.
    ///
    /// `sqlite://relative/path.db`, `sqlite:///absolute/path.db`,
    /// `sqlite::memory:` (one connection, gone on exit), or
    /// `postgres://user:password@host:port/db`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url, in_memory) = prepare_url(url).await?;
        let mut options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        options = match (backend, in_memory) {
            // Every connection to `:memory:` is its own database: keep exactly one, forever.
            (Backend::Sqlite, true) => options
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            // SQLite has one writer at a time; a few connections serve concurrent reads.
            (Backend::Sqlite, false) => options.max_connections(4),
            (Backend::Postgres, _) => options.max_connections(10),
        };
        let pool = options.connect(&url).await?;
        match backend {
            Backend::Sqlite => {
                if !in_memory {
                    // Readers do not block the writer; the mode is stored in the file.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&pool)
                        .await?;
                }
                SQLITE_MIGRATIONS.run(&pool).await?;
            }
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Stores new content and its `content.created` event, in one transaction.
    pub async fn create(&self, new: &NewContent) -> Result<Content, StoreError> {
        let created_at_us = now_micros();
        let created_at = rfc3339(created_at_us).ok_or(StoreError::BadTimestamp(created_at_us))?;
        let content = Content {
            id: Uuid::now_v7().to_string(),
            title: new.title.clone(),
            body: new.body.clone(),
            created_at,
        };
        let event = ContentCreated {
            id: content.id.clone(),
            title: content.title.clone(),
            body: content.body.clone(),
            created_at: content.created_at.clone(),
            event_id: Uuid::now_v7().to_string(),
        };

        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO content (id, title, body, created_at_us) VALUES ($1, $2, $3, $4)")
            .bind(&content.id)
            .bind(&content.title)
            .bind(&content.body)
            .bind(created_at_us)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO outbox (event_id, event_type, payload, created_at_us) VALUES ($1, $2, $3, $4)")
            .bind(&event.event_id)
            .bind(herald_notifier::CONTENT_CREATED)
            .bind(event.to_json())
            .bind(created_at_us)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(content)
    }

    /// The content with this id, if any.
    pub async fn get(&self, id: &str) -> Result<Option<Content>, StoreError> {
        let row =
            sqlx::query("SELECT seq, id, title, body, created_at_us FROM content WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| content_from_row(&row).map(|(_, content)| content))
            .transpose()
    }

    /// One page of content, newest first.
    pub async fn list(&self, request: PageRequest) -> Result<Page, StoreError> {
        let before = request.after.map_or(i64::MAX, |cursor| cursor.0);
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        // One more than asked for tells whether there is a next page.
        let rows = sqlx::query("SELECT seq, id, title, body, created_at_us FROM content WHERE seq < $1 ORDER BY seq DESC LIMIT $2")
            .bind(before)
            .bind(i64::from(request.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(limit.min(rows.len()));
        let mut last_seq = None;
        for row in rows.iter().take(limit) {
            let (seq, content) = content_from_row(row)?;
            last_seq = Some(seq);
            items.push(content);
        }
        let next_cursor = if more {
            last_seq.map(|seq| Cursor(seq).encode())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// How many outbox rows wait for the relay.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE delivered_at_us IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Up to `limit` undelivered outbox rows, oldest first (locked until marked, on PostgreSQL).
    pub(crate) async fn undelivered(&self, limit: u32) -> Result<OutboxBatch, StoreError> {
        match self.backend {
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let rows = sqlx::query(
                    "SELECT seq, payload FROM outbox WHERE delivered_at_us IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                if rows.is_empty() {
                    tx.rollback().await?;
                    return Ok(OutboxBatch {
                        tx: None,
                        rows: Vec::new(),
                    });
                }
                Ok(OutboxBatch {
                    tx: Some(tx),
                    rows: outbox_rows(&rows)?,
                })
            }
            Backend::Sqlite => {
                let rows = sqlx::query("SELECT seq, payload FROM outbox WHERE delivered_at_us IS NULL ORDER BY seq LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(OutboxBatch {
                    tx: None,
                    rows: outbox_rows(&rows)?,
                })
            }
        }
    }

    /// Marks every row of `batch` delivered (and releases its locks).
    pub(crate) async fn mark_delivered(&self, batch: OutboxBatch) -> Result<(), StoreError> {
        let OutboxBatch { tx, rows } = batch;
        if rows.is_empty() {
            return Ok(());
        }
        // Only placeholders are formatted into the statement; every value is bound.
        let placeholders: Vec<String> = (0..rows.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE outbox SET delivered_at_us = $1 WHERE seq IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now_micros());
        for row in &rows {
            query = query.bind(row.seq);
        }
        match tx {
            Some(mut tx) => {
                query.execute(&mut *tx).await?;
                tx.commit().await?;
            }
            None => {
                query.execute(&self.pool).await?;
            }
        }
        Ok(())
    }

    /// Gives `batch` back undelivered (and releases its locks), after the log refused it.
    pub(crate) async fn release(&self, batch: OutboxBatch) -> Result<(), StoreError> {
        if let Some(tx) = batch.tx {
            tx.rollback().await?;
        }
        Ok(())
    }

    /// Deletes outbox rows delivered more than `older_than` ago; returns how many.
    pub(crate) async fn prune_delivered(&self, older_than: Duration) -> Result<u64, StoreError> {
        let keep_micros = i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX);
        let cutoff = now_micros().saturating_sub(keep_micros);
        let done = sqlx::query(
            "DELETE FROM outbox WHERE delivered_at_us IS NOT NULL AND delivered_at_us < $1",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether a database error code means "try again later".
///
/// PostgreSQL codes are five-character SQLSTATEs: connection exceptions
/// (class 08), insufficient resources (53) and operator intervention such as
/// a shutdown (57). SQLite codes are (extended) result codes whose low byte
/// is the primary code: BUSY (5) and LOCKED (6) mean another writer held the
/// file longer than the busy timeout.
fn is_transient_code(code: &str) -> bool {
    if code.len() == 5 {
        return ["08", "53", "57"]
            .iter()
            .any(|class| code.starts_with(class));
    }
    code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

fn content_from_row(row: &AnyRow) -> Result<(i64, Content), StoreError> {
    let seq: i64 = row.try_get("seq")?;
    let created_at_us: i64 = row.try_get("created_at_us")?;
    let content = Content {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        created_at: rfc3339(created_at_us).ok_or(StoreError::BadTimestamp(created_at_us))?,
    };
    Ok((seq, content))
}

fn outbox_rows(rows: &[AnyRow]) -> Result<Vec<OutboxRow>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(OutboxRow {
                seq: row.try_get("seq")?,
                payload: row.try_get("payload")?,
            })
        })
        .collect()
}

/// Works out the backend, and for SQLite makes sure the file can be created:
/// its directory exists and the URL asks for create-if-missing (`mode=rwc`).
async fn prepare_url(url: &str) -> Result<(Backend, String, bool), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned(), false));
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(StoreError::BadUrl(url.to_owned()));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory =
        path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory");
    if in_memory {
        return Ok((Backend::Sqlite, url.to_owned(), true));
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
    }
    let url = if query.split('&').any(|p| p.starts_with("mode=")) {
        url.to_owned()
    } else if query.is_empty() {
        format!("{url}?mode=rwc")
    } else {
        format!("{url}&mode=rwc")
    };
    Ok((Backend::Sqlite, url, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_of_both_backends() {
        for code in ["5", "6", "517", "262", "08006", "53300", "57P01"] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["1", "19", "2067", "23505", "42P01"] {
            assert!(!is_transient_code(code), "{code}");
        }
    }

    #[tokio::test]
    async fn urls_pick_the_backend_and_sqlite_creates_the_file() {
        assert_eq!(
            prepare_url("postgres://u@h/db").await.unwrap().0,
            Backend::Postgres
        );
        assert_eq!(
            prepare_url("sqlite::memory:").await.unwrap(),
            (Backend::Sqlite, "sqlite::memory:".to_owned(), true)
        );
        assert!(matches!(
            prepare_url("mysql://x").await,
            Err(StoreError::BadUrl(_))
        ));
        let (_, url, _) = prepare_url("sqlite:///tmp/x.db?cache=shared")
            .await
            .unwrap();
        assert_eq!(url, "sqlite:///tmp/x.db?cache=shared&mode=rwc");
        let (_, url, _) = prepare_url("sqlite:///tmp/x.db?mode=ro").await.unwrap();
        assert_eq!(url, "sqlite:///tmp/x.db?mode=ro");
    }

    #[tokio::test]
    async fn an_in_memory_store_keeps_content_and_outbox_together() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let created = store
            .create(&NewContent {
                title: "t".into(),
                body: "b".into(),
            })
            .await
            .unwrap();
        assert_eq!(store.get(&created.id).await.unwrap(), Some(created.clone()));
        assert_eq!(store.outbox_backlog().await.unwrap(), 1);
        let batch = store.undelivered(10).await.unwrap();
        assert_eq!(batch.rows.len(), 1);
        assert!(batch.rows[0].payload.contains(&created.id));
        store.mark_delivered(batch).await.unwrap();
        assert_eq!(store.outbox_backlog().await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(store.prune_delivered(Duration::ZERO).await.unwrap(), 1);
    }
}
