//! The harness itself, against the real brokers: each one starts, answers its protocol, stops, restarts;
//! data survives restarts; a missing binary names its package; the test PKI works for mTLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgewire_e2e::brokers::{BrokerProcess, Kind, wait_for_port};
use edgewire_e2e::pki::TestPki;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

fn refuses(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

// --- protocol probes, plain std TcpStream -------------------------------------------------------------

fn nats_info(port: u16) -> String {
    let mut line = String::new();
    BufReader::new(connect(port))
        .read_line(&mut line)
        .expect("read NATS INFO");
    line
}

fn redis_ping(port: u16) -> String {
    let mut stream = connect(port);
    stream.write_all(b"PING\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read PING answer");
    line
}

/// An anonymous MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s, client id `id`).
fn mqtt_connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

fn mqtt_connack(port: u16) -> [u8; 4] {
    let mut stream = connect(port);
    stream.write_all(&mqtt_connect_packet("e2e-probe")).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).expect("read CONNACK");
    connack
}

/// The first 11 bytes the server answers to the AMQP 0-9-1 protocol header: the frame header (type 1 =
/// method, channel 0, size) and class/method ids (10, 10 = Connection.Start).
fn amqp_greeting(port: u16) -> [u8; 11] {
    let mut stream = connect(port);
    stream.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    let mut frame = [0u8; 11];
    stream
        .read_exact(&mut frame)
        .expect("read Connection.Start");
    frame
}

fn assert_serves(kind: Kind, port: u16) {
    match kind {
        Kind::Nats => {
            let info = nats_info(port);
            assert!(info.starts_with("INFO {"), "NATS greeting: {info:?}");
        }
        Kind::Redis => assert_eq!(redis_ping(port), "+PONG\r\n"),
        Kind::Mosquitto => assert_eq!(mqtt_connack(port), CONNACK_ACCEPTED),
        Kind::Moto => {
            // SNS ListTopics over the query protocol: moto answers with an (empty) ListTopicsResponse.
            let mut stream = connect(port);
            let body = "Action=ListTopics&Version=2010-03-31";
            write!(
                stream,
                "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\
                 Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sns/aws4_request, \
                 SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            assert!(reply.starts_with("HTTP/1.1 200"), "moto: {reply}");
            assert!(reply.contains("ListTopicsResponse"), "moto: {reply}");
        }
        Kind::RabbitMq => {
            let frame = amqp_greeting(port);
            assert_eq!(frame[0], 1, "method frame expected: {frame:?}");
            assert_eq!(&frame[1..3], &[0, 0], "channel 0 expected: {frame:?}");
            assert_eq!(
                &frame[7..11],
                &[0, 10, 0, 10],
                "Connection.Start expected: {frame:?}"
            );
        }
    }
}

/// start_default → serves → stop → refuses → stop again (idempotent) → restart → serves on the same port.
fn lifecycle(kind: Kind) {
    let t = Instant::now();
    let mut broker = BrokerProcess::start_default(kind).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{kind}: started in {:?}", t.elapsed());
    let port = broker.port();
    assert_eq!(broker.kind(), kind);
    assert!(broker.pid().is_some());
    assert_serves(kind, port);

    let t = Instant::now();
    broker.stop();
    eprintln!("{kind}: stopped in {:?}", t.elapsed());
    assert!(broker.pid().is_none());
    assert!(refuses(port), "{kind} still accepts on {port} after stop");
    broker.stop();

    let t = Instant::now();
    broker.restart().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{kind}: restarted in {:?}", t.elapsed());
    assert_eq!(broker.port(), port);
    assert_serves(kind, port);
    assert!(
        broker.log().contains("--- edgewire-e2e: starting"),
        "{}",
        broker.log()
    );
}

#[test]
fn nats_starts_serves_stops_and_restarts() {
    lifecycle(Kind::Nats);
}

#[test]
fn mosquitto_starts_serves_stops_and_restarts() {
    lifecycle(Kind::Mosquitto);
}

#[test]
fn moto_starts_serves_stops_and_restarts() {
    lifecycle(Kind::Moto);
}

#[test]
fn redis_starts_serves_stops_and_restarts() {
    lifecycle(Kind::Redis);
}

#[test]
fn rabbitmq_starts_serves_stops_and_restarts() {
    lifecycle(Kind::RabbitMq);
}

#[test]
fn two_rabbitmq_nodes_run_side_by_side_and_stop_independently() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| BrokerProcess::start_default(Kind::RabbitMq));
        let b = s.spawn(|| BrokerProcess::start_default(Kind::RabbitMq));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut a = a.unwrap_or_else(|e| panic!("{e:#}"));
    let b = b.unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(a.port(), b.port());
    assert_serves(Kind::RabbitMq, a.port());
    assert_serves(Kind::RabbitMq, b.port());
    a.kill9();
    assert!(refuses(a.port()));
    assert_serves(Kind::RabbitMq, b.port());
    a.restart().unwrap_or_else(|e| panic!("{e:#}"));
    assert_serves(Kind::RabbitMq, a.port());
}

#[test]
fn drop_stops_the_broker() {
    let broker = BrokerProcess::start_default(Kind::Redis).unwrap_or_else(|e| panic!("{e:#}"));
    let (port, dir) = (broker.port(), broker.dir().to_path_buf());
    drop(broker);
    assert!(refuses(port), "redis still accepts on {port} after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn kill9_crashes_the_broker_and_restart_recovers() {
    let mut nats = BrokerProcess::start_default(Kind::Nats).unwrap_or_else(|e| panic!("{e:#}"));
    nats.kill9();
    assert!(nats.pid().is_none());
    assert!(refuses(nats.port()));
    nats.restart().unwrap_or_else(|e| panic!("{e:#}"));
    assert_serves(Kind::Nats, nats.port());
}

// --- custom configs, files, placeholders, errors ---------------------------------------------------

#[test]
fn custom_config_with_files_and_placeholders() {
    let redis = BrokerProcess::start(
        Kind::Redis,
        "bind 127.0.0.1\nport {port}\nsave \"\"\ninclude {dir}/conf.d/auth.conf\n",
        &[("conf.d/auth.conf", b"requirepass s3cret-{port2}\n")],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        redis_ping(redis.port()).starts_with("-NOAUTH"),
        "auth from the included file is required"
    );

    let mut stream = connect(redis.port());
    write!(stream, "AUTH s3cret-{}\r\nPING\r\n", redis.port2()).unwrap();
    let mut reader = BufReader::new(stream);
    let (mut auth, mut pong) = (String::new(), String::new());
    reader.read_line(&mut auth).unwrap();
    reader.read_line(&mut pong).unwrap();
    assert_eq!((auth.as_str(), pong.as_str()), ("+OK\r\n", "+PONG\r\n"));

    let config = std::fs::read_to_string(redis.config_path()).unwrap();
    assert!(
        config.contains(&format!("port {}\n", redis.port())),
        "{config}"
    );
    assert!(
        config.contains(&format!(
            "include {}/conf.d/auth.conf",
            redis.dir().display()
        )),
        "{config}"
    );
}

#[test]
fn a_broker_that_cannot_start_reports_its_log() {
    let err = BrokerProcess::start(
        Kind::Nats,
        "listen: 127.0.0.1:{port}\nthis is { not valid\n",
        &[],
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("nats-server exited during start-up"), "{err}");
    assert!(err.contains("log tail"), "{err}");
    assert!(
        err.contains("Parse error on line 2"),
        "the log tail shows the broker's complaint: {err}"
    );
}

#[test]
fn files_must_stay_inside_the_dir() {
    let err = BrokerProcess::start(
        Kind::Redis,
        Kind::Redis.default_config(),
        &[("../escape", b"x")],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("relative path inside the broker dir"),
        "{err}"
    );
}

/// Runs [`missing_binary_probe`] in a child process with every binary overridden to a missing path
/// (setting env vars in-process is `unsafe` in edition 2024 and racy with parallel tests).
#[test]
fn a_missing_binary_names_the_debian_package() {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "missing_binary_probe",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for kind in Kind::ALL {
        child.env(kind.env_override(), "/nonexistent/bin/broker");
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "probe failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the probe did not run:\n{stdout}"
    );
}

#[test]
#[ignore = "run by a_missing_binary_names_the_debian_package with EDGEWIRE_TEST_BIN_* set"]
fn missing_binary_probe() {
    for kind in Kind::ALL {
        assert_eq!(
            std::env::var(kind.env_override()).as_deref(),
            Ok("/nonexistent/bin/broker")
        );
        let err = BrokerProcess::start_default(kind).unwrap_err().to_string();
        eprintln!("{kind}: {err}");
        assert!(err.contains(&format!("`{}`", kind.package())), "{err}");
        assert!(err.contains("make deps"), "{err}");
        assert!(err.contains("/nonexistent/bin/broker"), "{err}");
    }
}

// --- data survives restarts -----------------------------------------------------------------------

/// A NATS request over the raw client protocol; returns the reply payload.
fn nats_request(port: u16, subject: &str, payload: &str) -> String {
    let mut stream = connect(port);
    write!(
        stream,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.e2e 1\r\nPUB {subject} _INBOX.e2e {}\r\n{payload}\r\n",
        payload.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "NATS closed the connection"
        );
        if line.starts_with("MSG ") {
            break;
        }
        assert!(!line.starts_with("-ERR"), "NATS: {line}");
    }
    let size: usize = line.split_whitespace().last().unwrap().parse().unwrap();
    let mut body = vec![0; size + 2];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&body[..size]).into_owned()
}

#[test]
fn nats_jetstream_data_survives_restart() {
    let mut nats = BrokerProcess::start_default(Kind::Nats).unwrap_or_else(|e| panic!("{e:#}"));
    let created = nats_request(
        nats.port(),
        "$JS.API.STREAM.CREATE.ORDERS",
        r#"{"name":"ORDERS","subjects":["orders.>"],"storage":"file"}"#,
    );
    assert!(created.contains(r#""name":"ORDERS""#), "{created}");
    let ack = nats_request(nats.port(), "orders.1", "hello");
    assert!(
        ack.contains(r#""stream":"ORDERS""#) && ack.contains(r#""seq":1"#),
        "{ack}"
    );

    nats.restart().unwrap_or_else(|e| panic!("{e:#}"));
    let info = nats_request(nats.port(), "$JS.API.STREAM.INFO.ORDERS", "");
    assert!(
        info.contains(r#""messages":1"#),
        "stream lost its message over a restart: {info}\n{}",
        nats.log()
    );
    assert!(
        count_files(&nats.dir().join("jetstream")) > 0,
        "no JetStream store in {}",
        nats.dir().display()
    );
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    count_files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn mosquitto_retained_message_survives_restart() {
    let mut mosquitto =
        BrokerProcess::start_default(Kind::Mosquitto).unwrap_or_else(|e| panic!("{e:#}"));
    let mut publisher = connect(mosquitto.port());
    publisher
        .write_all(&mqtt_connect_packet("e2e-pub"))
        .unwrap();
    let mut connack = [0u8; 4];
    publisher.read_exact(&mut connack).unwrap();
    // PUBLISH, QoS 0, retain; topic "e2e/t", payload "kept"; then DISCONNECT.
    publisher
        .write_all(&[
            0x31, 11, 0, 5, b'e', b'2', b'e', b'/', b't', b'k', b'e', b'p', b't', 0xe0, 0,
        ])
        .unwrap();
    let mut rest = Vec::new();
    let _ = publisher.read_to_end(&mut rest);

    mosquitto.restart().unwrap_or_else(|e| panic!("{e:#}"));
    let mut subscriber = connect(mosquitto.port());
    subscriber
        .write_all(&mqtt_connect_packet("e2e-sub"))
        .unwrap();
    subscriber.read_exact(&mut connack).unwrap();
    assert_eq!(connack, CONNACK_ACCEPTED);
    // SUBSCRIBE packet id 1, "e2e/t" QoS 0.
    subscriber
        .write_all(&[0x82, 10, 0, 1, 0, 5, b'e', b'2', b'e', b'/', b't', 0])
        .unwrap();
    let mut suback = [0u8; 5];
    subscriber.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);
    let mut publish = [0u8; 13];
    subscriber.read_exact(&mut publish).unwrap_or_else(|e| {
        panic!(
            "no retained message after restart: {e}\n{}",
            mosquitto.log()
        )
    });
    assert_eq!(
        publish[0] & 0xf1,
        0x31,
        "retained PUBLISH expected: {publish:?}"
    );
    assert_eq!(&publish[9..], b"kept");
}

// --- PKI -----------------------------------------------------------------------------------------

/// Opens TLS to 127.0.0.1:`port` with `openssl s_client` (server verified against `ca`, SAN 127.0.0.1
/// required), sends an MQTT CONNECT through it and returns what came back (at most 4 bytes).
fn mqtt_connack_over_tls(port: u16, ca: &Path, client: Option<(&Path, &Path)>) -> Vec<u8> {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-quiet",
        "-verify_return_error",
        "-verify_ip",
        "127.0.0.1",
    ])
    .arg("-connect")
    .arg(format!("127.0.0.1:{port}"))
    .arg("-CAfile")
    .arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4];
        while got.len() < 4 {
            match stdout.read(&mut buf[..4 - got.len()]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(got);
    });
    let _ = stdin.write_all(&mqtt_connect_packet("e2e-tls"));
    let _ = stdin.flush();
    let got = rx.recv_timeout(IO_TIMEOUT).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    got
}

#[test]
fn test_pki_serves_mutual_tls_and_refuses_strangers() {
    let pki = TestPki::new("edge-agent").unwrap();
    let mosquitto = BrokerProcess::start(
        Kind::Mosquitto,
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         listener {port2} 127.0.0.1\n\
         cafile {dir}/ca.pem\n\
         certfile {dir}/server.pem\n\
         keyfile {dir}/server-key.pem\n\
         require_certificate true\n",
        &pki.server_files(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        wait_for_port(mosquitto.port2(), Duration::from_secs(5)),
        "{}",
        mosquitto.log()
    );
    let tls = mosquitto.port2();
    let client = Some((pki.client_cert_path(), pki.client_key_path()));
    let client = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));

    assert_eq!(
        mqtt_connack_over_tls(tls, &pki.ca_path(), client),
        CONNACK_ACCEPTED,
        "{}",
        mosquitto.log()
    );

    let no_client_cert = mqtt_connack_over_tls(tls, &pki.ca_path(), None);
    assert_ne!(
        no_client_cert, CONNACK_ACCEPTED,
        "a client without certificate got in"
    );

    let other = TestPki::other_ca().unwrap();
    let (other_cert, other_key) = (other.client_cert_path(), other.client_key_path());
    let stranger = mqtt_connack_over_tls(tls, &pki.ca_path(), Some((&other_cert, &other_key)));
    assert_ne!(
        stranger, CONNACK_ACCEPTED,
        "a client certificate from another CA got in"
    );

    let distrusting = mqtt_connack_over_tls(tls, &other.ca_path(), client);
    assert_ne!(
        distrusting, CONNACK_ACCEPTED,
        "the server certificate verified against the wrong CA"
    );
}

#[test]
fn test_pki_writes_its_files_and_issues_more_clients() {
    let pki = TestPki::new("edge-agent").unwrap();
    for (path, pem) in [
        (pki.ca_path(), &pki.ca_pem),
        (pki.server_cert_path(), &pki.server_cert_pem),
        (pki.server_key_path(), &pki.server_key_pem),
        (pki.client_cert_path(), &pki.client_cert_pem),
        (pki.client_key_path(), &pki.client_key_pem),
    ] {
        assert_eq!(
            &std::fs::read_to_string(&path).unwrap(),
            pem,
            "{}",
            path.display()
        );
    }
    assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(
        pki.client_key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let subject = openssl_x509(&pki.client_cert_pem, "-subject");
    assert!(subject.contains("CN = edge-agent"), "{subject}");
    let sans = openssl_x509(&pki.server_cert_pem, "-ext");
    assert!(
        sans.contains("DNS:localhost") && sans.contains("IP Address:127.0.0.1"),
        "{sans}"
    );

    let other = TestPki::other_ca().unwrap();
    for cert in [pki.server_cert_path(), pki.client_cert_path()] {
        assert!(
            openssl_verifies(&pki.ca_path(), &cert),
            "{} does not verify against its CA",
            cert.display()
        );
        assert!(
            !openssl_verifies(&other.ca_path(), &cert),
            "{} verifies against another CA",
            cert.display()
        );
    }

    let (cert, _key) = pki.issue_client("second").unwrap();
    assert!(openssl_x509(&cert, "-subject").contains("CN = second"));
}

fn openssl_verifies(ca: &Path, cert: &Path) -> bool {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(": OK")
}

fn openssl_x509(pem: &str, what: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", what]);
    if what == "-ext" {
        cmd.arg("subjectAltName");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A custom config and an `enabled_plugins` file are honoured: the management API answers on `{port3}` for
/// the user the config creates.
#[test]
fn rabbitmq_reads_its_config_and_plugins_files() {
    let rabbit = BrokerProcess::start(
        Kind::RabbitMq,
        "default_user = edgewire\n\
         default_pass = s3cret\n\
         management.tcp.ip = 127.0.0.1\n\
         management.tcp.port = {port3}\n",
        &[("enabled_plugins", b"[rabbitmq_management].\n")],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let log = rabbit.log();
    assert!(
        log.contains(&rabbit.config_path().display().to_string()),
        "config file not named in the log:\n{log}"
    );
    assert!(
        log.contains("Created user 'edgewire'"),
        "default_user from the config was not created:\n{log}"
    );

    assert!(
        wait_for_port(rabbit.port3(), Duration::from_secs(30)),
        "no management listener:\n{}",
        rabbit.log()
    );
    let mut http = connect(rabbit.port3());
    // base64("edgewire:s3cret")
    write!(
        http,
        "GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic ZWRnZXdpcmU6czNjcmV0\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""name":"edgewire""#), "{response}");
}
