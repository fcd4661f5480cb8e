//! `keyway-bench-rusage` reports the peak RSS of the command it ran, after it ended,
//! and exits as the command did.

use std::process::Command;

#[test]
fn writes_the_peak_of_the_command_and_keeps_its_exit_status() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("peak");
    let status = Command::new(env!("CARGO_BIN_EXE_keyway-bench-rusage"))
        .arg(&out)
        .args(["sh", "-c", "exit 3"])
        .status()
        .expect("running keyway-bench-rusage");
    assert_eq!(status.code(), Some(3));
    let bytes: u64 = std::fs::read_to_string(&out)
        .expect("the peak was written")
        .trim()
        .parse()
        .expect("a number of bytes");
    // A shell takes at least a few hundred KiB, and nothing near a gigabyte.
    assert!((100 * 1024..1 << 30).contains(&bytes), "{bytes}");
}

#[test]
fn a_command_that_cannot_start_is_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("peak");
    let status = Command::new(env!("CARGO_BIN_EXE_keyway-bench-rusage"))
        .arg(&out)
        .arg(dir.path().join("no-such-program"))
        .status()
        .expect("running keyway-bench-rusage");
    assert_eq!(status.code(), Some(127));
    assert!(!out.exists());
}
