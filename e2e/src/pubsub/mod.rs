//! A fake Google Cloud Pub/Sub server for tests: no emulator can be installed here, so the adapter and the
//! provisioning code talk to this instead.
//!
//! It speaks both transports the official `google-cloud-pubsub` crate uses, on one loopback port:
//!
//! - **gRPC** (`google.pubsub.v1.Publisher`, HTTP/2 cleartext): `CreateTopic`, `GetTopic`, `UpdateTopic`,
//!   `ListTopics`, `DeleteTopic`, `Publish`. The data-plane `Publisher` client of the crate uses this.
//! - **REST/JSON** (HTTP/1.1, the same paths as `pubsub.googleapis.com`): `PUT/GET/PATCH/DELETE
//!   /v1/projects/{p}/topics/{t}`, `GET /v1/projects/{p}/topics`, `POST /v1/projects/{p}/topics/{t}:publish`.
//!   The crate's `TopicAdmin` client uses this.
//!
//! The wire messages are the ones of `google/pubsub/v1/pubsub.proto` (googleapis), reduced to the fields
//! used here with the published field numbers (proto3 decoders skip the fields left out). That they match
//! is proven by the tests, which drive this server with the official client.
//!
//! Like the real service it keeps topics (with labels) in memory, answers `ALREADY_EXISTS` for a second
//! create, `NOT_FOUND` for a missing topic (also on publish), and `INVALID_ARGUMENT` for a malformed
//! name. Every request is recorded in order ([`FakePubSub::requests`]), failed ones too. A method can be
//! told to fail with a status ([`FakePubSub::fail_next`], [`FakePubSub::fail_always`]) for error paths.
//!
//! One file per part: [`proto`] (the wire messages), `grpc.rs` and `rest.rs` (the two transports);
//! here the in-memory service both call, the recorded requests and the server.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use edgewire_e2e::pubsub::{Code, FakePubSub, Method};
//!
//! let fake = FakePubSub::start().await?;
//! fake.create_topic("projects/p/topics/edge-nodes-events", &[]);
//! // point the client at fake.endpoint() ("http://127.0.0.1:PORT") with anonymous credentials ...
//! fake.fail_next(Method::Publish, Code::PermissionDenied);
//! for r in fake.requests() {
//!     println!("{:?} {} {} messages", r.method, r.topic, r.messages.len());
//! }
//! # Ok(()) }
//! ```

mod grpc;
pub mod proto;
mod rest;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use axum::Router;
use axum::routing::{any, get};

/// A `google.pubsub.v1.Publisher` method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    CreateTopic,
    GetTopic,
    UpdateTopic,
    ListTopics,
    DeleteTopic,
    Publish,
}

impl Method {
    fn from_grpc(name: &str) -> Option<Self> {
        Some(match name {
            "CreateTopic" => Method::CreateTopic,
            "GetTopic" => Method::GetTopic,
            "UpdateTopic" => Method::UpdateTopic,
            "ListTopics" => Method::ListTopics,
            "DeleteTopic" => Method::DeleteTopic,
            "Publish" => Method::Publish,
            _ => return None,
        })
    }
}

/// Which transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Rest,
}

/// A gRPC status code the fake can answer with (the canonical codes the Pub/Sub service uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Internal,
    Unavailable,
    DeadlineExceeded,
}

impl Code {
    fn grpc(self) -> tonic::Code {
        match self {
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::Internal => tonic::Code::Internal,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        }
    }

    /// The HTTP status and status name of the REST/JSON error body.
    fn http(self) -> (u16, &'static str) {
        match self {
            Code::InvalidArgument => (400, "INVALID_ARGUMENT"),
            Code::NotFound => (404, "NOT_FOUND"),
            Code::AlreadyExists => (409, "ALREADY_EXISTS"),
            Code::PermissionDenied => (403, "PERMISSION_DENIED"),
            Code::Unauthenticated => (401, "UNAUTHENTICATED"),
            Code::ResourceExhausted => (429, "RESOURCE_EXHAUSTED"),
            Code::Internal => (500, "INTERNAL"),
            Code::Unavailable => (503, "UNAVAILABLE"),
            Code::DeadlineExceeded => (504, "DEADLINE_EXCEEDED"),
        }
    }

    /// The message the real service gives for an injected failure of `method` on `topic`.
    fn injected_message(self, method: Method, topic: &str) -> String {
        match self {
            Code::PermissionDenied => {
                let action = match method {
                    Method::CreateTopic => "pubsub.topics.create",
                    Method::GetTopic => "pubsub.topics.get",
                    Method::UpdateTopic => "pubsub.topics.update",
                    Method::ListTopics => "pubsub.topics.list",
                    Method::DeleteTopic => "pubsub.topics.delete",
                    Method::Publish => "pubsub.topics.publish",
                };
                format!(
                    "User not authorized to perform this action. (permission {action} on {topic})"
                )
            }
            Code::Unavailable => "The service was unable to fulfill your request.".into(),
            other => format!("injected {other:?} for {method:?}"),
        }
    }
}

/// A message as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: String,
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub transport: Transport,
    /// The topic name (`projects/p/topics/t`); for `ListTopics` the project (`projects/p`).
    pub topic: String,
    /// Labels sent with `CreateTopic` / `UpdateTopic`.
    pub labels: BTreeMap<String, String>,
    /// Messages sent with `Publish`.
    pub messages: Vec<Message>,
    /// `None` when answered OK, else the status code answered.
    pub failed: Option<Code>,
}

/// A topic the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    topics: BTreeMap<String, Topic>,
    requests: Vec<Request>,
    fail_next: HashMap<Method, VecDeque<Code>>,
    fail_always: HashMap<Method, Code>,
    next_id: u64,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake Pub/Sub server on `127.0.0.1:<free port>`; stopped when dropped.
pub struct FakePubSub {
    addr: SocketAddr,
    state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakePubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePubSub")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakePubSub {
    /// Binds a free loopback port and serves on the current tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("bind 127.0.0.1:0 for the fake Pub/Sub server")?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/google.pubsub.v1.Publisher/{method}", any(grpc::grpc))
            .route("/v1/projects/{project}/topics", get(rest::list))
            .route("/v1/projects/{project}/topics/{topic}", any(rest::topic))
            .with_state(state.clone());
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            // Dropping the JoinSet on stop aborts every connection: the service is gone, not draining.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut rx => return,
                    accepted = listener.accept() => {
                        let Ok((sock, _)) = accepted else { continue };
                        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                        conns.spawn(async move {
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                            .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self {
            addr,
            state,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`, for `with_endpoint` of the Pub/Sub clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state).requests.clone()
    }

    /// The recorded requests of one method, in order.
    pub fn requests_of(&self, method: Method) -> Vec<Request> {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.method == method)
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests (topics stay).
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }

    /// The topics that exist, by name.
    pub fn topics(&self) -> Vec<Topic> {
        lock(&self.state).topics.values().cloned().collect()
    }

    /// Creates a topic directly (not recorded as a request), as if made out of band.
    pub fn create_topic(&self, name: &str, labels: &[(&str, &str)]) {
        let t = Topic {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        lock(&self.state).topics.insert(name.to_string(), t);
    }

    /// Deletes a topic directly (not recorded as a request); whether it existed.
    pub fn remove_topic(&self, name: &str) -> bool {
        lock(&self.state).topics.remove(name).is_some()
    }

    /// The next call of `method` fails with `code` (calls queue up: two calls fail the next two).
    pub fn fail_next(&self, method: Method, code: Code) {
        lock(&self.state)
            .fail_next
            .entry(method)
            .or_default()
            .push_back(code);
    }

    /// Every call of `method` fails with `code` until [`FakePubSub::stop_failing`].
    pub fn fail_always(&self, method: Method, code: Code) {
        lock(&self.state).fail_always.insert(method, code);
    }

    /// Undoes [`FakePubSub::fail_always`] and pending [`FakePubSub::fail_next`] for `method`.
    pub fn stop_failing(&self, method: Method) {
        let mut s = lock(&self.state);
        s.fail_always.remove(&method);
        s.fail_next.remove(&method);
    }

    /// Stops serving (the port refuses connections afterwards).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for FakePubSub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A parsed request, the same for both transports.
struct Call {
    method: Method,
    transport: Transport,
    topic: String,
    labels: BTreeMap<String, String>,
    messages: Vec<Message>,
}

/// What a call answers.
enum Answer {
    Topic(Topic),
    Topics(Vec<Topic>),
    MessageIds(Vec<String>),
    Empty,
}

/// The topic-name rules of the real service: `projects/{project}/topics/{id}`, id 3–255 characters of
/// `[A-Za-z0-9-_.~+%]`, starting with a letter, not starting with `goog`.
fn check_topic_name(name: &str) -> Result<(), String> {
    let bad = || Err(format!("Invalid [topics] name: (name={name})"));
    let Some(rest) = name.strip_prefix("projects/") else {
        return bad();
    };
    let Some((project, id)) = rest.split_once("/topics/") else {
        return bad();
    };
    if project.is_empty() || project.contains('/') {
        return bad();
    }
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
    let starts_letter = id.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !(3..=255).contains(&id.len()) || !ok_chars || !starts_letter || id.starts_with("goog") {
        return bad();
    }
    Ok(())
}

/// Records the call and runs it against the in-memory state.
fn handle(state: &Shared, call: Call) -> Result<Answer, (Code, String)> {
    let mut s = lock(state);
    let injected = match s
        .fail_next
        .get_mut(&call.method)
        .and_then(|q| q.pop_front())
    {
        Some(c) => Some(c),
        None => s.fail_always.get(&call.method).copied(),
    };
    let result = match injected {
        Some(code) => Err((code, code.injected_message(call.method, &call.topic))),
        None => apply(&mut s, &call),
    };
    s.requests.push(Request {
        method: call.method,
        transport: call.transport,
        topic: call.topic,
        labels: call.labels,
        messages: call.messages,
        failed: result.as_ref().err().map(|(c, _)| *c),
    });
    result
}

fn apply(s: &mut Inner, call: &Call) -> Result<Answer, (Code, String)> {
    let not_found = |t: &str| {
        (
            Code::NotFound,
            format!("Resource not found (resource={t})."),
        )
    };
    if call.method != Method::ListTopics {
        check_topic_name(&call.topic).map_err(|m| (Code::InvalidArgument, m))?;
    }
    match call.method {
        Method::CreateTopic => {
            if s.topics.contains_key(&call.topic) {
                return Err((
                    Code::AlreadyExists,
                    "Resource already exists in the project (resource=".to_string()
                        + topic_id(&call.topic)
                        + ").",
                ));
            }
            let t = Topic {
                name: call.topic.clone(),
                labels: call.labels.clone(),
            };
            s.topics.insert(call.topic.clone(), t.clone());
            Ok(Answer::Topic(t))
        }
        Method::GetTopic => s
            .topics
            .get(&call.topic)
            .cloned()
            .map(Answer::Topic)
            .ok_or_else(|| not_found(topic_id(&call.topic))),
        Method::UpdateTopic => {
            let t = s
                .topics
                .get_mut(&call.topic)
                .ok_or_else(|| not_found(topic_id(&call.topic)))?;
            t.labels = call.labels.clone();
            Ok(Answer::Topic(t.clone()))
        }
        Method::ListTopics => {
            let prefix = format!("{}/topics/", call.topic);
            Ok(Answer::Topics(
                s.topics
                    .values()
                    .filter(|t| t.name.starts_with(&prefix))
                    .cloned()
                    .collect(),
            ))
        }
        Method::DeleteTopic => s
            .topics
            .remove(&call.topic)
            .map(|_| Answer::Empty)
            .ok_or_else(|| not_found(topic_id(&call.topic))),
        Method::Publish => {
            if !s.topics.contains_key(&call.topic) {
                return Err(not_found(topic_id(&call.topic)));
            }
            if call.messages.is_empty() {
                return Err((Code::InvalidArgument, "The value for message_count is too small. You passed 0 in the request, but the minimum value is 1.".into()));
            }
            let ids = call
                .messages
                .iter()
                .map(|_| {
                    s.next_id += 1;
                    s.next_id.to_string()
                })
                .collect();
            Ok(Answer::MessageIds(ids))
        }
    }
}

fn topic_id(name: &str) -> &str {
    name.rsplit_once("/topics/").map_or(name, |(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
    use google_cloud_pubsub::client::{BasePublisher, TopicAdmin};
    use google_cloud_pubsub::model::Message as PsMessage;

    async fn admin(fake: &FakePubSub) -> TopicAdmin {
        TopicAdmin::builder()
            .with_endpoint(fake.endpoint())
            .with_credentials(Anonymous::new().build())
            .build()
            .await
            .expect("topic admin client")
    }

    /// The official admin client (REST/JSON) creates, reads and deletes topics; the fake answers
    /// ALREADY_EXISTS / NOT_FOUND like the service, records every call in order, and injects failures.
    #[tokio::test]
    async fn official_admin_client_round_trip() {
        let fake = FakePubSub::start().await.unwrap();
        let admin = admin(&fake).await;
        let name = "projects/p1/topics/edge-nodes-events";
        let t = admin
            .create_topic()
            .set_name(name)
            .set_labels([("edgewire_dev_owner", "ns_events")])
            .send()
            .await
            .unwrap();
        assert_eq!(t.name, name);
        assert_eq!(
            fake.topics(),
            vec![Topic {
                name: name.into(),
                labels: [("edgewire_dev_owner".to_string(), "ns_events".to_string())].into()
            }]
        );
        let again = admin
            .create_topic()
            .set_name(name)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            again.status().map(|s| format!("{:?}", s.code)),
            Some("AlreadyExists".to_string()),
            "{again}"
        );
        let got = admin.get_topic().set_topic(name).send().await.unwrap();
        assert_eq!(
            got.labels.get("edgewire_dev_owner").map(String::as_str),
            Some("ns_events")
        );
        fake.fail_next(Method::DeleteTopic, Code::PermissionDenied);
        let denied = admin
            .delete_topic()
            .set_topic(name)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            denied.status().map(|s| format!("{:?}", s.code)),
            Some("PermissionDenied".to_string())
        );
        assert!(
            denied.to_string().contains("pubsub.topics.delete"),
            "{denied}"
        );
        admin.delete_topic().set_topic(name).send().await.unwrap();
        assert!(fake.topics().is_empty());
        let missing = admin.get_topic().set_topic(name).send().await.unwrap_err();
        assert_eq!(
            missing.status().map(|s| format!("{:?}", s.code)),
            Some("NotFound".to_string())
        );
        let seen: Vec<(Method, Option<Code>)> = fake
            .requests()
            .iter()
            .map(|r| (r.method, r.failed))
            .collect();
        assert_eq!(
            seen,
            vec![
                (Method::CreateTopic, None),
                (Method::CreateTopic, Some(Code::AlreadyExists)),
                (Method::GetTopic, None),
                (Method::DeleteTopic, Some(Code::PermissionDenied)),
                (Method::DeleteTopic, None),
                (Method::GetTopic, Some(Code::NotFound)),
            ]
        );
        assert!(
            fake.requests()
                .iter()
                .all(|r| r.transport == Transport::Rest)
        );
    }

    /// The official data-plane publisher (gRPC) delivers data, attributes and ordering keys that the fake
    /// decodes field by field; a publish to a missing topic is NOT_FOUND.
    #[tokio::test]
    async fn official_publisher_over_grpc() {
        let fake = FakePubSub::start().await.unwrap();
        let name = "projects/p1/topics/edge-ssh-events";
        fake.create_topic(name, &[]);
        let base = BasePublisher::builder()
            .with_endpoint(fake.endpoint())
            .with_credentials(Anonymous::new().build())
            .build()
            .await
            .unwrap();
        let publisher = base.publisher(name).build();
        let id = publisher
            .publish(
                PsMessage::new()
                    .set_data(Bytes::from_static(b"{\"x\":1}"))
                    .set_attributes([("type", "edge.ssh.opened"), ("corename", "prod-us")]),
            )
            .await
            .unwrap();
        assert!(!id.is_empty());
        let publishes = fake.requests_of(Method::Publish);
        assert_eq!(publishes.len(), 1);
        let r = &publishes[0];
        assert_eq!((r.transport, r.topic.as_str()), (Transport::Grpc, name));
        assert_eq!(
            r.messages,
            vec![Message {
                data: b"{\"x\":1}".to_vec(),
                attributes: [
                    ("corename".to_string(), "prod-us".to_string()),
                    ("type".to_string(), "edge.ssh.opened".to_string())
                ]
                .into(),
                ordering_key: String::new(),
            }]
        );
        let missing = base.publisher("projects/p1/topics/nope-events").build();
        let err = missing
            .publish(PsMessage::new().set_data(Bytes::from_static(b"x")))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not found") || format!("{err:?}").contains("NotFound"),
            "{err:?}"
        );
        assert_eq!(
            fake.requests_of(Method::Publish)
                .last()
                .and_then(|r| r.failed),
            Some(Code::NotFound)
        );
    }

    #[test]
    fn topic_names_follow_the_service_rules() {
        assert!(check_topic_name("projects/p/topics/edge-nodes-events").is_ok());
        for bad in [
            "edge-nodes-events",
            "projects/p/topics/ab",
            "projects/p/topics/1abc",
            "projects/p/topics/goog-x",
            "projects/p/topics/a b c",
            "projects//topics/abc",
        ] {
            assert!(check_topic_name(bad).is_err(), "{bad}");
        }
    }
}
