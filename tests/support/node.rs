//! Node test files of `tests/web` (`node --test`), run against a server the Rust test started:
//! the official Connect clients, and the console in Chromium through Playwright.

use std::path::PathBuf;

/// Runs `tests/web/<script>` with `env`, and fails unless it passed at least `at_least` tests.
/// Returns the report.
pub async fn run_node_tests(script: &str, env: Vec<(String, String)>, at_least: usize) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    assert!(
        dir.join("node_modules/@connectrpc/connect-node").is_dir(),
        "tests/web has no node_modules: run make test, which installs them with npm ci (Node 20 and npm are needed)"
    );
    let mut node = std::process::Command::new("node");
    node.args([
        "--test",
        "--test-timeout=120000",
        "--test-reporter=spec",
        script,
    ])
    .current_dir(&dir)
    .envs(env);
    let output = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .expect("node runs (Node 20 or newer is needed)");

    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let passed: usize = report
        .lines()
        .find_map(|line| line.strip_prefix("ℹ pass "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= at_least,
        "{script}: at least {at_least} tests should pass, {passed} did:\n{report}"
    );
    report
}
