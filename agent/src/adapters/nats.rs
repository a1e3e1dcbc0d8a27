//! NATS: subject = event type, CloudEvents NATS binary mode (`ce-*` headers, body = data). Core NATS
//! answers after a server round trip (the server has processed the message; concurrent requests share
//! the round trips, [`connect::nats::SharedAcks`]); JetStream waits for the stream's PubAck (concurrent
//! requests' publishes are pipelined, each awaiting its own ack).
//! The stream (`EVENT_BROKER_NATS_STREAM`, subjects `edge.>`) is created if absent and verified if
//! present; a stream that does not capture `edge.>` keeps `/readyz` at 503 with that message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Adapter, PUBLISH_TIMEOUT, PublishError, Unfit};
use crate::connect::{self, Health, Readiness, SetupError};
use crate::event;
use crate::publisher::config::{JETSTREAM_SUBJECTS, JetStreamConfig, NatsConfig};

pub struct NatsAdapter {
    client: async_nats::Client,
    /// How a publish is acknowledged.
    ack: Ack,
    /// Problems the server reported (auth violation, TLS), for `/readyz`.
    health: Arc<Health>,
    /// `None` while the stream is verified; the reason otherwise. Only with JetStream.
    stream_problem: Arc<Mutex<Option<String>>>,
}

enum Ack {
    /// The stream's PubAck.
    JetStream(jetstream::Context),
    /// Core NATS: an echo, shared by concurrent requests.
    Core(connect::nats::SharedAcks),
}

impl NatsAdapter {
    pub async fn connect(c: NatsConfig) -> Result<Self, SetupError> {
        let health = Arc::new(Health::default());
        let opts = connect::nats::options(
            "edgewire-agent",
            &c.auth,
            &c.tls,
            crate::retry::PUBLISHER,
            health.clone(),
        )?;
        // With retry_on_initial_connect this returns at once and connects in the background.
        let client = opts
            .connect(c.urls.clone())
            .await
            .map_err(|e| SetupError::Config(format!("{}: {e}", edgewire_api::env::NATS_URLS)))?;
        let stream_problem = Arc::new(Mutex::new(None));
        let js = match &c.jetstream {
            Some(jsc) => {
                let ctx = jetstream::new(client.clone());
                *stream_problem.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("stream {} not verified yet", jsc.stream));
                tokio::spawn(ensure_stream_loop(
                    ctx.clone(),
                    client.clone(),
                    jsc.clone(),
                    stream_problem.clone(),
                ));
                Some(ctx)
            }
            None => None,
        };
        let ack = match js {
            Some(ctx) => Ack::JetStream(ctx),
            None => Ack::Core(
                connect::nats::SharedAcks::new(client.clone(), &health)
                    .await
                    .map_err(SetupError::Config)?,
            ),
        };
        Ok(Self {
            client,
            ack,
            health,
            stream_problem,
        })
    }

    fn stream_problem(&self) -> Option<String> {
        self.stream_problem.lock().ok().and_then(|p| p.clone())
    }
}

/// Creates or verifies the stream, and keeps re-verifying it (a broker restarted with an empty store
/// gets it back).
async fn ensure_stream_loop(
    js: jetstream::Context,
    client: async_nats::Client,
    c: JetStreamConfig,
    problem: Arc<Mutex<Option<String>>>,
) {
    let set = |p: Option<String>| {
        if let Ok(mut g) = problem.lock() {
            if g.is_some() && p.is_none() {
                tracing::info!(stream = %c.stream, "JetStream stream verified");
            }
            if let Some(msg) = &p
                && g.as_deref() != Some(msg.as_str())
            {
                tracing::warn!(stream = %c.stream, problem = %msg, "JetStream stream not usable");
            }
            *g = p;
        }
    };
    loop {
        if client.connection_state() != State::Connected {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let wait = match ensure_stream(&js, &c).await {
            Ok(()) => {
                set(None);
                Duration::from_secs(5)
            }
            Err(e) => {
                set(Some(e));
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn ensure_stream(js: &jetstream::Context, c: &JetStreamConfig) -> Result<(), String> {
    match js.get_stream(&c.stream).await {
        Ok(s) => {
            let subjects = &s.cached_info().config.subjects;
            if subjects.iter().any(|s| s == JETSTREAM_SUBJECTS || s == ">") {
                Ok(())
            } else {
                Err(format!(
                    "stream {} exists but its subjects {:?} do not cover {JETSTREAM_SUBJECTS}; add {JETSTREAM_SUBJECTS} to it or set {} to another stream",
                    c.stream,
                    subjects,
                    edgewire_api::env::NATS_STREAM
                ))
            }
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref je)
                if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            js.create_stream(stream::Config {
                name: c.stream.clone(),
                subjects: vec![JETSTREAM_SUBJECTS.to_string()],
                max_age: c.max_age,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map(|_| tracing::info!(stream = %c.stream, "created JetStream stream"))
            .map_err(|e| format!("cannot create stream {}: {e}", c.stream))
        }
        Err(e) => Err(format!("cannot read stream {}: {e}", c.stream)),
    }
}

/// The NATS headers of `ev`, built with the fallible parsers: async-nats's `insert(&str, &str)` panics on
/// a name or value it cannot carry. [`Adapter::fits`] has refused such events already; this is the guard
/// for any other caller.
fn nats_header_map(ev: &Event) -> Result<async_nats::HeaderMap, PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in event::nats_headers(ev) {
        let name = k.parse::<async_nats::HeaderName>();
        let value = v.parse::<async_nats::HeaderValue>();
        match (name, value) {
            (Ok(n), Ok(v)) => headers.insert(n, v),
            _ => {
                return Err(PublishError::Rejected(format!(
                    "{k} cannot be a NATS header"
                )));
            }
        }
    }
    Ok(headers)
}

/// Bytes of `ev` as a NATS message counts them against `max_payload`: the header block as async-nats
/// writes it (`NATS/1.0\r\n`, `name: value\r\n` each, `\r\n`) plus the data.
fn nats_wire_size(ev: &Event) -> usize {
    let headers: usize = event::nats_headers(ev)
        .iter()
        .map(|(k, v)| k.len() + 2 + v.len() + 2)
        .sum();
    10 + headers + 2 + event::data_len(ev)
}

impl Adapter for NatsAdapter {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn validate(&self, event: &Event) -> Result<(), String> {
        let t = event.ty();
        if let Some(p) = event::nats_subject_problem(t) {
            return Err(p);
        }
        if matches!(self.ack, Ack::JetStream(_)) && !t.starts_with("edge.") {
            return Err(format!(
                "type {t:?} is outside the JetStream stream's subjects {JETSTREAM_SUBJECTS}"
            ));
        }
        Ok(())
    }

    fn fits(&self, ev: &Event) -> Result<(), Unfit> {
        if let Some(p) = event::nats_headers_problem(ev) {
            return Err(Unfit::Attribute(p));
        }
        // The server's limit from its INFO (the client's default until connected); headers count.
        let max = self.client.max_payload();
        let size = nats_wire_size(ev);
        if size > max {
            return Err(Unfit::TooLarge(format!(
                "the message would be {size} bytes (headers and data); the NATS server takes at most {max} (max_payload)"
            )));
        }
        Ok(())
    }

    fn publish<'a>(&'a self, ev: &'a Event) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            if self.client.connection_state() != State::Connected {
                return Err(PublishError::Unavailable(
                    self.health
                        .readiness()
                        .detail
                        .unwrap_or_else(|| "not connected to NATS".into()),
                ));
            }
            if let Some(p) = self.stream_problem() {
                return Err(PublishError::Unavailable(p));
            }
            let headers = nats_header_map(ev)?;
            let subject = ev.ty().to_string();
            let payload = bytes::Bytes::from(event::data_bytes(ev));
            let fut = async {
                match &self.ack {
                    Ack::JetStream(js) => {
                        let ack = js
                            .publish_with_headers(subject, headers, payload)
                            .await
                            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
                        ack.await.map(|_| ()).map_err(|e| match e.kind() {
                            jetstream::context::PublishErrorKind::TimedOut => {
                                PublishError::Timeout(e.to_string())
                            }
                            jetstream::context::PublishErrorKind::StreamNotFound
                            | jetstream::context::PublishErrorKind::BrokenPipe => {
                                PublishError::Unavailable(e.to_string())
                            }
                            _ => PublishError::Rejected(e.to_string()),
                        })
                    }
                    Ack::Core(acks) => {
                        let sent_on = acks.generation();
                        self.client
                            .publish_with_headers(subject, headers, payload)
                            .await
                            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
                        acks.acknowledged(sent_on)
                            .await
                            .map_err(PublishError::Unavailable)
                    }
                }
            };
            match tokio::time::timeout(PUBLISH_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(PublishError::Timeout("no acknowledgement from NATS".into())),
            }
        }
        .boxed()
    }

    fn readiness(&self) -> Readiness {
        if self.client.connection_state() != State::Connected {
            let detail = self
                .health
                .readiness()
                .detail
                .or_else(|| Some("not connected to NATS".into()));
            return Readiness {
                connected: false,
                detail,
            };
        }
        match self.stream_problem() {
            Some(p) => Readiness {
                connected: false,
                detail: Some(p),
            },
            None => Readiness {
                connected: true,
                detail: None,
            },
        }
    }
}
