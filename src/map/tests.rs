use super::mask::hash_hex;
use super::validate::referenced_columns;
use super::*;

const ISSUE: &str = r#"
[[table]]
source = "public.dispatch_comment"   # required
target = "public.comments"           # optional rename (schema too)
rename = { text = "content" }        # column renames
exclude = ["internal_note"]          # never leaves the source
where = "deleted_at IS NULL"         # row filter
mask = { email = "hash" }            # "null" or "hash"
"#;

fn err(text: &str) -> String {
    Map::parse("m.toml", text).unwrap_err().to_string()
}

#[test]
fn the_issue_shape_parses_with_every_key() {
    let map = Map::parse("m.toml", ISSUE).unwrap();
    let t = map.table("public", "dispatch_comment").unwrap();
    assert_eq!(t.target, ("public".into(), "comments".into()));
    assert_eq!(t.target_column("text"), Some("content"));
    assert_eq!(t.target_column("internal_note"), None);
    assert_eq!(t.target_column("email"), Some("email"));
    assert_eq!(t.source_of("content"), "text");
    assert_eq!(t.filter.as_deref(), Some("deleted_at IS NULL"));
    assert_eq!(t.mask.get("email"), Some(&Mask::Hash));
    assert!(map.table("public", "comments").is_none());
}

#[test]
fn a_table_without_target_keeps_its_name() {
    let map = Map::parse(
        "m.toml",
        "[[table]]\nsource = \"app.t\"\nmask = { a = \"null\" }\n",
    )
    .unwrap();
    let t = map.table("app", "t").unwrap();
    assert_eq!(t.target, t.source);
    assert!(!t.renames_table());
}

#[test]
fn bad_entries_are_refused_naming_the_entry() {
    let cases = [
        ("[[table]]\ntarget = \"public.x\"\n", "source"),
        ("[[table]]\nsource = \"nodot\"\n", "is not schema.table"),
        ("[[table]]\nsource = \"public.t\"\nmask = { a = \"scramble\" }\n", "scramble"),
        ("[[table]]\nsource = \"public.t\"\nexclude = [\"a\"]\nmask = { a = \"null\" }\n", "both excluded and masked"),
        ("[[table]]\nsource = \"public.t\"\nexclude = [\"a\"]\nrename = { a = \"b\" }\n", "both excluded and renamed"),
        ("[[table]]\nsource = \"public.t\"\nrename = { a = \"c\", b = \"c\" }\n", "both renamed to c"),
        ("[[table]]\nsource = \"public.t\"\nwhere = \"a > 1; DROP TABLE t\"\n", "one SQL boolean expression"),
        ("[[table]]\nsource = \"public.t\"\nwhere = \"  \"\n", "one SQL boolean expression"),
        ("[[table]]\nsource = \"public.t\"\nfilter = \"a\"\n", "filter"),
        ("[[table]]\nsource = \"public.t\"\n[[table]]\nsource = \"public.t\"\n", "same source or target"),
        ("[[table]]\nsource = \"public.a\"\ntarget = \"public.c\"\n[[table]]\nsource = \"public.b\"\ntarget = \"public.c\"\n", "same source or target"),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(got.contains(want), "{text:?}: {got}");
    }
    assert!(err("[[table]]\nsource = \"nodot\"\n").contains("map entry nodot"));
}

#[test]
fn the_config_key_takes_the_map_inline_or_a_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), ISSUE).unwrap();
    let config = dir.path().join("walrelay.toml");
    let by_path: crate::config::Settings =
        crate::config::Settings::parse("w.toml", "map = \"m.toml\"\n").unwrap();
    let from_path = Map::from_setting(by_path.map.as_ref().unwrap(), &config).unwrap();
    let inline =
        crate::config::Settings::parse("w.toml", &ISSUE.replace("[[table]]", "[[map.table]]"))
            .unwrap();
    let from_inline = Map::from_setting(inline.map.as_ref().unwrap(), &config).unwrap();
    assert_eq!(from_path, from_inline);
    assert!(from_path.table("public", "dispatch_comment").is_some());
}

#[test]
fn filter_columns_are_found_outside_literals() {
    let cols = ["id", "deleted_at", "Mixed", "note"];
    let got = referenced_columns(
        "deleted_at IS NULL AND note <> 'id' AND \"Mixed\" > 2.5e3",
        &cols,
    );
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        vec!["Mixed", "deleted_at", "note"]
    );
    let got = referenced_columns("ID = 1 AND 'it''s id' = note", &cols);
    assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["id", "note"]);
}

#[test]
fn hash_is_lowercase_hex_sha256() {
    assert_eq!(
        hash_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
