//! Issue 14 (data loss and false acknowledgements): the bridge binary against real brokers under
//! restarts, crashes, a frozen server, a damaged spool, a full disk and large messages.

use std::time::Duration;

use futures::StreamExt;

use edgewire_e2e::brokers::BrokerProcess;

use super::{E2C_TELEMETRY, SPOOL, mqtt_ep, nats_ep};
use crate::common::*;

const TOPIC: &str = "local/telemetry/line1/seq";

/// A small PRNG (xorshift64*) so a failing run can be repeated: the seed is printed, and
/// `EDGEWIRE_TEST_SEED` sets it.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("EDGEWIRE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        println!("EDGEWIRE_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Panics with the log when the bridge exited on its own.
fn assert_running(bridge: &mut Bridge, when: &str) {
    if let Some(status) = bridge.exited() {
        panic!(
            "the bridge exited on its own ({status}) {when}:\n{}",
            bridge.log()
        );
    }
}

/// Issue 14 item 1. First the reported sequence: data waiting in the spool (cloud down), two restarts
/// with nothing new (each start leaves an empty last segment), then traffic — before the fix the writer
/// truncated and double-listed the empty segment, housekeeping deleted the live file and the bridge
/// exited with "spool write failed: No such file or directory". Then rounds of traffic in which the
/// bridge is stopped (SIGTERM) or killed (SIGKILL) at a random moment. Every message must arrive, and the
/// bridge must never exit on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_kills_at_random_moments_under_traffic_lose_nothing() {
    const FIRST: u64 = 2_000;
    const ROUNDS: u64 = 8;
    const CHUNK: u64 = 4_000;
    let total = FIRST + ROUNDS * CHUNK;
    let mut rng = Rng::from_env();
    let edge = edge_mosquitto();
    let mut cloud = nats();
    drop(edge_stream(&cloud.url()).await);
    cloud.stop();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        SPOOL,
    );
    // Small segments: many rolls, so housekeeping deletes segments all the time.
    let mut bridge = Bridge::start(dir.path(), &yaml, &["--segment-bytes", "65536"]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    mqtt_publish(edge.port(), TOPIC, 0, FIRST).await;
    bridge
        .wait_metric("spool_messages", 60, |v| v == FIRST as f64)
        .await;
    for restart in 0..2 {
        let status = bridge.stop();
        assert!(
            status.success(),
            "stop {restart}: {status}\n{}",
            bridge.log()
        );
        bridge.spawn();
        bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
        assert_eq!(bridge.metric("spool_messages").await, Some(FIRST as f64));
        assert_eq!(
            bridge.metric("received_total").await,
            Some(0.0),
            "nothing new"
        );
    }
    cloud.restart().unwrap();
    let js = edge_stream(&cloud.url()).await;
    let mut kills = Vec::new();
    for round in 0..ROUNDS {
        let from = FIRST + round * CHUNK;
        let port = edge.port();
        let publisher =
            tokio::spawn(async move { mqtt_publish(port, TOPIC, from, from + CHUNK).await });
        // A random moment under traffic: once this process took a random number of messages.
        let at = 1 + rng.below(CHUNK - 1);
        bridge
            .wait_metric("received_total", 120, |v| v >= at as f64)
            .await;
        assert_running(&mut bridge, &format!("in round {round}"));
        if rng.below(2) == 0 {
            bridge.kill9();
            kills.push(format!("kill -9 at {at}"));
        } else {
            let status = bridge.stop();
            assert!(
                status.success(),
                "round {round}: {status}\n{}",
                bridge.log()
            );
            kills.push(format!("SIGTERM at {at}"));
        }
        bridge.spawn();
        publisher.await.unwrap();
    }
    let (order, dups) = read_stream(&js, total, 180).await;
    assert_complete_in_order(&order, total);
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    assert_running(&mut bridge, "at the end");
    let log = bridge.log();
    assert!(!log.contains("spool write failed"), "{log}");
    assert_eq!(
        bridge.metric("spool_corrupt_records_total").await,
        Some(0.0)
    );
    println!("restarts: {kills:?}; {total} of {total} arrived, {dups} duplicates in the stream");
}

/// A bridge from `edge` to the core NATS `cloud` (spool in `dir`), connected to both; then `cloud` frozen
/// (SIGSTOP) and records `0..n` published to the edge, until the bridge took them all and sent the frozen
/// server bytes it has not read.
async fn records_unread_by_a_frozen_core_nats(
    edge: &BrokerProcess,
    cloud: &BrokerProcess,
    dir: &std::path::Path,
    n: u64,
) -> Bridge {
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), false),
        E2C_TELEMETRY,
        SPOOL,
    );
    let bridge = Bridge::start(dir, &yaml, &[]);
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(edge, "local/telemetry/#").await;
    signal(cloud.pid().unwrap(), "STOP");
    mqtt_publish(edge.port(), TOPIC, 0, n).await;
    bridge
        .wait_metric("received_total", 30, |v| v == n as f64)
        .await;
    // The bridge has sent them: the bytes wait unread in the frozen server's socket.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while unread_by_server(cloud.port()) < 256 {
        assert!(
            std::time::Instant::now() < deadline,
            "the bridge never sent the records to the frozen server ({} bytes unread)",
            unread_by_server(cloud.port())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bridge
}

/// Issue 14 item 2: a core NATS cloud frozen with SIGSTOP reads nothing, so nothing may leave the spool.
/// Before: `flush()` only wrote the socket and the spool released every record the frozen server never
/// read. Now the release waits for a server round trip: none while frozen (the records are in the
/// server's unread socket queue, the bridge is connected, and `forwarded_total` stays 0); all after
/// SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_core_nats_server_releases_nothing_from_the_spool_until_it_thaws() {
    const N: u64 = 200;
    let edge = edge_mosquitto();
    let cloud = nats();
    let nc = async_nats::connect(cloud.url()).await.unwrap();
    let mut sub = edgewire_e2e::brokers::nats::subscribed(&nc, "edge.>")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bridge = records_unread_by_a_frozen_core_nats(&edge, &cloud, dir.path(), N).await;
    let pid = cloud.pid().unwrap();
    // Each scrape is a round trip through the bridge's runtime, where the forwarder releases records.
    for _ in 0..20 {
        assert_eq!(bridge.metric("forwarded_total").await, Some(0.0));
        assert_eq!(bridge.metric("spool_messages").await, Some(N as f64));
    }
    signal(pid, "CONT");
    bridge
        .wait_metric("forwarded_total", 60, |v| v >= N as f64)
        .await;
    bridge.wait_metric("spool_messages", 30, |v| v == 0.0).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N as usize {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("the thawed server delivers")
            .unwrap();
        seen.insert(seq_of(&m.payload));
    }
    assert_eq!(seen, (0..N).collect());
}

/// Issue 17 (pipelined core NATS acknowledgements): a core NATS cloud killed while the records it was sent
/// sit unread in its socket, and restarted. The acknowledgement of a core NATS publish is an echo sent after
/// it on the same connection; an echo that comes back on the new connection must not acknowledge what the
/// old one lost. Every record arrives after the restart (a JetStream stream on the cloud, in its store
/// since before the kill, captures the core publishes whenever the bridge sends them again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_killed_core_nats_server_never_read_are_sent_again_after_its_restart() {
    const N: u64 = 2_000;
    let edge = edge_mosquitto();
    let mut cloud = nats();
    edge_stream(&cloud.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = records_unread_by_a_frozen_core_nats(&edge, &cloud, dir.path(), N).await;
    assert_eq!(bridge.metric("forwarded_total").await, Some(0.0));
    cloud.kill9();
    cloud.restart().expect("restart");
    let js = async_nats::jetstream::new(async_nats::connect(cloud.url()).await.unwrap());
    let (order, dups) = read_stream(&js, N, 120).await;
    assert_complete_in_order(&order, N);
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    println!("{N} of {N} arrived after the restart, {dups} duplicates");
}

/// Issue 14, "exactly once into JetStream": `kill -9` of the bridge mid-run and a restart on the same
/// spool, with no limit on the edge's window of unacknowledged messages towards the bridge (Mosquitto
/// `max_inflight_messages 0`), so that many messages are spooled but not yet PUBACKed when it dies. Each
/// published message is in the stream exactly once: what the restarted spool sends again carries the
/// same `Nats-Msg-Id` (site, spool id, sequence number) and the stream drops it (before: about 2,300
/// duplicates per crash); what Mosquitto redelivers (DUP, same packet id) because the crash cut off its
/// PUBACK is recognised by the bridge's redelivery window and acknowledged without a new record (before:
/// 20,000 to 40,000 duplicates of 50,000 here). Fewer messages are published than the window holds
/// (`redelivery::WINDOW`, 49,152), so every redelivery is within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_run_puts_every_edge_message_into_the_jetstream_stream_once() {
    const N: u64 = 40_000;
    let edge = edge_mosquitto_inflight(0);
    let cloud = nats();
    let js = edge_stream(&cloud.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        SPOOL,
    );
    let mut bridge = Bridge::start(dir.path(), &yaml, &[]);
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    let port = edge.port();
    let publisher = tokio::spawn(async move { mqtt_publish(port, TOPIC, 0, N).await });
    let at = bridge
        .wait_metric("forwarded_total", 120, |v| v >= (N / 3) as f64)
        .await;
    bridge.kill9();
    bridge.spawn();
    publisher.await.unwrap();
    let (order, _) = read_stream(&js, N, 180).await;
    assert_complete_in_order(&order, N);
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    let redelivered = bridge.metric("edge_redeliveries_total").await.unwrap();
    // Every message in the stream, with its record number and its payload's sequence number.
    let stream = js.get_stream("EDGE").await.unwrap();
    let stored = stream.cached_info().state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut records = std::collections::BTreeSet::new();
    let mut published = std::collections::BTreeMap::new();
    for _ in 0..stored {
        let m = tokio::time::timeout(Duration::from_secs(30), msgs.next())
            .await
            .expect("the stream delivers what it stores")
            .unwrap()
            .unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .expect("Nats-Msg-Id on every message");
        let seq: u64 = id.rsplit('-').next().unwrap().parse().unwrap();
        assert!(
            records.insert(seq),
            "record {seq} ({id}) twice in the stream"
        );
        *published.entry(seq_of(&m.payload)).or_insert(0u32) += 1;
    }
    let duplicates: Vec<u64> = published
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        duplicates.is_empty(),
        "{} published messages more than once in the stream, e.g. {:?} ({redelivered} redeliveries recognised)",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    assert!(
        redelivered > 0.0,
        "the crash cut off no PUBACK: nothing was redelivered, the test proves nothing"
    );
    assert_eq!(published.len() as u64, N, "every published message");
    assert_eq!(stored, N, "the stream holds exactly the published messages");
    assert_eq!(
        (records.len() as u64, records.last().copied()),
        (N, Some(N)),
        "records 1..={N} each once (a gap is a lost record)"
    );
    println!(
        "exactly once: killed after {at} forwarded; the stream holds {stored} messages = {N} published, 0 lost, 0 duplicates; {redelivered} edge redeliveries recognised and not spooled again"
    );
}

/// Issue 14 item 3, end to end: a byte flipped in a spooled record of a segment that is not the last
/// one, while the bridge was stopped. The bridge starts, delivers every other record, counts the damaged
/// one in `edgewire_bridge_spool_corrupt_records_total`, names it on `/healthz`, and keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_skipped_counted_and_reported_the_rest_delivered() {
    const N: u64 = 3_000;
    let edge = edge_mosquitto();
    let mut cloud = nats();
    drop(edge_stream(&cloud.url()).await);
    cloud.stop();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        SPOOL,
    );
    let mut bridge = Bridge::start(dir.path(), &yaml, &["--segment-bytes", "65536"]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    mqtt_publish(edge.port(), TOPIC, 0, N).await;
    bridge
        .wait_metric("spool_messages", 60, |v| v == N as f64)
        .await;
    assert!(bridge.stop().success());
    let mut segs: Vec<_> = std::fs::read_dir(&bridge.spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("seg-"))
        .collect();
    segs.sort();
    assert!(segs.len() > 3, "{segs:?}");
    // A payload byte of the fifth record of the second segment.
    let frame = 8 + 20 + "edge.site-a.telemetry.line1.seq".len() as u64 + 256;
    let at = 4 * frame + 8 + 20 + 40;
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[at as usize] ^= 0x20;
    std::fs::write(&segs[1], &bytes).unwrap();
    cloud.restart().unwrap();
    let js = edge_stream(&cloud.url()).await;
    bridge.spawn();
    let (order, _) = read_stream(&js, N - 1, 120).await;
    let missing: Vec<u64> = {
        let got: std::collections::BTreeSet<u64> = order.iter().copied().collect();
        (0..N).filter(|s| !got.contains(s)).collect()
    };
    assert_eq!(missing.len(), 1, "exactly the damaged record is missing");
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    assert_eq!(
        bridge.metric("spool_corrupt_records_total").await,
        Some(1.0)
    );
    let health = bridge.healthz().await.unwrap();
    assert!(
        health.starts_with("ok\n") && health.contains("1 damaged records skipped"),
        "{health}"
    );
    assert!(health.contains(&segs[1].display().to_string()), "{health}");
    assert_running(&mut bridge, "after skipping the damaged record");
    println!(
        "damage: record {} lost and counted; /healthz: {health}",
        missing[0]
    );
}

/// Issue 14 item 6: a command from the cloud while the edge broker is down is delivered when it returns.
/// Before: the failed edge delivery was logged and the command's cloud acknowledgement dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_while_the_edge_is_down_arrives_when_it_returns() {
    let mut edge = edge_mosquitto();
    let cloud = nats();
    let dir = tempfile::tempdir().unwrap();
    let rules = "    - {direction: CloudToEdge, from: \"cmd.site-a.#\", to: \"local.cmd.#\"}\n";
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), false),
        rules,
        SPOOL,
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    // A device with a persistent session: the edge broker keeps its subscription across the restart.
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mut o = rumqttc::MqttOptions::new("valve-1", "127.0.0.1", edge.port());
    o.set_clean_session(false);
    let (dev, mut el) = rumqttc::AsyncClient::new(o, 16);
    dev.subscribe("local/cmd/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send(Some(p)).await;
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = tx.send(None).await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    assert!(rx.recv().await.unwrap().is_none(), "SUBACK first");
    // A probe proves the cloud→edge path live (the bridge subscribed on the cloud; core NATS keeps
    // nothing for a subscription that does not exist yet).
    let nc = async_nats::connect(cloud.url()).await.unwrap();
    let probe = async {
        loop {
            nc.publish("cmd.site-a.probe", "probe".into())
                .await
                .unwrap();
            nc.flush().await.unwrap();
            if let Ok(Some(Some(p))) =
                tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
            {
                break p;
            }
        }
    };
    let p = tokio::time::timeout(Duration::from_secs(30), probe)
        .await
        .expect("a probe command reaches the device while the edge is up");
    assert_eq!(p.topic, "local/cmd/probe");
    bridge
        .wait_metric("delivered_to_edge_total", 30, |v| v >= 1.0)
        .await;
    // Probes published before the first one arrived may still come: let them all drain.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {}
    let probes = bridge.metric("delivered_to_edge_total").await.unwrap();
    edge.stop();
    bridge.wait_metric("edge_connected", 30, |v| v == 0.0).await;
    nc.publish("cmd.site-a.valve.close", "now".into())
        .await
        .unwrap();
    nc.flush().await.unwrap();
    // The bridge has the command and cannot deliver it.
    bridge.wait_log("cloud→edge delivery", 30).await;
    edge.restart().unwrap();
    let p = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the command arrives once the edge is back")
        .unwrap()
        .expect("a PUBLISH");
    assert_eq!(p.topic, "local/cmd/valve/close");
    assert_eq!(&p.payload[..], b"now");
    bridge
        .wait_metric("delivered_to_edge_total", 30, |v| v == probes + 1.0)
        .await;
}

/// Issue 14 item 5: replay after an outage is bounded in bytes, not only in records. 5,000 messages of
/// 128 KiB (625 MiB) wait in the spool and are replayed to the cloud; the bridge's peak resident set
/// (VmHWM) stays under 200 MiB. Before: 4,096 records in flight regardless of size (512 MiB of payload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_5000_messages_of_128k_stays_under_200_mib() {
    const N: u64 = 5_000;
    const SIZE: usize = 128 * 1024;
    // Mosquitto's default window towards the bridge (20), as an edge broker of a user's own would have.
    let edge = edgewire_e2e::brokers::BrokerProcess::start(
        edgewire_e2e::brokers::Kind::Mosquitto,
        &format!(
            "{}max_queued_messages 0\nlog_type all\n",
            edgewire_e2e::brokers::Kind::Mosquitto.default_config()
        ),
        &[],
    )
    .unwrap();
    let mut cloud = edge_mosquitto();
    let cloud_port = cloud.port();
    cloud.stop();
    let dir = tempfile::tempdir().unwrap();
    let rules = "    - {direction: EdgeToCloud, from: \"local.telemetry.#\", to: \"edge.site-a.telemetry.#\"}\n";
    let yaml = config(
        &mqtt_ep(edge.port()),
        &mqtt_ep(cloud_port),
        rules,
        "{maxBytes: 2Gi}",
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    println!(
        "idle: peak RSS {:.1} MiB",
        peak_rss(bridge.pid().unwrap()) as f64 / (1 << 20) as f64
    );
    {
        let mut o = rumqttc::MqttOptions::new("big-pub", "127.0.0.1", edge.port());
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
        let pubs = tokio::spawn(async move {
            for i in 0..N {
                let mut p = payload(i);
                p.resize(SIZE, b'x');
                client
                    .publish(TOPIC, rumqttc::QoS::AtLeastOnce, false, p)
                    .await
                    .unwrap();
            }
            client
        });
        let mut acked = 0;
        while acked < N {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = el.poll().await.unwrap() {
                acked += 1;
            }
        }
        drop(pubs.await.unwrap());
    }
    bridge
        .wait_metric("spool_messages", 300, |v| v == N as f64)
        .await;
    println!(
        "spooled {N} × {} KiB: peak RSS so far {:.1} MiB",
        SIZE / 1024,
        peak_rss(bridge.pid().unwrap()) as f64 / (1 << 20) as f64
    );
    // The cloud broker acknowledges each QoS 1 publish whether anyone subscribes or not.
    cloud.restart().unwrap();
    bridge
        .wait_metric("spool_messages", 600, |v| v == 0.0)
        .await;
    let hwm = peak_rss(bridge.pid().unwrap());
    println!(
        "replay of {N} × {} KiB: peak RSS {:.1} MiB",
        SIZE / 1024,
        hwm as f64 / (1 << 20) as f64
    );
    assert!(
        hwm < 200 * 1024 * 1024,
        "peak RSS {hwm} bytes is not under 200 MiB"
    );
}

/// A tmpfs of `bytes` mounted at `dir` for the life of the value (the test runs as root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t tmpfs on {} (needs root)", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Issue 14 item 8: the spool's filesystem fills up (a 4 MiB tmpfs under a `maxBytes` of 64 MiB, the
/// cloud down). The bridge stops taking from the edge and acknowledging it, reports it
/// (`edgewire_bridge_spool_write_blocked` 1, `/readyz` 503, `/healthz` names the error) and keeps
/// running; once the cloud is back, the acknowledged segments are deleted, the writes resume and every
/// message arrives. Before: "spool write failed: No space left on device" and the bridge exited, again
/// at every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_the_edge_back_and_resumes_with_nothing_lost() {
    const N: u64 = 60_000;
    let edge = edge_mosquitto();
    let mut cloud = nats();
    drop(edge_stream(&cloud.url()).await);
    cloud.stop();
    let dir = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&dir.path().join("spool"), 4 << 20);
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        "{maxBytes: 64Mi}",
    );
    let mut bridge = Bridge::start(dir.path(), &yaml, &["--segment-bytes", "262144"]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    let port = edge.port();
    let publisher = tokio::spawn(async move { mqtt_publish(port, TOPIC, 0, N).await });
    bridge
        .wait_metric("spool_write_blocked", 120, |v| v == 1.0)
        .await;
    publisher.await.unwrap();
    // Held back: what is on disk is what fits; the rest waits at the edge (and up to 8 MiB in memory).
    let spooled = bridge.metric("spool_messages").await.unwrap();
    assert!(
        spooled < (4 << 20) as f64 / 256.0,
        "{spooled} records on a 4 MiB disk"
    );
    let taken = bridge.metric("received_total").await.unwrap();
    assert!(taken < N as f64, "the bridge took all {N} with a full disk");
    let url = format!("http://127.0.0.1:{}/readyz", bridge.http_port().unwrap());
    let ready = reqwest::get(&url).await.unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains("No space left on device"), "{why}");
    assert!(
        bridge
            .healthz()
            .await
            .unwrap()
            .contains("No space left on device")
    );
    assert_running(&mut bridge, "with a full disk");
    cloud.restart().unwrap();
    let js = edge_stream(&cloud.url()).await;
    bridge
        .wait_metric("spool_write_blocked", 120, |v| v == 0.0)
        .await;
    bridge
        .wait_metric("received_total", 300, |v| v >= N as f64)
        .await;
    let (order, dups) = read_stream(&js, N, 300).await;
    assert_complete_in_order(&order, N);
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    assert_running(&mut bridge, "after the disk had room again");
    println!(
        "disk full: held at {spooled} spooled / {taken} taken of {N}; all arrived, {dups} duplicates"
    );
}
