//! The map's mistakes, refused before anything is created, naming the entry.

use crate::harness::{self, exec};
use crate::{map_file, with_map, SCHEMA};

#[tokio::test]
async fn map_mistakes_are_refused_naming_the_entry_before_anything_is_created() {
    let pair = harness::pair("map_refusals").await;
    exec(&pair.source().await, SCHEMA).await;
    let entry = |body: &str| format!("[[table]]\nsource = \"public.dispatch_comment\"\n{body}\n");
    let cases = [
        (entry("exclude = [\"nope\"]"), "column nope"),
        (entry("exclude = [\"id\"]"), "key"),
        (entry("mask = { id = \"hash\" }"), "key"),
        (entry("rename = { text = \"author\" }"), "author"),
        (entry("where = \"author = 'x'\""), "replica identity"),
        (
            entry("where = \"no_such_column > 1\""),
            "not a valid filter",
        ),
        (
            "[[table]]\nsource = \"public.profiles\"\nexclude = [\"ssn\"]\n".to_string(),
            "REPLICA IDENTITY FULL",
        ),
        (
            "[[table]]\nsource = \"public.nope\"\n".to_string(),
            "no such table",
        ),
        (
            "[[table]]\nsource = \"public.dispatch_comment\"\ntarget = \"public.plain\"\n"
                .to_string(),
            "another selected table",
        ),
    ];
    for (text, want) in cases {
        let (_dir, map) = map_file(&text);
        let run = harness::run(with_map(&pair, &map, &["snapshot"])).await;
        run.assert_failure();
        assert!(run.stderr.contains("map entry public."), "{text}\n{run}");
        assert!(
            run.stderr.contains(want),
            "{text}: expected {want:?}\n{run}"
        );
        assert!(!pair.slot_exists().await, "{text}: a slot was created");
        assert!(
            !pair.publication_exists().await,
            "{text}: a publication was created"
        );
    }

    // `check` says so beforehand, as a blocker naming the entry.
    let (_dir, map) = map_file(&entry("exclude = [\"id\"]"));
    let checked = harness::run(with_map(&pair, &map, &["check", "--json"])).await;
    let report: serde_json::Value = serde_json::from_str(&checked.stdout)
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}):\n{checked}"));
    let finding = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == "map")
        .unwrap_or_else(|| panic!("no map finding:\n{checked}"));
    assert_eq!(finding["severity"], "blocker", "{checked}");
    assert!(
        finding["problem"]
            .as_str()
            .unwrap_or("")
            .contains("map entry public.dispatch_comment"),
        "{checked}"
    );
    assert_eq!(checked.code, Some(1), "{checked}");
}
