//! `keyway call --url`: authorization as the server asks, bounded, with clear errors.

use keyway_testbed::{Knobs, Testbed};
use serde_json::Value;

use crate::harness::{Keyway, stderr, stdout};

async fn testbed(f: impl FnOnce(&mut Knobs)) -> Testbed {
    let mut k = Knobs::default();
    f(&mut k);
    Testbed::start(k).await.unwrap()
}

fn call<'a>(tb: &'a Testbed, tool: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["call", "--url", tb.mcp_url(), tool, "--browser", "follow"];
    v.extend_from_slice(extra);
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn call_authorizes_then_prints_the_result() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let out = k
        .run_async(&call(&tb, "echo", &["--args", r#"{"text":"hello"}"#]))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    assert!(stderr(&out).contains("authorized by"), "{}", stderr(&out));
    assert_eq!(tb.stats().authorizations, 1);
    assert!(!stderr(&out).contains("tb_at_"), "no token in the output");
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_in_any_order_and_json_output() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let out = k
        .run_async(&[
            "--json",
            "call",
            "add",
            "--args",
            r#"{"a":1,"b":2}"#,
            "--browser",
            "follow",
            "--url",
            tb.mcp_url(),
            "-q",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["content"][0]["text"], "3");
    assert_eq!(
        stderr(&out),
        "",
        "-q keeps stderr quiet when nothing needs a person"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn step_up_succeeds_with_the_union_of_scopes() {
    let tb = testbed(|_| {}).await;
    let out = Keyway::new().run_async(&call(&tb, "admin_only", &[])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "admin access granted\n");
    let log = tb.stats().authorize_log;
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[1].scope.as_deref(),
        Some("mcp:tools offline_access mcp:admin")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_step_up_stops_after_three_authorizations() {
    let tb = testbed(|k| k.step_up_never_satisfied = true).await;
    let out = Keyway::new().run_async(&call(&tb, "admin_only", &[])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("still refuses after 3 authorizations"),
        "{}",
        stderr(&out)
    );
    // One for the first operation (connecting and listing the tools, which got
    // through), three for the call's 403s: three per operation, the first included.
    assert_eq!(tb.stats().authorizations, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_403_does_not_send_keyway_back_to_authorize() {
    let tb = testbed(|k| k.forbidden_tools = vec!["echo".into()]).await;
    let out = Keyway::new()
        .run_async(&call(&tb, "echo", &["--args", r#"{"text":"x"}"#]))
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    assert_eq!(tb.stats().authorizations, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_always_answers_401_is_a_bounded_failure() {
    let tb = testbed(|k| k.always_401 = true).await;
    let out = Keyway::new()
        .run_async(&call(&tb, "echo", &["--args", r#"{"text":"x"}"#]))
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("still answers 401"),
        "{}",
        stderr(&out)
    );
    assert!(tb.stats().authorizations <= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_registration_path_says_what_to_pass() {
    let tb = testbed(|k| k.no_dcr = true).await;
    let out = Keyway::new()
        .run_async(&call(&tb, "echo", &["--args", r#"{"text":"x"}"#]))
        .await;
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("no way for keyway to register") && err.contains("--client-id"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preregistered_secret_comes_from_the_environment() {
    let tb = testbed(|k| {
        k.no_dcr = true;
        k.clients = vec![keyway_testbed::ClientSpec::confidential(
            "pre",
            "env-s3cret",
            keyway_testbed::TokenAuthMethod::ClientSecretPost,
        )];
    })
    .await;
    let k = Keyway::new();
    let mut cmd = k.cmd(&call(
        &tb,
        "echo",
        &[
            "--args",
            r#"{"text":"x"}"#,
            "--client-id",
            "pre",
            "--client-auth",
            "client_secret_post",
        ],
    ));
    cmd.env("KEYWAY_CLIENT_SECRET", "env-s3cret");
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        tb.stats().token_log.back().unwrap().client_auth,
        "client_secret_post"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_usage_errors_and_unknown_tools_failures() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let out = k.run_async(&call(&tb, "echo", &["--args", "[1]"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = k.run_async(&call(&tb, "echo", &["--args", "{nope"])).await;
    assert_eq!(out.status.code(), Some(2));
    let out = k.run_async(&["call", "--url", "not a url", "echo"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = k.run_async(&call(&tb, "nope", &[])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no tool \"nope\""),
        "{}",
        stderr(&out)
    );
    let out = k
        .run_async(&[
            "call",
            "--url",
            tb.mcp_url(),
            "echo",
            "--client-credentials",
        ])
        .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "client credentials without --client-id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_none_takes_the_pasted_redirect_url() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let mut cmd = tokio::process::Command::from(k.cmd(&[
        "call",
        "--url",
        tb.mcp_url(),
        "echo",
        "--args",
        r#"{"text":"pasted"}"#,
        "--browser",
        "none",
    ]));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut auth_url = None;
    while let Some(line) = err.next_line().await.unwrap() {
        if let Some(u) = line.trim().strip_prefix("http://") {
            auth_url = Some(format!("http://{u}"));
            break;
        }
    }
    // The person's browser goes to the server, which redirects to the loopback URL;
    // the browser is elsewhere, so they paste that URL.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let back = redirect
        .get(auth_url.unwrap())
        .send()
        .await
        .unwrap()
        .headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"not the url\n").await.unwrap();
    stdin
        .write_all(format!("{back}\n").as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "pasted\n");
    assert_eq!(tb.stats().code_exchanges, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_display_the_device_grant_is_offered() {
    let tb = testbed(|k| {
        k.device_interval = 0;
        k.device_pending_polls = 1;
    })
    .await;
    let k = Keyway::new();
    let mut cmd = k.cmd(&[
        "call",
        "--url",
        tb.mcp_url(),
        "echo",
        "--args",
        r#"{"text":"device"}"#,
    ]);
    cmd.env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("BROWSER");
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "device\n");
    let err = stderr(&out);
    assert!(
        err.contains("device authorization grant") && err.contains("enter the code"),
        "{err}"
    );
    assert_eq!(tb.stats().device_grants, 1);
}
