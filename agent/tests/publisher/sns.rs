//! aws_sns against a real moto server: topics and SQS queues made with the AWS SDKs, subscriptions with
//! the seed's filter policies, events posted to the ingress over HTTP, queues read back.

use std::collections::BTreeSet;

use aws_credential_types::Credentials;
use aws_sdk_sns::Client as Sns;
use aws_sdk_sqs::Client as Sqs;
use edgewire_agent::publisher::config::{AwsStaticCredentials, BrokerConfig, Secret};
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use serde_json::{Value, json};

use crate::common::*;

const PREFIX: &str = "arn:aws:sns:us-east-1:123456789012:";
const TOPICS: [&str; 4] = [
    "edge-nodes-events",
    "edge-commands-events",
    "edge-self-updates-events",
    "edge-ssh-events",
];

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .http_client(http)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// The publisher's config for moto at `endpoint`, from the seed's variables plus static test keys.
fn sns_config(endpoint: &str, core: &str) -> edgewire_agent::publisher::config::PublisherConfig {
    let mut c = env_config(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "aws_sns"),
        ("EVENT_BROKER_AWS_SNS_REGION", "us-east-1"),
        ("EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX", PREFIX),
        ("EVENT_BROKER_AWS_SNS_ENDPOINT", endpoint),
        ("CORE_NAME", core),
    ]);
    if let Some(BrokerConfig::Sns(s)) = c.broker.as_mut() {
        s.static_credentials = Some(AwsStaticCredentials {
            access_key_id: Secret::new("testing"),
            secret_access_key: Secret::new("testing"),
            session_token: None,
        });
    }
    c
}

async fn create_topics(sns: &Sns) {
    for t in TOPICS {
        let arn = sns.create_topic().name(t).send().await.unwrap();
        assert_eq!(arn.topic_arn(), Some(format!("{PREFIX}{t}").as_str()));
    }
}

/// A queue subscribed to `topics` with `filter` (raw delivery); returns its URL.
async fn queue(sns: &Sns, sqs: &Sqs, name: &str, topics: &[&str], filter: &Value) -> String {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
    for t in topics {
        sns.subscribe()
            .topic_arn(format!("{PREFIX}{t}"))
            .protocol("sqs")
            .endpoint(&arn)
            .attributes("FilterPolicy", filter.to_string())
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .unwrap();
    }
    url
}

/// Reads `n` messages from the queue (the bodies, parsed), then checks that nothing else is in it.
async fn drain(sqs: &Sqs, url: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    within(30, async {
        while out.len() < n {
            let r = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in r.messages() {
                out.push(serde_json::from_str(m.body().unwrap()).expect("raw structured JSON"));
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    let rest = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(
        rest.messages().is_empty(),
        "unexpected extra messages in {url}: {:?}",
        rest.messages()
    );
    out
}

fn ids(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn sns_filter_policies_deliver_exactly_the_matching_events() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server");
    let conf = sdk_config(&moto.url()).await;
    let (sns, sqs) = (Sns::new(&conf), Sqs::new(&conf));
    create_topics(&sns).await;
    let nodes_q = queue(
        &sns,
        &sqs,
        "nodes-only",
        &TOPICS,
        &json!({"type": [{"prefix": "edge.node."}]}),
    )
    .await;
    let prod_q = queue(
        &sns,
        &sqs,
        "prod-us-only",
        &TOPICS,
        &json!({"corename": ["prod-us"]}),
    )
    .await;

    let prod = serve(sns_config(&moto.url(), "prod-us")).await;
    let other = serve(sns_config(&moto.url(), "eu-west")).await;
    prod.wait_ready().await;
    other.wait_ready().await;
    // prod-us: a node event (binary), a command event (structured), a batch of self-update + ssh.
    send_three_modes(&prod).await;
    // eu-west: a node event and an ssh event.
    for (ty, id) in [("edge.node.heartbeat", "eu-1"), ("edge.ssh.closed", "eu-2")] {
        let r = other
            .post_structured(&event(ty, id, json!({"k": id})))
            .await;
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    }

    let nodes = drain(&sqs, &nodes_q, 2).await;
    assert_eq!(ids(&nodes), ["bin-1", "eu-1"].map(String::from).into());
    for e in &nodes {
        assert!(e["type"].as_str().unwrap().starts_with("edge.node."), "{e}");
    }
    let bin = nodes.iter().find(|e| e["id"] == "bin-1").unwrap();
    assert_eq!(bin["corename"], "prod-us");
    assert_eq!(bin["data"], json!({"node": "n1", "mode": "binary"}));
    assert_eq!(bin["specversion"], "1.0");

    let prods = drain(&sqs, &prod_q, 4).await;
    assert_eq!(
        ids(&prods),
        ["bin-1", "str-1", "bat-1", "bat-2"]
            .map(String::from)
            .into()
    );
    for e in &prods {
        assert_eq!(e["corename"], "prod-us", "{e}");
    }
    let ssh = prods.iter().find(|e| e["id"] == "bat-2").unwrap();
    assert_eq!(ssh["type"], "edge.ssh.opened");
    assert_eq!(ssh["data"], json!({"n": 2, "mode": "batch"}));
}

/// Sums `edgewire_publisher_broker_requests_total{...operation="<op>"}` from `/metrics`.
async fn calls(ingress: &Ingress, op: &str) -> u64 {
    let text = ingress
        .http
        .get(format!("{}/metrics", ingress.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("edgewire_publisher_broker_requests_total{")
                && l.contains(&format!("operation=\"{op}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Starts moto's request recorder afresh: from now on moto writes down every request it receives.
async fn record(moto: &BrokerProcess) {
    let http = reqwest::Client::new();
    for step in ["reset-recording", "start-recording"] {
        let r = http
            .post(format!("{}/moto-api/recorder/{step}", moto.url()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{step}: {}", r.status());
    }
}

/// The `PublishBatch` calls moto received since [`record`], in order: the number of entries in each, as
/// moto read them off the wire (AWS query protocol, `PublishBatchRequestEntries.member.N.Id`).
async fn publish_batches_received(moto: &BrokerProcess) -> Vec<usize> {
    use base64::Engine;
    let text = reqwest::get(format!(
        "{}/moto-api/recorder/download-recording",
        moto.url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    // moto appends each record and its newline in two writes from its request threads, so records of
    // concurrent calls can share a line: read a stream of JSON values, not lines.
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|r| r.expect("a recorded request"))
        .filter_map(|r| {
            let body = r["body"].as_str().unwrap_or_default();
            let body = if r["body_encoded"] == true {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap();
                String::from_utf8(bytes).unwrap()
            } else {
                body.to_string()
            };
            let params: Vec<&str> = body.split('&').collect();
            params.contains(&"Action=PublishBatch").then(|| {
                params
                    .iter()
                    .filter(|p| {
                        p.starts_with("PublishBatchRequestEntries.member.") && p.contains(".Id=")
                    })
                    .count()
            })
        })
        .collect()
}

#[tokio::test]
async fn sns_batch_of_25_goes_out_in_3_publish_batch_calls() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server");
    let conf = sdk_config(&moto.url()).await;
    let (sns, sqs) = (Sns::new(&conf), Sqs::new(&conf));
    create_topics(&sns).await;
    let all_q = queue(
        &sns,
        &sqs,
        "all-nodes",
        &TOPICS[..1],
        &json!({"corename": [CORE]}),
    )
    .await;
    let ingress = serve(sns_config(&moto.url(), CORE)).await;
    ingress.wait_ready().await;
    record(&moto).await;
    let batch: Vec<Value> = (0..25)
        .map(|i| event("edge.node.heartbeat", &format!("hb-{i}"), json!({"i": i})))
        .collect();
    let r = ingress.post_batch(&batch).await;
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    // Counted by moto, on the server side.
    let mut received = publish_batches_received(&moto).await;
    received.sort_unstable();
    assert_eq!(received, [5, 10, 10], "25 entries in 3 calls of at most 10");
    // Our own counters agree with what moto received.
    assert_eq!(calls(&ingress, "PublishBatch").await, 3);
    assert_eq!(calls(&ingress, "Publish").await, 0);
    let got = drain(&sqs, &all_q, 25).await;
    assert_eq!(ids(&got), (0..25).map(|i| format!("hb-{i}")).collect());
    // A mixed batch: one call per topic.
    let mixed = vec![
        event("edge.node.registered", "m-1", json!(1)),
        event("edge.ssh.opened", "m-2", json!(2)),
        event("edge.node.removed", "m-3", json!(3)),
    ];
    record(&moto).await;
    let r = ingress.post_batch(&mixed).await;
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    let mut received = publish_batches_received(&moto).await;
    received.sort_unstable();
    assert_eq!(received, [1, 2], "one call per topic");
    assert_eq!(calls(&ingress, "PublishBatch").await, 5);
}

#[tokio::test]
async fn sns_out_of_domain_is_400_and_moto_down_is_503() {
    let mut moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server");
    let conf = sdk_config(&moto.url()).await;
    let sns = Sns::new(&conf);
    create_topics(&sns).await;
    let ingress = serve(sns_config(&moto.url(), CORE)).await;
    ingress.wait_ready().await;

    let r = ingress
        .post_structured(&event("com.example.order", "x-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    for t in TOPICS {
        assert!(detail.contains(t), "{detail}");
    }
    // A batch with one unroutable event publishes nothing: the 400 comes before any call, and moto
    // received none.
    record(&moto).await;
    let r = ingress
        .post_batch(&[
            event("edge.node.registered", "ok-1", json!({})),
            event("com.example.order", "x-2", json!({})),
        ])
        .await;
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(publish_batches_received(&moto).await, Vec::<usize>::new());
    assert_eq!(calls(&ingress, "PublishBatch").await, 0);

    let r = ingress
        .post_structured(&event("edge.node.registered", "up-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());

    moto.stop();
    let r = ingress
        .post_structured(&event("edge.node.registered", "down-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 503);
    assert!(
        r.headers().get("retry-after").is_some(),
        "503 carries Retry-After"
    );
    ingress.wait_ready_status(503, 30).await;

    moto.restart().expect("moto restarts");
    // moto keeps nothing across restarts: the topic is gone until created again.
    create_topics(&sns).await;
    ingress.wait_ready_status(200, 30).await;
    let r = ingress
        .post_structured(&event("edge.node.registered", "up-2", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
}
