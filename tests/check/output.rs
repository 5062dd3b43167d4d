//! What `check` reports on a sound setup (no blockers, nothing created) and
//! how its human output prints each problem with its fix.

use crate::harness::{self, exec, pair};
use crate::{check_pair, WELL_FORMED};

#[tokio::test]
async fn a_sound_setup_has_no_blockers() {
    let pair = pair("check_sound").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let checked = check_pair(&pair).await;
    assert!(
        checked.blockers().is_empty(),
        "blockers on a sound setup:\n{}\n{}",
        checked.list(),
        checked.run
    );
    assert_eq!(checked.run.code, Some(0));
    checked.expect("wal_level", "ok");
    // Nothing was created by a check.
    assert!(!pair.slot_exists().await, "check created the slot");
    assert!(
        !pair.publication_exists().await,
        "check created the publication"
    );
}

#[tokio::test]
async fn human_output_prints_each_problem_and_fix() {
    let pair = pair("check_human").await;
    exec(
        &pair.source().await,
        "CREATE TABLE no_key (a int, b text); INSERT INTO no_key VALUES (1, 'x');",
    )
    .await;
    let json = check_pair(&pair).await;
    let blocker = json.expect_about("replica_identity", "blocker", "no_key");

    let mut cmd = pair.walrelay();
    cmd.arg("check");
    let human = harness::run(cmd).await;
    assert_eq!(human.code, Some(1), "{human}");
    assert!(
        human.stdout.contains(&blocker.problem) && human.stdout.contains(&blocker.fix),
        "human output lacks the problem/fix of {blocker:?}:\n{human}"
    );
    assert!(
        human.stdout.contains("replica_identity") || human.stdout.contains("no_key"),
        "{human}"
    );
}

#[tokio::test]
async fn json_log_format_prints_the_fatal_error_as_a_json_line() {
    // Nothing listens there: the command stops with a fatal error.
    let nobody = harness::free_port();
    let url = format!("postgresql://postgres:secret-pw@127.0.0.1:{nobody}/nowhere");
    let mut cmd = harness::walrelay();
    cmd.args([
        "--log-format",
        "json",
        "--source",
        &url,
        "--target",
        &url,
        "snapshot",
    ]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l:?}\n{run}"))
        })
        .collect();
    let fatal = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line on stderr:\n{run}"));
    let text = fatal.to_string();
    assert!(
        text.contains("snapshot stopped") && text.contains(&nobody.to_string()),
        "the fatal line should say what stopped and why: {fatal}"
    );
    assert!(
        !run.output().contains("secret-pw"),
        "password printed:\n{run}"
    );
}

#[tokio::test]
async fn a_config_file_with_a_password_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let pair = pair("check_config_mode").await;
    exec(&pair.source().await, WELL_FORMED).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("walrelay.toml");
    let text = format!(
        "source = {:?}\ntarget = {:?}\nslot = {:?}\npublication = {:?}\n",
        pair.source_url, pair.target_url, pair.slot, pair.publication
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let password = &pair.source_cluster().password;
    let check = |path: &std::path::Path| {
        let mut cmd = harness::walrelay();
        cmd.arg("--config").arg(path).args(["check", "--json"]);
        cmd
    };

    let open = harness::run(check(&path)).await;
    assert_eq!(open.code, Some(0), "{open}");
    let shown = path.display().to_string();
    assert!(
        open.stderr.contains(&format!("chmod 600 {shown}")),
        "no warning naming the file and `chmod 600` for a config file others may read:\n{open}"
    );
    assert!(
        !open.output().contains(password.as_str()),
        "password printed:\n{open}"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = harness::run(check(&path)).await;
    assert_eq!(private.code, Some(0), "{private}");
    assert!(
        !private.stderr.contains("chmod"),
        "a private config file is warned about:\n{private}"
    );
}
