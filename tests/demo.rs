//! `walrelay demo`: two throwaway clusters, the full path, "safe to switch",
//! the way back, "safe to switch back" (exit 0), and nothing left behind.

mod harness;

use std::time::Duration;

#[tokio::test]
async fn demo_runs_to_the_end_and_is_safe_to_switch() {
    let mut cmd = harness::walrelay();
    cmd.arg("demo");
    let run = harness::run_with_timeout(cmd, Duration::from_secs(300)).await;
    run.assert_success();
    println!("{}", run.stdout);
    for words in [
        "snapshot:",
        "verify",
        "clean",
        "cutover:",
        "fence to verdict",
        "safe to switch",
        "way back:",
        "safe to switch back",
        "write freeze",
    ] {
        assert!(run.stdout.contains(words), "{words:?} missing:\n{run}");
    }
    assert!(
        !run.stdout.contains("NOT safe"),
        "the verdict should be safe:\n{run}"
    );
    let dir = run
        .stdout
        .lines()
        .find_map(|l| l.split(" clusters in ").nth(1))
        .expect("the demo names its directory")
        .trim()
        .to_string();
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} should have been removed"
    );
}
