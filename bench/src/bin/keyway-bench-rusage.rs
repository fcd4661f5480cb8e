//! `keyway-bench-rusage OUT COMMAND [ARGS...]`: runs COMMAND with this process's stdin,
//! stdout and stderr, waits for it, writes the largest resident set it reached over its
//! whole life, shutdown included, to OUT (bytes, one line), and exits as it did.
//!
//! The number is getrusage(RUSAGE_CHILDREN)'s `ru_maxrss`: the kernel keeps a process's
//! high-water mark until it is reaped, which is what /proc can no longer show once the
//! process is gone. (It is the largest single descendant reaped so far, not a sum; the
//! bridges measured with it are one process each.)

use std::{
    os::unix::process::ExitStatusExt,
    process::{Command, ExitCode},
};

use nix::sys::resource::{UsageWho, getrusage};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), Some(program)) = (args.next(), args.next()) else {
        eprintln!("usage: keyway-bench-rusage OUT COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let status = match Command::new(&program).args(args).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyway-bench-rusage: cannot run {}: {e}", program.display());
            return ExitCode::from(127);
        }
    };
    let peak = match getrusage(UsageWho::RUSAGE_CHILDREN) {
        // Kibibytes on Linux.
        Ok(u) => u64::try_from(u.max_rss()).unwrap_or(0) * 1024,
        Err(e) => {
            eprintln!("keyway-bench-rusage: getrusage: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(&out, format!("{peak}\n")) {
        eprintln!("keyway-bench-rusage: writing {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // As a shell reports a command a signal ended.
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}
