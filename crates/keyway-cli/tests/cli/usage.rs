use crate::harness::{Keyway, stderr, stdout};

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
