//! Prints the decoded messages of one captured fixture: `cargo run -p walrelay-proto
//! --features test-util --example dump -- identity`.

fn main() {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: dump SCENARIO   (a proto/fixtures/SCENARIO.hex file)");
        std::process::exit(2);
    };
    let path = format!("{}/fixtures/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let captured = walrelay_proto::fixture::parse_fixture(&text);
    let mut ctx = walrelay_proto::DecodeContext::default();
    for c in &captured {
        match walrelay_proto::decode(&c.data, ctx) {
            Ok(m) => {
                ctx.observe(&m);
                println!("{} {m:?}", c.lsn);
            }
            Err(e) => println!("{} error: {e}", c.lsn),
        }
    }
}
