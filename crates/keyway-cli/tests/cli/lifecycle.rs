//! The registration lifecycle from the command line: `remove` deletes keyway's
//! dynamic registration (RFC 7592) once no saved server uses it, and says so.

use crate::harness::{Keyway, json, stderr, stdout, testbed};

#[tokio::test(flavor = "multi_thread")]
async fn remove_deletes_the_registration_once_no_server_uses_it() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    for name in ["one", "two"] {
        let out = k
            .run_async(&["add", tb.mcp_url(), "--name", name, "--browser", "follow"])
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(tb.stats().registrations, 1, "one client for the issuer");

    let out = k.run_async(&["remove", "one"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("its registration kept for the other servers using it"),
        "{}",
        stdout(&out)
    );
    assert_eq!(tb.stats().registration_deletes, 0);

    let out = k.run_async(&["--json", "remove", "two"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["revocation"], format!("revoked at {}", tb.issuer()));
    assert_eq!(
        v["registration"],
        format!("its registration deleted at {}", tb.issuer())
    );
    assert_eq!(tb.stats().registration_deletes, 1);

    // A new server for the issuer registers anew.
    let out = k
        .run_async(&[
            "add",
            tb.mcp_url(),
            "--name",
            "three",
            "--browser",
            "follow",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tb.stats().registrations, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_rfc_7592_the_registration_is_only_forgotten() {
    let tb = testbed(|k| k.no_registration_management = true).await;
    let k = Keyway::new();
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", "one", "--browser", "follow"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = k.run_async(&["remove", "one"]).await;
    assert!(
        stdout(&out).contains("its registration forgotten (the server offers no way to delete it)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(tb.stats().registration_deletes, 0);
}
