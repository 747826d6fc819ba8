//! The persistence scenarios against a real PostgreSQL server.
//!
//! The test starts its own server (initdb in a temp dir, a free loopback
//! port, run as the `postgres` user when the test runs as root) and stops it
//! afterwards. Where PostgreSQL is not installed it fails and says how to
//! install it (`apt-get install -y postgresql`; `scripts/test.sh` does it).

#![allow(clippy::unwrap_used)]

mod common;

use common::Postgres;
use common::scenarios;

/// One server, one database per scenario: the scenarios each need an empty schema.
#[tokio::test]
async fn content_persistence_on_postgres() {
    let server = Postgres::start().await;
    let admin = scenarios::raw(&server.url()).await;
    for db in ["restart", "pages", "outbox", "stranded"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
    let url = |db: &str| server.url_for(db);

    scenarios::persists_across_restart(&url("restart")).await;
    scenarios::paginates_newest_first(&url("pages")).await;
    scenarios::writes_the_outbox_in_the_same_transaction(&url("outbox")).await;
    scenarios::undelivered_events_survive_a_restart(&url("stranded")).await;
}
