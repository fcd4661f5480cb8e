//! The benchmark's "browser": given the authorization URL as `$BROWSER` would be, it
//! follows the redirects (the testbed approves at once) to the bridge's loopback
//! callback, like a person clicking Allow, and exits 0 once the callback answered.

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: keyway-bench-browser URL");
        return ExitCode::from(2);
    };
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyway-bench-browser: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("keyway-bench-browser: {} answered {}", r.url(), r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("keyway-bench-browser: {e}");
            ExitCode::FAILURE
        }
    }
}
