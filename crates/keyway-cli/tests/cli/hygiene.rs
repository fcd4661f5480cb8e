//! Secret hygiene: after a full session with -vvv logging, no token, secret, code or
//! verifier the authorization server issued or received appears in any output, in the
//! store's files, or in the arguments of a process keyway started.

use std::{os::unix::fs::PermissionsExt, sync::Arc, time::Duration};

use keyway_testbed::{Clock, Knobs, ManualClock, Testbed};

use crate::harness::{Keyway, stderr};

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_leaks_anywhere() {
    let clock = ManualClock::new();
    let mut knobs = Knobs::default();
    knobs.token_lifetime = 120;
    let tb = Testbed::start_with_clock(knobs, Arc::new(clock.clone()) as Arc<dyn Clock>)
        .await
        .unwrap();
    let k = Keyway::new();

    // A "browser" that records its arguments and follows the URL back to keyway.
    let argv_log = k.home.path().join("browser-argv.log");
    let browser = k.home.path().join("browser.py");
    std::fs::write(
        &browser,
        format!(
            "#!/usr/bin/env python3\nimport sys, urllib.request\nopen({:?}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\nurllib.request.urlopen(sys.argv[1]).read()\n",
            argv_log.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o700)).unwrap();

    let mut outputs = String::new();
    let run = |args: &[&str], browser_cmd: bool| {
        let mut cmd = k.cmd(args);
        if browser_cmd {
            cmd.env("BROWSER", &browser);
        }
        async move {
            let out = tokio::process::Command::from(cmd).output().await.unwrap();
            (
                out.status.success(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
            )
        }
    };
    for (args, with_browser) in [
        (
            vec![
                "-vvv",
                "add",
                tb.mcp_url(),
                "--name",
                "tb",
                "--browser",
                "follow",
            ],
            false,
        ),
        (
            vec!["-vvv", "call", "tb", "echo", "--args", r#"{"text":"one"}"#],
            false,
        ),
        (vec!["-vvv", "authorize", "tb", "--browser", "system"], true),
        (vec!["-vvv", "--json", "show", "tb"], false),
    ] {
        let (ok, text) = run(&args, with_browser).await;
        assert!(ok, "{args:?}: {text}");
        outputs.push_str(&text);
    }
    // The server forgets the access token's validity: the next call refreshes.
    clock.advance(Duration::from_secs(121));
    let (ok, text) = run(
        &["-vvv", "call", "tb", "echo", "--args", r#"{"text":"two"}"#],
        false,
    )
    .await;
    assert!(ok, "{text}");
    outputs.push_str(&text);
    assert!(tb.stats().refreshes >= 1, "the session included a refresh");
    let (ok, text) = run(&["-vvv", "logout", "tb"], false).await;
    assert!(ok, "{text}");
    outputs.push_str(&text);

    let secrets = tb.secrets();
    assert!(
        secrets.len() >= 6,
        "tokens, codes and verifiers were issued: {}",
        secrets.len()
    );
    let mut files = Vec::new();
    for name in ["keyway.db", "keyway.db-wal", "keyway.db-shm"] {
        if let Ok(bytes) = std::fs::read(k.home.path().join(name)) {
            files.push((name, bytes));
        }
    }
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(
        argv.contains("/authorize?"),
        "the browser was started: {argv}"
    );
    for s in &secrets {
        assert!(
            !outputs.contains(s.as_str()),
            "a secret in the output: {}…",
            &s[..8]
        );
        assert!(!argv.contains(s.as_str()), "a secret in a process argument");
        for (name, bytes) in &files {
            let hit = bytes.windows(s.len()).any(|w| w == s.as_bytes());
            assert!(!hit, "a secret in {name}");
        }
    }
}
