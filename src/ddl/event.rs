//! The messages the event trigger emits (`trigger.rs`), as JSON.

use serde::Deserialize;

/// One message.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub(super) enum Event {
    /// `ddl_command_end`: one command and its object as it is now.
    End(Box<End>),
    /// `sql_drop`: what one command dropped.
    Drop(Dropped),
    /// The trigger could not describe a command.
    Error {
        tag: String,
        sqlstate: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
pub(super) struct End {
    pub tag: String,
    /// `schema.table`, `schema.index`, … as `pg_identify_object` names it.
    pub identity: Option<String>,
    /// `None` for commands without one object (e.g. GRANT).
    pub oid: Option<u32>,
    pub query: String,
    pub table: Option<TableShape>,
    pub index: Option<IndexShape>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct TableShape {
    pub schema: String,
    pub name: String,
    /// `relkind`: `r`, `p`, …
    pub kind: String,
    /// `relpersistence`: `p`, `u`, `t`.
    pub persistence: String,
    pub partition: bool,
    pub columns: Vec<SourceColumn>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct SourceColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub not_null: bool,
    /// The default, or a generated column's expression.
    pub default: Option<String>,
    /// `attgenerated`: empty, `s` stored, `v` virtual.
    pub generated: String,
    /// `attidentity`: empty, `a` always, `d` by default.
    pub identity: String,
    /// The rows that existed when the column was added hold `missing`.
    pub has_missing: Option<bool>,
    pub missing: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct IndexShape {
    pub schema: String,
    pub name: String,
    pub table_schema: String,
    pub table: String,
    pub definition: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Dropped {
    pub tag: String,
    pub objects: Vec<DroppedObject>,
}

#[derive(Debug, Deserialize)]
pub(super) struct DroppedObject {
    #[serde(rename = "type")]
    pub object_type: String,
    pub identity: String,
    /// `pg_identify_object_as_address`'s names: `[schema, table, column]`
    /// for a column, `[schema, table, constraint]` for a table constraint.
    pub address_names: Vec<String>,
}

impl Event {
    pub(super) fn parse(content: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(content)
    }

    /// The statement that ran, for reports: its command tag and the
    /// objects it named, never its text (a multi-statement query string
    /// carries the values of the statements around it).
    pub(super) fn statement(&self) -> String {
        match self {
            Event::End(e) => match &e.identity {
                Some(identity) => format!("{} {identity}", e.tag),
                None => e.tag.clone(),
            },
            Event::Drop(d) => {
                let objects: Vec<String> = d
                    .objects
                    .iter()
                    .map(|o| format!("{} {}", o.object_type, o.identity))
                    .collect();
                format!("{} ({})", d.tag, objects.join(", "))
            }
            Event::Error { tag, .. } => tag.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_alter_table_message() {
        let json = br#"{"event":"end","tag":"ALTER TABLE","type":"table","identity":"public.t","oid":16384,
            "query":"alter table t add column c text default 'v'",
            "table":{"schema":"public","name":"t","kind":"r","persistence":"p","partition":false,
              "columns":[{"name":"id","num":1,"type":"integer","not_null":true,"default":null,"generated":"","identity":"","has_missing":false,"missing":null},
                         {"name":"c","num":2,"type":"text","not_null":false,"default":"'v'::text","generated":"","identity":"","has_missing":true,"missing":"v"}]},
            "index":null}"#;
        let Event::End(end) = Event::parse(json).unwrap() else {
            panic!("not an end event")
        };
        let table = end.table.unwrap();
        assert_eq!(table.columns[1].missing.as_deref(), Some("v"));
        assert_eq!(table.columns[1].has_missing, Some(true));
    }

    #[test]
    fn reads_a_drop_message_and_names_it_without_its_text() {
        let json = br#"{"event":"drop","tag":"ALTER TABLE","query":"insert into t values ('secret'); alter table t drop column c",
               "objects":[{"type":"table column","schema":"public","name":null,"identity":"public.t.c","oid":1,
               "address_names":["public","t","c"]}]}"#;
        let event = Event::parse(json).unwrap();
        assert_eq!(event.statement(), "ALTER TABLE (table column public.t.c)");
        let Event::Drop(d) = event else {
            panic!("not a drop event")
        };
        assert_eq!(d.objects[0].address_names, ["public", "t", "c"]);
    }
}
