//! Everyday edges: replacing a saved server, importing and exporting client configs,
//! editing, the names and habits people bring from other tools.

use serde_json::Value;

use crate::harness::{Keyway, dead_mcp_url, json, stderr, stdout, testbed};

/// The saved server's row in `list --json`.
pub async fn row(k: &Keyway, name: &str) -> Option<Value> {
    let out = k.run_async(&["list", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    json(&out)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn add_force_replaces_a_saved_server_and_only_once_the_new_one_is_saved() {
    let first = testbed(|_| {}).await;
    let second = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let out = k
        .run_async(&[
            "add",
            first.mcp_url(),
            "--name",
            "work",
            "--browser",
            "follow",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    // Without --force: refused, with what to do.
    let out = k
        .run_async(&["add", second.mcp_url(), "--name", "work"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--force replaces"),
        "{}",
        stderr(&out)
    );

    // A replacement that fails (an OAuth server whose authorization is declined)
    // leaves the old server as it was.
    let declining = testbed(|k| k.deny = true).await;
    let out = k
        .run_async(&[
            "add",
            declining.mcp_url(),
            "--name",
            "work",
            "--force",
            "--browser",
            "follow",
        ])
        .await;
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    let r = row(&k, "work").await.unwrap();
    assert_eq!(r["url"], first.mcp_url());
    assert_eq!(r["state"], "authorized");
    let out = k.run_async(&["list", "--json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 1, "{}", stdout(&out));

    // With --force: the new one takes the name, the old tokens are revoked.
    let out = k
        .run_async(&[
            "--json",
            "add",
            second.mcp_url(),
            "--name",
            "work",
            "--force",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let added = json(&out);
    assert_eq!(added["name"], "work");
    assert!(
        added["replaced"]
            .as_str()
            .unwrap()
            .contains(first.mcp_url()),
        "{added}"
    );
    let r = row(&k, "work").await.unwrap();
    assert_eq!(
        (r["url"].as_str(), r["state"].as_str()),
        (Some(second.mcp_url()), Some("ready"))
    );
    assert!(
        first.stats().endpoint(keyway_testbed::Endpoint::Revoke) >= 1,
        "the replaced server's tokens are revoked"
    );
    let out = k.run_async(&["list", "--json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 1, "{}", stdout(&out));

    // --force also saves a server that cannot be reached, over a saved one.
    let dead = dead_mcp_url();
    let out = k
        .run_async(&["add", &dead, "--name", "work", "--force"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&k, "work").await.unwrap()["url"], dead.as_str());
}
