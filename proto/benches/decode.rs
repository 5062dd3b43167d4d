//! Decode throughput over payloads captured from PostgreSQL (`fixtures/mix.hex`):
//! pgbench-like transactions (3 UPDATEs + 1 INSERT) and wide-row INSERT/UPDATEs.
//! Each workload is measured twice: once reported in bytes/s, once in messages/s.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use walrelay_proto::fixture::parse_fixture;
use walrelay_proto::{decode, DecodeContext, Message};

fn workloads() -> Vec<(&'static str, Vec<Bytes>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mix.hex");
    let text = std::fs::read_to_string(path).expect("fixtures/mix.hex");
    let all: Vec<Bytes> = parse_fixture(&text).into_iter().map(|c| c.data).collect();
    // The wide table is the last Relation announced; its rows are the wide workload.
    let mut wide_id = 0;
    let mut pgbench = Vec::new();
    let mut wide = Vec::new();
    for data in &all {
        match decode(data, DecodeContext::default()).expect("fixture decodes") {
            Message::Relation(r) if r.name == "wide" => wide_id = r.id,
            Message::Insert(i) if i.relation_id == wide_id => wide.push(data.clone()),
            Message::Update(u) if u.relation_id == wide_id => wide.push(data.clone()),
            _ => pgbench.push(data.clone()),
        }
    }
    vec![("dml_mix", all), ("pgbench", pgbench), ("wide_rows", wide)]
}

fn decode_all(messages: &[Bytes]) -> usize {
    let ctx = DecodeContext::default();
    let mut n = 0;
    for data in messages {
        let m = decode(black_box(data), ctx).expect("fixture decodes");
        n += usize::from(matches!(
            black_box(&m),
            Message::Insert(_) | Message::Update(_)
        ));
    }
    n
}

fn bench(c: &mut Criterion) {
    for (name, messages) in workloads() {
        let bytes: usize = messages.iter().map(Bytes::len).sum();
        let mut group = c.benchmark_group("decode_bytes");
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| b.iter(|| decode_all(&messages)));
        group.finish();
        let mut group = c.benchmark_group("decode_messages");
        group.throughput(Throughput::Elements(messages.len() as u64));
        group.bench_function(name, |b| b.iter(|| decode_all(&messages)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
