//! Hardening for a process that holds secrets (tokens, the store key).

/// Keep the secrets in this process's memory out of core files and away from other
/// processes: the core size limit goes to 0 (the soft one: the programs keyway starts,
/// a browser, keep theirs), and on Linux the process is marked not dumpable (no core
/// file whatever the limit, no ptrace attach by other processes of the user,
/// `/proc/PID/mem` and `environ` closed to them). Call it first thing. What could not
/// be done is returned, for a log line; a process that cannot be hardened still runs.
pub fn harden() -> Vec<String> {
    let mut failed = Vec::new();
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let none = Rlimit {
            current: Some(0),
            maximum: getrlimit(Resource::Core).maximum,
        };
        if let Err(e) = setrlimit(Resource::Core, none) {
            failed.push(format!("core dumps could not be turned off: {e}"));
        }
        #[cfg(target_os = "linux")]
        if let Err(e) =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        {
            failed.push(format!("the process could not be made undumpable: {e}"));
        }
    }
    failed
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// Run in a child process of its own (this test binary, re-run with a flag), so
    /// the test process itself keeps its limits.
    #[test]
    fn a_hardened_process_dumps_no_core() {
        if std::env::var_os("KEYWAY_HARDEN_CHILD").is_some() {
            assert!(super::harden().is_empty());
            let limit = rustix::process::getrlimit(rustix::process::Resource::Core);
            assert_eq!(limit.current, Some(0));
            assert_eq!(
                rustix::process::dumpable_behavior().unwrap(),
                rustix::process::DumpableBehavior::NotDumpable
            );
            return;
        }
        let me = std::env::current_exe().unwrap();
        let out = std::process::Command::new(me)
            .args([
                "--exact",
                "process::tests::a_hardened_process_dumps_no_core",
                "--nocapture",
            ])
            .env("KEYWAY_HARDEN_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
