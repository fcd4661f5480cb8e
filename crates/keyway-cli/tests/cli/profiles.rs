//! Identity-provider profiles from the command line: `probe` names the profile and
//! what it changes, `--profile` forces one for a saved server whose refreshes keep
//! it, and the escape hatches refuse what is keyway's own to set.

use crate::harness::{Keyway, stderr, stdout, testbed};

#[tokio::test(flavor = "multi_thread")]
async fn probe_names_the_profile_and_add_with_profile_keeps_it_for_later_commands() {
    let tb = testbed(|k| k.idp_quirks = Some(keyway_testbed::IdpQuirks::Keycloak)).await;
    let k = Keyway::new();
    let out = k.run_async(&["probe", tb.mcp_url()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("profile      keycloak (Keycloak, the issuer's path /realms/keyway"),
        "{}",
        stdout(&out)
    );

    let entra = testbed(|k| k.idp_quirks = Some(keyway_testbed::IdpQuirks::Entra)).await;
    let out = k
        .run_async(&["add", entra.mcp_url(), "--name", "e", "--browser", "follow"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("AADSTS9010010"), "{}", stderr(&out));

    let out = k
        .run_async(&[
            "add",
            entra.mcp_url(),
            "--name",
            "e",
            "--browser",
            "follow",
            "--profile",
            "entra",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("using the entra profile (named with --profile)"),
        "{}",
        stderr(&out)
    );
    let out = k
        .run_async(&["call", "e", "echo", "--args", r#"{"text":"entra ok"}"#])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "entra ok\n");

    // Authorized again without the flag: the server's quirks are remembered.
    let before = entra.stats().authorizations;
    let out = k
        .run_async(&["authorize", "e", "--browser", "follow"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("using the quirks this server was authorized with before"),
        "{}",
        stderr(&out)
    );
    assert_eq!(entra.stats().authorizations, before + 1);
    assert_eq!(
        entra.stats().quirk_refusals,
        1,
        "only the first, flagless add"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn escape_hatches_refuse_what_keyway_sets_itself() {
    let k = Keyway::new();
    for (flag, value, says) in [
        ("--authorize-param", "state=x", "state is keyway's to set"),
        ("--token-param", "resource=x", "--no-resource"),
        ("--authorize-param", "novalue", "is not KEY=VALUE"),
        ("--profile", "azure", "no profile \"azure\""),
    ] {
        let out = k
            .run_async(&["add", "https://mcp.example.com/mcp", flag, value])
            .await;
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert!(
            stderr(&out).contains(says),
            "{flag} {value}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_parameter_can_come_from_a_file() {
    let tb = testbed(|k| k.idp_quirks = Some(keyway_testbed::IdpQuirks::Auth0)).await;
    let k = Keyway::new();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{}\n", tb.resource())).unwrap();
    let arg = format!("audience=@{}", file.path().display());
    let out = k
        .run_async(&[
            "add",
            tb.mcp_url(),
            "--name",
            "a",
            "--browser",
            "follow",
            "--authorize-param",
            &format!("audience={}", tb.resource()),
            "--token-param",
            &arg,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        tb.stats().token_log.back().unwrap().audience.as_deref(),
        Some(tb.resource()),
        "the value read from the file, without its newline"
    );
    let out = k
        .run_async(&[
            "add",
            tb.mcp_url(),
            "--token-param",
            "x=@/nonexistent/keyway",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--token-param x=@/nonexistent/keyway"),
        "{}",
        stderr(&out)
    );
}
