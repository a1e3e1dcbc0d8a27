//! `make bench`, operator part: validate and build every child object for 1,000 EventBrokers of mixed
//! adapters (external and deployed brokers), serialize them as the applier would, and report the time per
//! resource and the peak resident memory of the process. Run with `--release`.

use edgewire_api::*;
use edgewire_operator::context::Settings;
use edgewire_operator::controller::event_broker::refs::{Refs, new_generated};
use edgewire_operator::controller::event_broker::{build, generated_secret_name, validate};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::time::Instant;

const N: usize = 1_000;

fn secret(kv: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The i-th EventBroker and the Secrets it references: ten shapes, round robin.
fn fixture(i: usize) -> (EventBroker, Refs) {
    let name = format!("eb-{i:04}");
    let mut refs = Refs::default();
    let eb = match i % 10 {
        0 => EventBroker::test(&name)
            .adapter_nats()
            .with_token("tok")
            .with_jetstream(),
        1 => EventBroker::test(&name)
            .adapter_nats()
            .with_token("tok")
            .deploy(BrokerKind::Nats)
            .replicas(3),
        2 => EventBroker::test(&name).adapter(Adapter::Kafka),
        3 => EventBroker::test(&name)
            .adapter(Adapter::Kafka)
            .deploy(BrokerKind::Redpanda)
            .replicas(3),
        4 => EventBroker::test(&name)
            .adapter(Adapter::Kafka)
            .deploy(BrokerKind::Kafka)
            .replicas(3),
        5 => EventBroker::test(&name).adapter(Adapter::Amqp091),
        6 => EventBroker::test(&name).adapter(Adapter::Redis),
        7 => EventBroker::test(&name).adapter(Adapter::Mqtt),
        8 => EventBroker::test(&name)
            .adapter(Adapter::Mqtt)
            .deploy(BrokerKind::Mosquitto),
        _ => EventBroker::test(&name)
            .adapter(Adapter::Mqtt)
            .deploy(BrokerKind::Emqx)
            .replicas(3),
    };
    let mut eb = eb;
    if eb.spec.deploy_broker.is_some() {
        if let Some(a) = eb.spec.amqp091.as_mut() {
            a.url = None;
        }
        if let Some(r) = eb.spec.redis.as_mut() {
            r.url = None;
        }
    }
    refs.secrets
        .insert("tok".into(), secret(&[("token", "t0ken-value")]));
    refs.secrets.insert(
        "amqp-url".into(),
        secret(&[("url", "amqp://u:p@h:5672/%2f")]),
    );
    refs.secrets
        .insert("redis-url".into(), secret(&[("url", "redis://u:p@h:6379")]));
    if edgewire_operator::controller::event_broker::refs::needs_generated_credentials(&eb.spec) {
        refs.generated = Some(new_generated(&generated_secret_name(&name)));
    }
    (eb, refs)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let settings = Settings::default();
    let fixtures: Vec<(EventBroker, Refs)> = (0..N).map(fixture).collect();
    // Warm up once so allocation of the first run does not count.
    for (eb, refs) in fixtures.iter().take(10) {
        let v = validate::validate(eb, refs, &settings).expect("fixture is valid");
        std::hint::black_box(build::build(&v));
    }
    let start = Instant::now();
    let mut objects = 0usize;
    let mut bytes = 0usize;
    for (eb, refs) in &fixtures {
        let v = validate::validate(eb, refs, &settings).expect("fixture is valid");
        let c = build::build(&v);
        // Serialize every child as the applier sends it.
        let build::Children {
            service_account,
            generated_secret,
            broker,
            publisher_service,
            publisher_deployment,
        } = c;
        let mut docs = vec![
            serde_json::to_vec(&service_account).unwrap(),
            serde_json::to_vec(&publisher_service).unwrap(),
            serde_json::to_vec(&publisher_deployment).unwrap(),
        ];
        if let Some(s) = generated_secret {
            docs.push(serde_json::to_vec(&s).unwrap());
        }
        if let Some(b) = broker {
            docs.push(serde_json::to_vec(&b.config).unwrap());
            docs.push(serde_json::to_vec(&b.headless).unwrap());
            docs.push(serde_json::to_vec(&b.client).unwrap());
            docs.push(serde_json::to_vec(&b.statefulset).unwrap());
            if let Some(ui) = b.ui {
                docs.push(serde_json::to_vec(&ui.service).unwrap());
                if let Some(d) = ui.deployment {
                    docs.push(serde_json::to_vec(&d).unwrap());
                }
            }
        }
        objects += docs.len();
        bytes += docs.iter().map(Vec::len).sum::<usize>();
        std::hint::black_box(docs);
    }
    let elapsed = start.elapsed();
    println!(
        "operator: build every child of {N} EventBrokers (10 shapes: external and deployed nats, kafka, redpanda, rabbitmq, redis, mosquitto, emqx)"
    );
    println!(
        "  {:<38} {:>12}",
        "total",
        format!("{:.1} ms", elapsed.as_secs_f64() * 1e3)
    );
    println!(
        "  {:<38} {:>12}",
        "per EventBroker (validate+build+json)",
        format!("{:.1} µs", elapsed.as_secs_f64() * 1e6 / N as f64)
    );
    println!("  {:<38} {:>12}", "child objects", objects);
    println!("  {:<38} {:>12}", "serialized bytes", bytes);
    match peak_rss_kib() {
        Some(kib) => println!(
            "  {:<38} {:>12}",
            "peak resident memory (VmHWM)",
            format!("{:.1} MiB", kib as f64 / 1024.0)
        ),
        None => println!("  peak resident memory: /proc/self/status unavailable"),
    }
}
