//! Publisher benchmark (`cargo bench --workspace --bench publisher`; `make bench` runs it).
//!
//! On loopback, against nats-server (core and JetStream) and Mosquitto started here:
//! - events/s through the HTTP ingress (single-event binary mode with 32 concurrent clients, and batch
//!   mode with 100 events per request) vs the raw client publishing the same events directly with the
//!   same acknowledgement (core: one flush at the end; JetStream: every PubAck; MQTT QoS 1: every PUBACK);
//! - the HTTP ceiling, measured next to each adapter: the same server stack (`serve_until`, the router)
//!   and the same client, with an adapter that accepts every CloudEvent and publishes nothing — what one
//!   request per event (or per batch) can reach on this machine at all; each adapter's rate is printed as
//!   a fraction of it as well as of the raw client's;
//! - p50/p99 latency of one event at a fixed 2,000 events/s through the ingress and through the raw
//!   client, and the difference (what the ingress adds).
//!
//! Bounded: `EDGEWIRE_BENCH_EVENTS` events per throughput run (default 5,000), 2 s per latency run.
//! Prints a table; asserts nothing about timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudevents::{AttributesReader, Event as CloudEvent};
use edgewire_agent::adapters::{Adapter, PublishError};
use edgewire_agent::connect::Readiness;
use edgewire_agent::publisher::config::{PublisherConfig, env};
use edgewire_agent::publisher::{Publisher, serve_until};
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;

const CONCURRENCY: usize = 32;
const BATCH: usize = 100;
const RATE: u64 = 2_000;
const LATENCY_SECS: u64 = 2;

fn events_per_run() -> usize {
    std::env::var("EDGEWIRE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

fn body(i: usize) -> String {
    json!({"node": format!("node-{i}"), "seq": i, "status": "online"}).to_string()
}

fn structured(i: usize) -> serde_json::Value {
    json!({"specversion": "1.0", "id": format!("b-{i}"), "source": "/bench", "type": "edge.node.status_changed",
           "datacontenttype": "application/json", "data": {"node": format!("node-{i}"), "seq": i}})
}

struct Ingress {
    url: String,
    http: reqwest::Client,
}

fn config(vars: &[(&str, &str)]) -> PublisherConfig {
    env::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .expect("valid bench config")
}

async fn serve(vars: &[(&str, &str)]) -> Ingress {
    serve_config(config(vars)).await
}

async fn serve_config(config: PublisherConfig) -> Ingress {
    serve_publisher(Publisher::new(&config).await.expect("adapter")).await
}

/// Accepts every event and publishes nothing: the HTTP ceiling's adapter. It still reads the event as the
/// NATS adapter does (its type, its data), so what it skips is the broker and nothing else.
struct Accepts;

impl Adapter for Accepts {
    fn name(&self) -> &'static str {
        "none"
    }
    fn validate(&self, ev: &CloudEvent) -> Result<(), String> {
        edgewire_agent::event::nats_subject_problem(ev.ty()).map_or(Ok(()), Err)
    }
    fn publish<'a>(&'a self, _ev: &'a CloudEvent) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn readiness(&self) -> Readiness {
        Readiness {
            connected: true,
            detail: None,
        }
    }
}

/// The ingress with [`Accepts`] as its adapter.
async fn serve_ceiling() -> Ingress {
    let config = PublisherConfig {
        enabled: true,
        core_name: "bench".into(),
        broker: None,
        notes: Vec::new(),
    };
    serve_publisher(Publisher::with_adapter(&config, Some(Arc::new(Accepts)))).await
}

/// Serves `publisher` as `edgewire-agent publisher` does (its connection handling and limits).
async fn serve_publisher(publisher: Arc<Publisher>) -> Ingress {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve_until(listener, publisher, std::future::pending()));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "publisher never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ingress { url, http }
}

async fn post_one(ing: &Ingress, i: usize) -> Duration {
    let start = Instant::now();
    let r = ing
        .http
        .post(&ing.url)
        .header("ce-specversion", "1.0")
        .header("ce-id", format!("e-{i}"))
        .header("ce-source", "/bench")
        .header("ce-type", "edge.node.status_changed")
        .header("content-type", "application/json")
        .body(body(i))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 202, "ingress refused an event");
    start.elapsed()
}

/// Events/s through the ingress, single-event requests with `CONCURRENCY` in flight.
async fn ingress_single(ing: &Ingress, n: usize) -> f64 {
    let start = Instant::now();
    let mut next = 0;
    let mut inflight = FuturesUnordered::new();
    while next < n || !inflight.is_empty() {
        while next < n && inflight.len() < CONCURRENCY {
            inflight.push(post_one(ing, next));
            next += 1;
        }
        inflight.next().await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Events/s through the ingress in batch mode, 4 batches in flight.
async fn ingress_batch(ing: &Ingress, n: usize) -> f64 {
    let batches: Vec<String> = (0..n.div_ceil(BATCH))
        .map(|b| {
            serde_json::Value::Array(
                (b * BATCH..((b + 1) * BATCH).min(n))
                    .map(structured)
                    .collect(),
            )
            .to_string()
        })
        .collect();
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut it = batches.into_iter();
    loop {
        while inflight.len() < 4 {
            let Some(b) = it.next() else { break };
            let req = ing
                .http
                .post(&ing.url)
                .header("content-type", "application/cloudevents-batch+json")
                .body(b);
            inflight.push(async move {
                let r = req.send().await.expect("POST batch");
                assert_eq!(
                    r.status(),
                    202,
                    "batch refused: {}",
                    r.text().await.unwrap_or_default()
                );
            });
        }
        if inflight.next().await.is_none() {
            break;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// p50/p99 of `f` called at `RATE` per second for `LATENCY_SECS`.
async fn at_fixed_rate<F, Fut>(f: F) -> (Duration, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let total = (RATE * LATENCY_SECS) as usize;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut inflight = FuturesUnordered::new();
    let mut lat = Vec::with_capacity(total);
    let mut i = 0;
    while i < total || !inflight.is_empty() {
        tokio::select! {
            _ = tick.tick(), if i < total => { inflight.push(f(i)); i += 1; }
            Some(d) = inflight.next() => lat.push(d),
        }
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (pct(0.50), pct(0.99))
}

fn nats_headers(i: usize) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("ce-specversion", "1.0");
    h.insert("ce-id", format!("e-{i}").as_str());
    h.insert("ce-source", "/bench");
    h.insert("ce-type", "edge.node.status_changed");
    h.insert("ce-corename", "bench");
    h.insert("content-type", "application/json");
    h
}

struct Row {
    target: &'static str,
    raw: f64,
    /// The HTTP ceiling (single events, batches), measured just before this adapter's own runs.
    ceiling: (f64, f64),
    single: f64,
    batch: f64,
    raw_lat: (Duration, Duration),
    ing_lat: (Duration, Duration),
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = events_per_run();
    // `EDGEWIRE_BENCH_ONLY=nats,mqtt` runs only those targets (sns, nats, jetstream, mqtt).
    let only = std::env::var("EDGEWIRE_BENCH_ONLY").unwrap_or_default();
    let wants = |t: &str| only.is_empty() || only.split(',').any(|o| o.trim() == t);
    let sns = if wants("sns") {
        Some(sns_bench().await)
    } else {
        None
    };
    if !(wants("nats") || wants("jetstream") || wants("mqtt")) {
        print_sns(sns);
        return;
    }
    eprintln!("publisher bench: {n} events per run");
    let mut rows = Vec::new();
    let ceil = serve_ceiling().await;
    let ceiling = async || {
        let single = ingress_single(&ceil, n).await;
        eprintln!("HTTP ceiling single done: {single:.0} ev/s");
        let batch = ingress_batch(&ceil, n).await;
        eprintln!("HTTP ceiling batch done: {batch:.0} ev/s");
        (single, batch)
    };

    // NATS core and JetStream.
    let nats = BrokerProcess::start_default(Kind::Nats).expect("nats-server (package nats-server)");
    let url = nats.url();
    for js in [false, true] {
        if !wants(if js { "jetstream" } else { "nats" }) {
            continue;
        }
        let flag = if js { "true" } else { "false" };
        let ing = serve(&[
            ("EVENT_BROKER_ENABLED", "true"),
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", &url),
            ("EVENT_BROKER_NATS_JETSTREAM", flag),
            ("CORE_NAME", "bench"),
        ])
        .await;
        let client = async_nats::connect(&url).await.expect("raw NATS client");
        let jsx = async_nats::jetstream::new(client.clone());
        let raw = {
            let start = Instant::now();
            if js {
                let mut acks = FuturesUnordered::new();
                for i in 0..n {
                    let ack = jsx
                        .publish_with_headers(
                            "edge.node.status_changed",
                            nats_headers(i),
                            body(i).into(),
                        )
                        .await
                        .expect("js publish");
                    acks.push(ack.into_future());
                    if acks.len() >= 256 {
                        acks.next().await.expect("ack").expect("acked");
                    }
                }
                while let Some(a) = acks.next().await {
                    a.expect("acked");
                }
            } else {
                for i in 0..n {
                    client
                        .publish_with_headers(
                            "edge.node.status_changed",
                            nats_headers(i),
                            body(i).into(),
                        )
                        .await
                        .expect("publish");
                }
                client.flush().await.expect("flush");
            }
            n as f64 / start.elapsed().as_secs_f64()
        };
        eprintln!("raw done: {raw:.0} ev/s");
        let ceiling = ceiling().await;
        let single = ingress_single(&ing, n).await;
        eprintln!("single done: {single:.0} ev/s");
        let batch = ingress_batch(&ing, n).await;
        eprintln!("batch done: {batch:.0} ev/s");
        let raw_lat = at_fixed_rate(|i| {
            let (client, jsx) = (client.clone(), jsx.clone());
            async move {
                let start = Instant::now();
                if js {
                    jsx.publish_with_headers(
                        "edge.node.status_changed",
                        nats_headers(i),
                        body(i).into(),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("ack");
                } else {
                    client
                        .publish_with_headers(
                            "edge.node.status_changed",
                            nats_headers(i),
                            body(i).into(),
                        )
                        .await
                        .expect("publish");
                    client.flush().await.expect("flush");
                }
                start.elapsed()
            }
        })
        .await;
        let ing_lat = at_fixed_rate(|i| post_one(&ing, i)).await;
        rows.push(Row {
            target: if js { "NATS JetStream" } else { "NATS core" },
            raw,
            ceiling,
            single,
            batch,
            raw_lat,
            ing_lat,
        });
    }

    if wants("mqtt") {
        rows.push(mqtt_row(n, &ceiling().await).await);
    }
    let ceil_lat = at_fixed_rate(|i| post_one(&ceil, i)).await;
    print_rows(n, &rows, ceil_lat);
    print_sns(sns);
}

/// MQTT QoS 1: raw client, the ingress, and their latencies.
async fn mqtt_row(n: usize, ceiling: &(f64, f64)) -> Row {
    let mosq =
        BrokerProcess::start_default(Kind::Mosquitto).expect("mosquitto (package mosquitto)");
    let ing = serve(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "mqtt"),
        ("EVENT_BROKER_MQTT_URL", &mosq.url()),
        ("EVENT_BROKER_MQTT_QOS", "1"),
        ("CORE_NAME", "bench"),
    ])
    .await;
    let raw = {
        let mut o = MqttOptions::new("bench-raw", "127.0.0.1", mosq.port());
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 1024);
        let payload: Vec<Vec<u8>> = (0..n)
            .map(|i| serde_json::to_vec(&structured(i)).unwrap_or_default())
            .collect();
        let sender = tokio::spawn(async move {
            for p in payload {
                client
                    .publish("edge/node/status_changed", QoS::AtLeastOnce, false, p)
                    .await
                    .expect("publish");
            }
            client
        });
        let start = Instant::now();
        let mut acked = 0;
        while acked < n {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = el.poll().await {
                acked += 1;
            }
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let _ = sender.await;
        rate
    };
    eprintln!("mqtt raw done: {raw:.0} ev/s");
    let single = ingress_single(&ing, n).await;
    eprintln!("mqtt single done: {single:.0} ev/s");
    let batch = ingress_batch(&ing, n).await;
    eprintln!("mqtt batch done: {batch:.0} ev/s");
    // Raw latency: one publish and its PUBACK, driven by a dedicated event loop.
    let raw_lat = {
        let mut o = MqttOptions::new("bench-lat", "127.0.0.1", mosq.port());
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 1024);
        type Waiter = tokio::sync::oneshot::Sender<()>;
        type Waiters = (
            std::collections::VecDeque<Waiter>,
            std::collections::HashMap<u16, Waiter>,
        );
        let waiters: Arc<std::sync::Mutex<Waiters>> = Arc::default();
        let w2 = waiters.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let mut g = w2.lock().expect("lock");
                        if let Some(w) = g.0.pop_front() {
                            g.1.insert(pkid, w);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        if let Some(w) = w2.lock().expect("lock").1.remove(&a.pkid) {
                            let _ = w.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let client = Arc::new(client);
        at_fixed_rate(|i| {
            let (client, waiters) = (client.clone(), waiters.clone());
            async move {
                let start = Instant::now();
                let (w, r) = tokio::sync::oneshot::channel();
                {
                    let mut g = waiters.lock().expect("lock");
                    let payload = serde_json::to_vec(&structured(i)).unwrap_or_default();
                    client
                        .try_publish("edge/node/status_changed", QoS::AtLeastOnce, false, payload)
                        .expect("publish");
                    g.0.push_back(w);
                }
                let _ = r.await;
                start.elapsed()
            }
        })
        .await
    };
    let ing_lat = at_fixed_rate(|i| post_one(&ing, i)).await;
    Row {
        target: "MQTT QoS 1",
        raw,
        ceiling: *ceiling,
        single,
        batch,
        raw_lat,
        ing_lat,
    }
}

fn print_rows(n: usize, rows: &[Row], ceil_lat: (Duration, Duration)) {
    println!();
    println!(
        "publisher benchmark: {n} events per throughput run, {CONCURRENCY} concurrent single-event requests, batches of {BATCH}; latency at {RATE} events/s for {LATENCY_SECS} s"
    );
    println!(
        "HTTP ceiling: the same server and client with an adapter that accepts every event and publishes nothing, measured before each adapter's runs; ×raw and ×ceil are the adapter's rate over those"
    );
    println!(
        "{:<16} {:>9} | {:>9} {:>9} {:>6} {:>6} | {:>9} {:>9} {:>6} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "target",
        "raw ev/s",
        "ceil 1",
        "single",
        "×raw",
        "×ceil",
        "ceil 100",
        "batch",
        "×raw",
        "×ceil",
        "raw p50",
        "raw p99",
        "ing p50",
        "ing p99",
        "+p50 ms",
        "+p99 ms"
    );
    for r in rows {
        println!(
            "{:<16} {:>9.0} | {:>9.0} {:>9.0} {:>6.2} {:>6.2} | {:>9.0} {:>9.0} {:>6.2} {:>6.2} | {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
            r.target,
            r.raw,
            r.ceiling.0,
            r.single,
            r.single / r.raw,
            r.single / r.ceiling.0,
            r.ceiling.1,
            r.batch,
            r.batch / r.raw,
            r.batch / r.ceiling.1,
            ms(r.raw_lat.0),
            ms(r.raw_lat.1),
            ms(r.ing_lat.0),
            ms(r.ing_lat.1),
            ms(r.ing_lat.0) - ms(r.raw_lat.0),
            ms(r.ing_lat.1) - ms(r.raw_lat.1),
        );
    }
    println!(
        "HTTP ceiling latency at {RATE} events/s: p50 {:.3} ms, p99 {:.3} ms (the ingress with nothing behind it)",
        ms(ceil_lat.0),
        ms(ceil_lat.1)
    );
}

/// SNS figures: (events, raw ev/s, single ev/s, batch ev/s).
type SnsFigures = (usize, f64, f64, f64);

fn print_sns(f: Option<SnsFigures>) {
    let Some((n, raw, single, batch)) = f else {
        return;
    };
    println!();
    println!(
        "AWS SNS against moto_server (a local Python emulator, NOT AWS: absolute numbers say nothing about AWS; the ratio is what the ingress costs), {n} events per run, {CONCURRENCY} in flight"
    );
    println!(
        "{:<16} {:>11} {:>11} {:>7} {:>11} {:>7}",
        "target", "raw ev/s", "single ev/s", "ratio", "batch ev/s", "ratio"
    );
    println!(
        "{:<16} {:>11.0} {:>11.0} {:>7.2} {:>11.0} {:>7.2}",
        "SNS (moto)",
        raw,
        single,
        single / raw,
        batch,
        batch / raw
    );
}

/// events/s publishing to SNS on moto: the raw SDK (`Publish`, `CONCURRENCY` in flight, the same body and
/// attributes the adapter sends) vs the ingress (single events; batches of 100 → `PublishBatch` of 10).
/// `EDGEWIRE_BENCH_SNS_EVENTS` events per run (default 1,000: moto is slow).
async fn sns_bench() -> SnsFigures {
    use aws_sdk_sns::types::MessageAttributeValue;
    use edgewire_agent::publisher::config::{AwsStaticCredentials, BrokerConfig, Secret};
    let n: usize = std::env::var("EDGEWIRE_BENCH_SNS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server (PyPI moto[server])");
    let endpoint = moto.url();
    let prefix = "arn:aws:sns:us-east-1:123456789012:";
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .http_client(http)
        .credentials_provider(aws_credential_types::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .endpoint_url(&endpoint)
        .load()
        .await;
    let sns = aws_sdk_sns::Client::new(&conf);
    let topic = sns
        .create_topic()
        .name("edge-nodes-events")
        .send()
        .await
        .expect("create topic");
    let arn = topic.topic_arn().unwrap_or_default().to_string();
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .expect("attribute")
    };
    let raw = {
        let start = Instant::now();
        let mut next = 0;
        let mut inflight = FuturesUnordered::new();
        while next < n || !inflight.is_empty() {
            while next < n && inflight.len() < CONCURRENCY {
                let body = structured(next).to_string();
                let req = sns
                    .publish()
                    .topic_arn(&arn)
                    .message(body)
                    .message_attributes("type", attr("edge.node.status_changed"))
                    .message_attributes("corename", attr("bench"));
                inflight.push(async move { req.send().await.expect("raw publish") });
                next += 1;
            }
            inflight.next().await;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    eprintln!("sns raw done: {raw:.0} ev/s");
    let mut c = config(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "aws_sns"),
        ("EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX", prefix),
        ("EVENT_BROKER_AWS_SNS_ENDPOINT", &endpoint),
        ("CORE_NAME", "bench"),
    ]);
    if let Some(BrokerConfig::Sns(s)) = c.broker.as_mut() {
        s.static_credentials = Some(AwsStaticCredentials {
            access_key_id: Secret::new("bench"),
            secret_access_key: Secret::new("bench"),
            session_token: None,
        });
    }
    let ing = serve_config(c).await;
    let single = ingress_single(&ing, n).await;
    eprintln!("sns single done: {single:.0} ev/s");
    let batch = ingress_batch(&ing, n).await;
    eprintln!("sns batch done: {batch:.0} ev/s");
    drop(moto);
    (n, raw, single, batch)
}
