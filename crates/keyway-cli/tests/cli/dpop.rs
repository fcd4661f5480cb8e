//! DPoP from the command line: `probe` says what would happen, `add` binds the saved
//! tokens to a key sealed in the store, later commands prove it (nonces included),
//! `show` says so, and `--dpop` is obeyed.

use crate::harness::{Keyway, stderr, stdout, testbed};

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_server_holds_dpop_bound_tokens_that_later_commands_prove() {
    let tb = testbed(|k| k.dpop_nonce = true).await;
    let k = Keyway::new();

    let out = k.run_async(&["probe", tb.mcp_url()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("dpop         offered (ES256): tokens will be bound"),
        "{}",
        stdout(&out)
    );

    let out = k
        .run_async(&[
            "add",
            tb.mcp_url(),
            "--name",
            "bound",
            "--browser",
            "follow",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tb.stats().dpop_bound_tokens_issued, 1);

    let out = k.run_async(&["show", "bound"]).await;
    assert!(
        stdout(&out).contains("bound to     a DPoP key keyway holds (jkt "),
        "{}",
        stdout(&out)
    );

    // Another process: the key comes out of the store, the nonce is asked for again.
    let challenges = tb.stats().dpop_nonce_challenges;
    let out = k
        .run_async(&["call", "bound", "echo", "--args", r#"{"text":"proved"}"#])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "proved\n");
    let stats = tb.stats();
    assert!(stats.dpop_nonce_challenges > challenges);
    assert_eq!(stats.dpop_proofs_refused, 0);
    assert_eq!(stats.authorizations, 1, "no new authorization was needed");
}

#[tokio::test(flavor = "multi_thread")]
async fn dpop_never_and_always_are_obeyed_with_a_clear_error() {
    let tb = testbed(|k| k.dpop = true).await;
    let k = Keyway::new();
    let out = k
        .run_async(&[
            "add",
            tb.mcp_url(),
            "--name",
            "plain",
            "--browser",
            "follow",
            "--dpop",
            "never",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tb.stats().dpop_bound_tokens_issued, 0);
    let out = k.run_async(&["show", "plain"]).await;
    assert!(!stdout(&out).contains("bound to"), "{}", stdout(&out));

    // A server that knows no DPoP, with --dpop always: refused, nothing saved.
    let plain = testbed(|_| {}).await;
    let out = k
        .run_async(&[
            "add",
            plain.mcp_url(),
            "--name",
            "strict",
            "--browser",
            "follow",
            "--dpop",
            "always",
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("issued a Bearer token"), "{err}");
    assert!(err.contains("--dpop never"), "a next step: {err}");
    let out = k.run_async(&["show", "strict"]).await;
    assert!(!out.status.success(), "nothing was saved");

    let out = k
        .run_async(&["add", plain.mcp_url(), "--dpop", "sometimes"])
        .await;
    assert_eq!(out.status.code(), Some(2));
}
