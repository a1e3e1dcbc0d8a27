use edgewire_e2e::brokers::{BrokerProcess, Kind};
use edgewire_e2e::pki::TestPki;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;

use crate::common::*;

fn amqp_env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "rabbitmq"),
        ("EVENT_BROKER_RABBITMQ_URL", url),
        ("CORE_NAME", CORE),
    ];
    v.extend_from_slice(extra);
    v
}

/// An independent lapin consumer: exclusive queue bound to `edge.events` with `#`.
async fn consumer(url: &str) -> (Connection, lapin::Consumer) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("AMQP connect");
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "edge.events".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        "edge.events".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let c = ch
        .basic_consume(
            q.name().clone(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, c)
}

fn header(d: &lapin::message::Delivery, name: &str) -> Option<String> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        })
}

async fn expect_arrivals(c: &mut lapin::Consumer) {
    for (mode, ty, id, data) in three_modes() {
        let d = within(10, c.next())
            .await
            .expect("delivery")
            .expect("ok delivery");
        assert_eq!(d.routing_key.as_str(), ty, "{mode}: routing key = type");
        assert_eq!(d.exchange.as_str(), "edge.events", "{mode}");
        assert_eq!(
            header(&d, "cloudEvents:type").as_deref(),
            Some(ty),
            "{mode}"
        );
        assert_eq!(
            header(&d, "cloudEvents:corename").as_deref(),
            Some(CORE),
            "{mode}"
        );
        assert_eq!(header(&d, "cloudEvents:id").as_deref(), Some(id), "{mode}");
        assert_eq!(
            d.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json"),
            "{mode}"
        );
        assert_eq!(*d.properties.delivery_mode(), Some(2), "{mode}: persistent");
        let body: Value = serde_json::from_slice(&d.data).unwrap();
        assert_eq!(body, data, "{mode}: body intact");
    }
}

#[tokio::test]
async fn amqp_every_mode_plain_credentials_and_tls() {
    // One RabbitMQ for the whole matrix: it takes seconds to boot.
    let pki = TestPki::new("publisher").unwrap();
    let mut rabbit = BrokerProcess::start(
        Kind::RabbitMq,
        "disk_free_limit.absolute = 1MB\n\
         listeners.ssl.default = {port2}\n\
         ssl_options.cacertfile = {dir}/ca.pem\nssl_options.certfile = {dir}/server.pem\nssl_options.keyfile = {dir}/server-key.pem\n\
         ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
        &pki.server_files(),
    )
    .expect("rabbitmq-server");
    let url = rabbit.url();
    let (_conn, mut c) = consumer(&url).await;

    let ingress = serve(env_config(&amqp_env(&url, &[]))).await;
    ingress.wait_ready().await;
    send_three_modes(&ingress).await;
    expect_arrivals(&mut c).await;

    // URL credentials: wrong password refused.
    let bad_url = url.replace("guest:guest", "guest:wrong-pw");
    let bad = serve(env_config(&amqp_env(&bad_url, &[]))).await;
    bad.expect_refused(ACCESS_REFUSED).await;
    let (_, body) = bad.readyz().await;
    assert!(!body.contains("wrong-pw"), "credentials leaked: {body}");

    // TLS listener with the test CA (guest may log in from loopback).
    let tls_url = format!("amqps://guest:guest@localhost:{}/%2f", rabbit.port2());
    let ca = pki.ca_path().display().to_string();
    let tls = serve(env_config(&amqp_env(
        &tls_url,
        &[("EVENT_BROKER_RABBITMQ_CACERT_FILE", &ca)],
    )))
    .await;
    tls.wait_ready().await;
    send_three_modes(&tls).await;
    expect_arrivals(&mut c).await;
    let untrusted = serve(env_config(&amqp_env(&tls_url, &[]))).await;
    untrusted.expect_refused(UNTRUSTED_SERVER).await;

    // The two refusal checks against the same broker stopped: neither passes.
    rabbit.stop();
    refusal_not_shown(env_config(&amqp_env(&bad_url, &[])), ACCESS_REFUSED).await;
    refusal_not_shown(env_config(&amqp_env(&tls_url, &[])), UNTRUSTED_SERVER).await;
}

/// RabbitMQ's answer to a login with a wrong password (connection.close 403).
const ACCESS_REFUSED: &str = "ACCESS_REFUSED";
/// rustls's verdict on a server certificate from a CA the publisher does not trust.
const UNTRUSTED_SERVER: &str = "UnknownIssuer";
