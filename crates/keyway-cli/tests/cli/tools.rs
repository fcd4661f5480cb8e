//! `keyway tools`: many servers at once, one hung.

use std::time::Instant;

use crate::harness::{Keyway, dead_mcp_url, json, stderr, testbed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_servers_one_hung_answer_within_the_timeout() {
    let mut beds = Vec::new();
    for _ in 0..50 {
        beds.push(testbed(|k| k.open = true).await);
    }
    let k = Keyway::new();
    let servers: serde_json::Map<String, serde_json::Value> = beds
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                format!("srv{i:02}"),
                serde_json::json!({"url": b.mcp_url()}),
            )
        })
        .collect();
    let file = k.home.path().join("mcp.json");
    std::fs::write(
        &file,
        serde_json::json!({ "mcpServers": servers }).to_string(),
    )
    .unwrap();
    let out = k.run_async(&["import", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    beds[17].set_hung(true);
    let started = Instant::now();
    let out = k.run_async(&["--json", "tools", "--timeout", "2"]).await;
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let rows = v["servers"].as_array().unwrap();
    assert_eq!(rows.len(), 50);
    let hung: Vec<_> = rows.iter().filter(|r| r["status"] != "ok").collect();
    assert_eq!(hung.len(), 1, "{hung:?}");
    assert_eq!(
        (hung[0]["name"].as_str(), hung[0]["status"].as_str()),
        (Some("srv17"), Some("timeout"))
    );
    assert_eq!(v["tools"].as_array().unwrap().len(), 49 * 9);
    assert!(
        v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "srv00__echo")
    );
    // The bound: the hung server's timeout plus a margin for starting the process and
    // 49 handshakes in a debug build on a small machine (measured precisely in bench/).
    assert!(elapsed.as_secs_f64() < 2.0 + 3.0, "took {elapsed:?}");
    let slowest_ok = rows
        .iter()
        .filter(|r| r["status"] == "ok")
        .map(|r| r["elapsed_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        slowest_ok < 2000,
        "a healthy server waited for the hung one: {slowest_ok} ms"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn merged_names_and_failures_per_server() {
    let ok = testbed(|k| k.open = true).await;
    let auth = testbed(|_| {}).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", ok.mcp_url(), "--name", "My Server"])
            .await
            .status
            .success()
    );
    assert!(
        k.run_async(&["add", auth.mcp_url(), "--name", "locked", "--no-authorize"])
            .await
            .status
            .success()
    );
    let dead = dead_mcp_url();
    assert!(
        k.run_async(&["add", &dead, "--name", "down", "--force"])
            .await
            .status
            .success()
    );
    let v = json(&k.run_async(&["--json", "tools"]).await);
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"my_server__echo"), "{names:?}");
    let status = |n: &str| {
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("locked"), "needs-auth");
    assert_eq!(status("down"), "error");
    // Only the named ones.
    let v = json(&k.run_async(&["--json", "tools", "My Server"]).await);
    assert_eq!(v["servers"].as_array().unwrap().len(), 1);
    assert_eq!(
        k.run_async(&["tools", "--timeout", "-1"])
            .await
            .status
            .code(),
        Some(2)
    );
}
