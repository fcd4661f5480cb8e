use serde_json::Value;

use crate::harness::{Keyway, stable, stderr, stdout};

#[test]
fn demo_runs_the_main_job_end_to_end() {
    let k = Keyway::new();
    let out = k.run(&["demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stable().bind(|| insta::assert_snapshot!(stdout(&out)));
    assert_eq!(
        stderr(&out),
        "",
        "nothing on stderr at the default verbosity"
    );
    assert_eq!(
        std::fs::read_dir(k.home.path()).unwrap().count(),
        0,
        "the demo saves nothing"
    );
}

#[test]
fn demo_json_is_one_document() {
    let k = Keyway::new();
    let out = k.run(&["--json", "demo", "--text", "über ✓"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["probe"], "oauth");
    assert_eq!(v["added"]["state"], "authorized");
    assert_eq!(v["list"][0]["state"], "authorized");
    assert_eq!(v["calls"][0]["result"], "über ✓");
    assert_eq!(v["calls"][1]["result"], "über ✓ (again)");
    assert!(v["refreshes"].as_u64().unwrap() >= 1);
}

#[test]
fn demo_quiet_prints_only_the_result() {
    let k = Keyway::new();
    let out = k.run(&["-q", "demo"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("demo ok in "));
}

#[test]
fn verbose_demo_logs_on_stderr_and_never_the_token() {
    let k = Keyway::new();
    let out = k.run(&["-vv", "--json", "demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(!log.is_empty(), "-vv logs");
    let all = format!("{log}{}", stdout(&out));
    // Every secret the testbed hands out carries one of these prefixes.
    for prefix in ["tb_at_", "tb_rt_", "tb_code_", "tbs_"] {
        assert!(
            !all.contains(prefix),
            "a secret ({prefix}...) leaked into the output"
        );
    }
}
