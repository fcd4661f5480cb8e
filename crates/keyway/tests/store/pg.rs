//! The throwaway cluster (`keyway_testbed::postgres`) the Postgres store's tests use.
//! Tests of the Postgres store are named `pg_…` (`cargo test -p keyway --test store pg_`).

pub use keyway_testbed::postgres::{cluster, connect};
use tokio_postgres::Client;

#[tokio::test]
async fn pg_cluster_starts_and_gives_each_test_its_own_database() {
    let cluster = cluster();
    let (a, b) = (
        cluster.fresh_database().await,
        cluster.fresh_database().await,
    );
    assert_ne!(a, b);
    let (a, b) = (connect(&a).await, connect(&b).await);
    a.batch_execute("CREATE TABLE only_here (id integer)")
        .await
        .expect("create a table in the first database");
    assert!(has_table(&a).await, "the table is where it was made");
    assert!(!has_table(&b).await, "the other database does not see it");
    let name = |c: Client| async move {
        let row = c.query_one("SELECT current_database()", &[]).await;
        row.expect("current_database()").get::<_, String>(0)
    };
    assert_ne!(name(a).await, name(b).await);
}

async fn has_table(client: &Client) -> bool {
    client
        .query_one("SELECT to_regclass('public.only_here') IS NOT NULL", &[])
        .await
        .expect("look the table up")
        .get(0)
}
