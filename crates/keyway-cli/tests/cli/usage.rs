use crate::harness::{Keyway, dead_mcp_url, stable, stderr, stdout, testbed};

#[test]
fn no_command_is_a_usage_error() {
    let out = Keyway::new().run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Usage: keyway"));
}

#[test]
fn unknown_flags_are_usage_errors() {
    let out = Keyway::new().run(&["demo", "--nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--nope"));
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let out = Keyway::new().run(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in [
        "demo",
        "testbed",
        "--home",
        "--json",
        "Exit codes: 0 ok, 1 failure, 2 usage error, 3 authorization needed",
    ] {
        assert!(help.contains(needle), "{needle}");
    }
}

#[test]
fn version_prints_the_version() {
    let out = Keyway::new().run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("keyway {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A command whose reader is already gone: stdout is the write end of a pipe whose
/// read end was closed before the command started, so its first write fails with
/// EPIPE (Rust ignores SIGPIPE), as `keyway list | head -1` does once head has left.
async fn with_closed_stdout(k: &Keyway, args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = k.cmd(args);
    cmd.stdout(writer).stderr(std::process::Stdio::piped());
    // spawn, not output(): tokio's output() would capture stdout itself.
    let child = tokio::process::Command::from(cmd).spawn().unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.stdout.is_empty());
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_left_ends_the_command_quietly() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let add = k
        .run_async(&["add", tb.mcp_url(), "--name", "example"])
        .await;
    assert!(add.status.success(), "{}", stderr(&add));
    let dead = dead_mcp_url();
    for args in [
        &["list"][..],
        &["--json", "list"],
        &["show", "example"],
        &["tools"],
        &["export", "--format", "claude"],
        &["--json", "probe", &dead],
        &["probe", tb.mcp_url()],
    ] {
        let out = with_closed_stdout(&k, args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}: nothing on stderr");
    }
}

#[test]
fn a_url_without_its_scheme_is_a_usage_error_that_suggests_https() {
    let k = Keyway::new();
    for args in [
        &["probe", "example.com/mcp"][..],
        &["add", "example.com/mcp"],
        &["call", "--url", "example.com/mcp", "echo"],
        &["proxy", "example.com/mcp"],
    ] {
        let out = k.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("did you mean https://example.com/mcp?"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = k.run(&["probe", "ftp://example.com/mcp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not ftp:"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_at_the_root_suggests_the_usual_mcp_paths() {
    let tb = testbed(|k| k.open = true).await;
    let root = tb.mcp_url().trim_end_matches("mcp").to_owned();
    let out = Keyway::new().run_async(&["probe", &root]).await;
    assert_eq!(out.status.code(), Some(1));
    let base = root.trim_end_matches('/');
    let text = stdout(&out);
    assert!(
        text.contains(&format!("try {base}/mcp (Streamable HTTP) or {base}/sse")),
        "{text}"
    );
    let out = Keyway::new()
        .run_async(&["--json", "probe", &format!("{base}/nope")])
        .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 404, "{v}");
    assert!(
        v["next_step"]
            .as_str()
            .is_some_and(|s| s.contains("no MCP endpoint at /nope")),
        "{v}"
    );
}

#[test]
fn with_json_errors_are_json_on_stdout_with_the_same_exit_codes() {
    let k = Keyway::new();
    let out = k.run(&["--json", "show", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "failure", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nosuch")),
        "{v}"
    );
    let out = k.run(&["--json", "probe", "example.com/mcp"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "usage", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did you mean https://example.com/mcp?")),
        "{v}"
    );
    // A result already written says what went wrong itself: one document, not two.
    let out = k.run(&["--json", "probe", &dead_mcp_url()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["class"], "unreachable", "{v}");
}

/// Every command's `--help`, as a snapshot: each has examples, and the global flags in
/// their own section. The list of commands is read from `keyway --help`, so a new
/// command without help fails here.
#[test]
fn every_command_has_help_with_examples() {
    let k = Keyway::new();
    let help = |args: &[&str]| {
        let mut cmd = k.cmd(args);
        // Help only: no home is touched, and its path would show in the text.
        cmd.env("COLUMNS", "100").env_remove("KEYWAY_HOME");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}");
        stdout(&out)
    };
    let top = help(&["--help"]);
    stable().bind(|| insta::assert_snapshot!("help", top));
    let commands: Vec<String> = top
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("  "))
        // A description that wraps goes on indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 19, "{commands:?}");
    for c in &commands {
        let text = help(&[c, "--help"]);
        assert!(text.contains("\nExamples:\n"), "{c} has no examples");
        assert!(text.contains("\nGlobal options:\n"), "{c}");
        stable().bind(|| insta::assert_snapshot!(format!("help_{c}"), text));
    }
}
