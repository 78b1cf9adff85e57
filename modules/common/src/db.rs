//! The one SQL layer: a sqlx `Any` pool over SQLite (the embedded default, a
//! file in the data directory) or PostgreSQL, chosen by the URL's scheme, with
//! the schema migrated on connect.
//!
//! Queries are written once for both dialects: `$1`-style placeholders (SQLite
//! accepts them too), times as `BIGINT` microseconds since the epoch, JSON as
//! `TEXT`, booleans as integers where portability matters.
//!
//! One process opens each database once: [`Databases`] hands every role
//! that names the same URL the same pool, so roles sharing the embedded
//! SQLite file queue for its one writer connection instead of failing with
//! "database is locked". Transactions that read and then write begin with
//! [`Database::begin_write`] (`BEGIN IMMEDIATE` on SQLite), so another
//! process's writer makes them wait for the busy timeout rather than fail.
//!
//! Migrations live at the workspace root in `migrations/sqlite` and
//! `migrations/postgres`, one file per step named `NNNN_description.sql`; both
//! dialects keep the same numbers. They are embedded at build time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Transaction};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// A connection pool to mlserve's SQL database, with its dialect.
#[derive(Debug, Clone)]
pub struct Database {
    /// The pool; every query goes through it.
    pub pool: AnyPool,
    /// Which SQL dialect the pool speaks.
    pub dialect: Dialect,
}

/// The SQL dialects mlserve supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (embedded default).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names a scheme that is neither sqlite nor postgres.
    #[error("unsupported database url '{0}': use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// Connecting failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The SQLite file's directory could not be created.
    #[error("cannot create the database directory '{path}': {source}")]
    Directory {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Dialect {
    /// The dialect a database URL names.
    pub fn of_url(url: &str) -> Result<Dialect, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(url.to_string()))
        }
    }
}

/// The embedded default URL: `sqlite://<data_dir>/mlserve.db`, created if missing.
pub fn default_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("mlserve.db").display()
    )
}

impl Database {
    /// Connects to `url` and applies every pending migration.
    pub async fn connect(url: &str) -> Result<Database, DbError> {
        let dialect = Dialect::of_url(url)?;
        install_default_drivers();
        if dialect == Dialect::Sqlite {
            create_sqlite_directory(url)?;
        }
        // SQLite serializes writers; one connection avoids "database is
        // locked" under concurrent writes while WAL keeps readers going.
        let max = match dialect {
            Dialect::Sqlite => 1,
            Dialect::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(DbError::Connect)?;
        migrator(dialect)
            .run(&pool)
            .await
            .map_err(DbError::Migrate)?;
        Ok(Database { pool, dialect })
    }
}

impl Database {
    /// Begins a transaction that will write: `BEGIN IMMEDIATE` on SQLite,
    /// which takes the write lock first (waiting up to the busy timeout for
    /// another writer), so a read inside it cannot be made stale by another
    /// connection's write, and the commit never fails for a lock; a plain
    /// `BEGIN` on PostgreSQL (row locks do that there).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => match self.pool.begin_with("BEGIN IMMEDIATE").await {
                // sqlx still counts a transaction open on the pooled
                // connection (its ROLLBACK was refused because SQLite had
                // already ended it): that connection cannot begin again, so
                // it is closed and the pool opens a fresh one.
                Err(sqlx::Error::InvalidSavePointStatement) => {
                    tracing::warn!("closing a SQLite connection left inside a transaction");
                    self.pool.acquire().await?.close().await?;
                    self.pool.begin_with("BEGIN IMMEDIATE").await
                }
                other => other,
            },
            Dialect::Postgres => self.pool.begin().await,
        }
    }
}

/// Whether `err` means the database cannot be reached or is going away (a
/// restart, a crash, a failover) rather than that the query is wrong: the
/// pool found no connection in time or is closed, the connection broke, or
/// the server ended the session or refused it (SQLSTATE class 08,
/// connection exception; 57P01 admin shutdown, 57P02 crash shutdown, 57P03
/// cannot connect now; 53300 too many connections). A fast restart
/// (`pg_ctl stop -m fast`) ends every session with 57P01, so statements in
/// flight at that moment fail with it. Roles answer these with
/// `Unavailable` (503): the same request may succeed once the database is
/// back.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_sqlstate(&code)),
        _ => false,
    }
}

/// The SQLSTATEs of [`is_unavailable`].
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// The databases one process has open, one pool per URL: every role that
/// names the same database shares its pool (and, with SQLite, its one writer
/// connection). Clones share the set.
#[derive(Debug, Clone, Default)]
pub struct Databases {
    open: Arc<tokio::sync::Mutex<HashMap<String, Database>>>,
}

impl Databases {
    /// The pool of `url`, connected and migrated on first use.
    pub async fn open(&self, url: &str) -> Result<Database, DbError> {
        let mut open = self.open.lock().await;
        if let Some(db) = open.get(url) {
            return Ok(db.clone());
        }
        let db = Database::connect(url).await?;
        open.insert(url.to_string(), db.clone());
        Ok(db)
    }
}

/// The embedded migrations of `dialect`.
pub fn migrator(dialect: Dialect) -> Migrator {
    let files = match dialect {
        Dialect::Sqlite => embedded::SQLITE,
        Dialect::Postgres => embedded::POSTGRES,
    };
    let migrations: Vec<Migration> = files
        .iter()
        .map(|(stem, sql)| {
            let (version, description) = stem.split_once('_').unwrap_or((stem, ""));
            Migration::new(
                version.parse().unwrap_or(0),
                Cow::Owned(description.replace('_', " ")),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

fn create_sqlite_directory(url: &str) -> Result<(), DbError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| DbError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod unavailable_tests {
    use super::*;
    use std::borrow::Cow;

    /// A server error carrying only its SQLSTATE.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "sqlstate {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "test"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code)))
    }

    #[test]
    fn a_database_going_away_is_unavailable_a_bad_query_is_not() {
        for err in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()),
            coded("57P01"),
            coded("57P02"),
            coded("57P03"),
            coded("08006"),
            coded("53300"),
        ] {
            assert!(is_unavailable(&err), "{err}");
        }
        for err in [
            sqlx::Error::RowNotFound,
            coded("23505"),
            coded("42P01"),
            coded("40001"),
        ] {
            assert!(!is_unavailable(&err), "{err}");
        }
    }
}

/// Test databases: a fresh SQLite file, or a fresh schema in the PostgreSQL
/// `test` database on this machine (`MLSERVE_TEST_POSTGRES_URL` overrides
/// `postgres://postgres@127.0.0.1:5432/test`). Each call is isolated from the
/// others, so tests can run in parallel. Only with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    /// The PostgreSQL server tests use.
    pub fn postgres_url() -> String {
        std::env::var("MLSERVE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A migrated SQLite database in a new file under `dir`.
    pub async fn sqlite(dir: &Path) -> Database {
        let url = default_url(dir);
        Database::connect(&url).await.expect("sqlite test database")
    }

    /// A migrated, empty PostgreSQL schema of its own. Panics when the server
    /// is unreachable: tests that need PostgreSQL never skip silently.
    pub async fn postgres() -> Database {
        use sqlx::Executor;
        install_default_drivers();
        let base = postgres_url();
        let schema = format!(
            "t_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let admin = sqlx::AnyPool::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test: {e}"));
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create test schema");
        admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        Database::connect(&url)
            .await
            .expect("postgres test database")
    }
}
