use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use serde_json::{Value, json};

use crate::{
    harness::{Keyway, stderr},
    proxy::{Client, text},
};

/// `keyway testbed` prints its addresses once listening and stops on SIGINT.
#[test]
fn testbed_announces_itself_and_stops_on_ctrl_c() {
    let k = Keyway::new();
    let mut child = k
        .cmd(&[
            "testbed",
            "--token-lifetime",
            "5",
            "--challenge-scope",
            "a b",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    let mcp_url = v["mcp_url"].as_str().unwrap();
    assert!(mcp_url.starts_with("http://127.0.0.1:") && mcp_url.ends_with("/mcp"));
    assert!(
        v["issuer"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );

    // It answers: the stats endpoint, and a challenge shaped by the knobs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stats, challenge) = rt.block_on(async {
        let stats: Value = reqwest::get(v["stats_url"].as_str().unwrap())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let r = reqwest::get(mcp_url).await.unwrap();
        (
            stats,
            r.headers()["www-authenticate"].to_str().unwrap().to_owned(),
        )
    });
    assert_eq!(stats["authorizations"], 0);
    assert!(challenge.contains("scope=\"a b\""), "{challenge}");

    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
}

#[test]
fn testbed_help_documents_every_knob() {
    let k = Keyway::new();
    let out = k.run(&["testbed", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--port",
        "--as-port",
        "--shared-origin",
        "--mcp-path",
        "--prm",
        "--prm-custom-path",
        "--prm-resource",
        "--prm-authorization-server",
        "--scopes-supported",
        "--challenge-scope",
        "--issuer-path",
        "--metadata",
        "--issuer-override",
        "--pkce",
        "--no-dcr",
        "--cimd",
        "--client",
        "--token-auth-methods",
        "--as-scopes",
        "--no-iss-advertised",
        "--iss",
        "--deny",
        "--no-device",
        "--device-pending-polls",
        "--device-interval",
        "--no-client-credentials",
        "--no-revocation",
        "--no-introspection",
        "--token-lifetime",
        "--no-rotation",
        "--no-reuse-detection",
        "--omit-refresh-token-on-refresh",
        "--no-refresh-token",
        "--refresh-requires-offline-access",
        "--require-resource",
        "--no-audience-binding",
        "--step-up-tools",
        "--step-up-scope",
        "--step-up-never-satisfied",
        "--forbidden-tools",
        "--always-401",
        "--open",
        "--legacy-sse",
        "--legacy-sse-only",
        "--mcp-revision",
        "--fixture",
        "--external-issuer",
        "--introspection-url",
        "--introspection-client",
        "--authorization-endpoint-override",
        "--drop-after",
        "--fail-nth",
        "--delay",
        "--oversize",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn testbed_refuses_bad_knobs_as_usage_errors() {
    let k = Keyway::new();
    let out = k.run(&["testbed", "--fail-nth", "nowhere:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown endpoint \"nowhere\""),
        "{}",
        stderr(&out)
    );
    let out = k.run(&["testbed", "--client", "id=x,auth=client_secret_basic"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("needs secret="), "{}", stderr(&out));
}

#[test]
fn testbed_on_a_busy_port_fails_with_a_hint() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let k = Keyway::new();
    let out = k.run(&["testbed", "--port", &port]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot listen on 127.0.0.1:") && err.contains("hint:"),
        "{err}"
    );
}

/// `keyway testbed --fixture conformance` serves the conformance suite's fixture, in
/// either generation: a stdio client through `keyway proxy` calls its tools, reads
/// its template resource and gets its prompts.
#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_fixture_answers_a_real_client() {
    for revision in ["modern", "legacy"] {
        let k = Keyway::new();
        let mut bed = k
            .cmd(&[
                "testbed",
                "--open",
                "--fixture",
                "conformance",
                "--mcp-revision",
                revision,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(bed.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        let url = v["mcp_url"].as_str().unwrap();

        let mut c = Client::spawn(&k, &["proxy", url]);
        c.initialize().await;
        let r = c
            .request(
                "tools/call",
                json!({"name": "test_simple_text", "arguments": {}}),
            )
            .await;
        assert_eq!(
            text(&r),
            "This is a simple text response for testing.",
            "{revision}"
        );
        let r = c
            .request(
                "tools/call",
                json!({"name": "test_error_handling", "arguments": {}}),
            )
            .await;
        assert_eq!(r["result"]["isError"], true, "{revision}: {r}");
        let r = c
            .request("resources/read", json!({"uri": "test://template/42/data"}))
            .await;
        let body = r["result"]["contents"][0]["text"].as_str().unwrap();
        assert!(body.contains("Data for ID: 42"), "{revision}: {r}");
        let r = c
            .request(
                "prompts/get",
                json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "x", "arg2": "y"}}),
            )
            .await;
        assert_eq!(
            r["result"]["messages"][0]["content"]["text"],
            "Prompt with arguments: arg1='x', arg2='y'",
            "{revision}"
        );
        c.finish().await;
        bed.kill().unwrap();
        bed.wait().unwrap();
    }
}
