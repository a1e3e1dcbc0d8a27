//! The binary: bad configuration exits non-zero with one line naming the variable.

use std::process::Command;

fn run(vars: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgewire-agent"));
    cmd.arg("publisher")
        .env_clear()
        .env("EDGEWIRE_LISTEN", "127.0.0.1:0");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run edgewire-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_adapter_exits_with_one_line_naming_the_variable() {
    let (code, err) = run(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "pulsar"),
    ]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("EVENT_BROKER_ADAPTER"), "{err}");
}

#[test]
fn cloud_adapters_name_their_missing_variable() {
    let (code, err) = run(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "aws_sns"),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX"),
        "{err}"
    );
    let (code, err) = run(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "google_pubsub"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT"), "{err}");
}

#[test]
fn bad_qos_and_secrets_never_printed() {
    let (code, err) = run(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "mqtt"),
        ("EVENT_BROKER_MQTT_URL", "b:1883"),
        ("EVENT_BROKER_MQTT_PASSWORD", "super-secret-pw"),
        ("EVENT_BROKER_MQTT_USERNAME", "u"),
        ("EVENT_BROKER_MQTT_QOS", "5"),
    ]);
    assert_ne!(code, 0);
    assert_eq!(
        err.trim(),
        "edgewire-agent: EVENT_BROKER_MQTT_QOS: must be 0, 1 or 2, got \"5\""
    );
    assert!(!err.contains("super-secret-pw"));
}

/// Runs `publisher` with `vars` until it exits (20 s at most: a start that does not fail is a test
/// failure); (exit code, stdout and stderr).
fn run_failing(vars: &[(&str, String)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgewire-agent"));
    cmd.arg("publisher")
        .env_clear()
        .env("EDGEWIRE_LISTEN", "127.0.0.1:0")
        .env("EDGEWIRE_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run edgewire-agent");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{vars:?} did not fail to start: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 14 item 13: a password planted in each adapter's URL (and in a password variable next to a
/// configuration error) appears nowhere in what a publisher that fails to start prints. The MQTT and
/// Kafka URL errors quoted the URL whole.
#[test]
fn a_failing_start_never_prints_a_credential_from_a_url() {
    const P: &str = "PlantedS3cret";
    let base = |adapter: &str| {
        vec![
            ("EVENT_BROKER_ENABLED", "true".to_string()),
            ("EVENT_BROKER_ADAPTER", adapter.to_string()),
            ("CORE_NAME", "c".to_string()),
        ]
    };
    let with = |adapter: &str, extra: &[(&'static str, String)]| {
        let mut v = base(adapter);
        v.extend(extra.iter().cloned());
        v
    };
    let cases = [
        with(
            "mqtt",
            &[("EVENT_BROKER_MQTT_URL", format!("mqtt://u:{P}@broker:1883"))],
        ),
        with(
            "mqtt",
            &[("EVENT_BROKER_MQTT_URL", format!("u:{P}@broker:notaport"))],
        ),
        with(
            "kafka",
            &[("EVENT_BROKER_KAFKA_URLS", format!("kafka://u:{P}@h:9092"))],
        ),
        with(
            "kafka",
            &[("EVENT_BROKER_KAFKA_URLS", format!("a:9092,u:{P}@h:x"))],
        ),
        with(
            "nats",
            &[("EVENT_BROKER_NATS_URLS", format!("nats://u:{P}@h:notaport"))],
        ),
        with(
            "nats",
            &[("EVENT_BROKER_NATS_URLS", format!("nats://{P}@h:4222 x"))],
        ),
        with(
            "rabbitmq",
            &[(
                "EVENT_BROKER_RABBITMQ_URL",
                format!("amqp://u:{P}@h:notaport/%2f"),
            )],
        ),
        with(
            "rabbitmq",
            &[("EVENT_BROKER_RABBITMQ_URL", format!("http://u:{P}@h/"))],
        ),
        with(
            "redis",
            &[("EVENT_BROKER_REDIS_URL", format!("redis://:{P}@h:notaport"))],
        ),
        with(
            "redis",
            &[("EVENT_BROKER_REDIS_URL", format!("http://u:{P}@h/"))],
        ),
        with(
            "nats",
            &[
                ("EVENT_BROKER_NATS_URLS", "nats://h:4222".into()),
                ("EVENT_BROKER_NATS_TOKEN", P.into()),
                ("EVENT_BROKER_NATS_JETSTREAM", "maybe".into()),
            ],
        ),
    ];
    for vars in cases {
        let (code, out) = run_failing(&vars);
        eprintln!("{code}: {}", out.trim());
        assert_ne!(code, 0, "{vars:?}");
        assert!(
            !out.contains(P),
            "the credential leaked for {vars:?}: {out}"
        );
        assert!(!out.contains("panicked"), "{out}");
    }
}

/// `tail` subscribes with the publisher's environment and prints one line per event.
#[tokio::test]
async fn tail_prints_what_the_publisher_sent() {
    use edgewire_e2e::brokers::{BrokerProcess, Kind};
    // With the monitoring port: the server says when tail's subscription is in place.
    let nats = BrokerProcess::start(
        Kind::Nats,
        "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{port2}\n",
        &[],
    )
    .expect("nats-server");
    let url = nats.url();
    let vars = [
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "nats"),
        ("EVENT_BROKER_NATS_URLS", url.as_str()),
        ("CORE_NAME", crate::common::CORE),
    ];
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgewire-agent"));
    cmd.args(["tail", "--count", "1"])
        .env_clear()
        .envs(vars)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn tail");
    let ingress = crate::common::serve(crate::common::env_config(&vars)).await;
    ingress.wait_ready().await;
    // tail's SUB is processed by the server: one publish is enough (it exits after one event).
    let subsz = format!("http://127.0.0.1:{}/subsz?subs=1", nats.port2());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let subs: serde_json::Value = ingress
            .http
            .get(&subsz)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let on_edge = subs["subscriptions_list"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["subject"] == "edge.>");
        if on_edge {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail never subscribed: {subs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = ingress
        .post_binary("edge.node.registered", "tail-1", "{}")
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("tail exits after one event")
        .expect("tail output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().expect("one line");
    assert!(
        line.contains(" edge.node.registered tail-1 corename=test-core node-7"),
        "{line}"
    );
}
