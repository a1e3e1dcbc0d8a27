//! The gRPC transport (`google.pubsub.v1.Publisher` over HTTP/2 cleartext), which the data-plane
//! `Publisher` client uses: tonic's unary codec around the shared [`handle`](super::handle).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;

use super::{Answer, Call, Code, Message, Method, Shared, Topic, Transport, handle, proto};

fn sorted(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn call(
    method: Method,
    topic: String,
    labels: BTreeMap<String, String>,
    messages: Vec<Message>,
) -> Call {
    Call {
        method,
        transport: Transport::Grpc,
        topic,
        labels,
        messages,
    }
}

/// One unary gRPC method: decodes `Req`, runs `f`, encodes the answer.
struct Unary<Req, Resp> {
    state: Shared,
    f: fn(&Shared, Req) -> Result<Resp, tonic::Status>,
}

impl<Req: Send + 'static, Resp: Send + 'static> tonic::server::UnaryService<Req>
    for Unary<Req, Resp>
{
    type Response = Resp;
    type Future = BoxFuture<'static, Result<tonic::Response<Resp>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let r = (self.f)(&self.state, request.into_inner()).map(tonic::Response::new);
        Box::pin(async move { r })
    }
}

async fn unary<Req, Resp>(
    state: Shared,
    req: axum::extract::Request,
    f: fn(&Shared, Req) -> Result<Resp, tonic::Status>,
) -> Response
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
    grpc.unary(Unary { state, f }, req).await.into_response()
}

fn status((code, message): (Code, String)) -> tonic::Status {
    tonic::Status::new(code.grpc(), message)
}

fn to_proto(t: Topic) -> proto::Topic {
    proto::Topic {
        name: t.name,
        labels: t.labels.into_iter().collect(),
    }
}

fn topic_answer(a: Answer) -> proto::Topic {
    match a {
        Answer::Topic(t) => to_proto(t),
        _ => proto::Topic::default(),
    }
}

pub(super) async fn grpc(
    State(state): State<Shared>,
    Path(method): Path<String>,
    req: axum::extract::Request,
) -> Response {
    match Method::from_grpc(&method) {
        Some(Method::CreateTopic) => {
            unary(state, req, |s, t: proto::Topic| {
                let c = call(Method::CreateTopic, t.name, sorted(t.labels), vec![]);
                handle(s, c).map(topic_answer).map_err(status)
            })
            .await
        }
        Some(Method::GetTopic) => {
            unary(state, req, |s, r: proto::GetTopicRequest| {
                let c = call(Method::GetTopic, r.topic, BTreeMap::new(), vec![]);
                handle(s, c).map(topic_answer).map_err(status)
            })
            .await
        }
        Some(Method::UpdateTopic) => {
            unary(state, req, |s, r: proto::UpdateTopicRequest| {
                let t = r.topic.unwrap_or_default();
                let c = call(Method::UpdateTopic, t.name, sorted(t.labels), vec![]);
                handle(s, c).map(topic_answer).map_err(status)
            })
            .await
        }
        Some(Method::ListTopics) => {
            unary(state, req, |s, r: proto::ListTopicsRequest| {
                let c = call(Method::ListTopics, r.project, BTreeMap::new(), vec![]);
                handle(s, c)
                    .map(|a| match a {
                        Answer::Topics(ts) => proto::ListTopicsResponse {
                            topics: ts.into_iter().map(to_proto).collect(),
                            next_page_token: String::new(),
                        },
                        _ => proto::ListTopicsResponse::default(),
                    })
                    .map_err(status)
            })
            .await
        }
        Some(Method::DeleteTopic) => {
            unary(state, req, |s, r: proto::DeleteTopicRequest| {
                let c = call(Method::DeleteTopic, r.topic, BTreeMap::new(), vec![]);
                handle(s, c).map(|_| proto::Empty {}).map_err(status)
            })
            .await
        }
        Some(Method::Publish) => {
            unary(state, req, |s, r: proto::PublishRequest| {
                let messages = r
                    .messages
                    .into_iter()
                    .map(|m| Message {
                        data: m.data,
                        attributes: sorted(m.attributes),
                        ordering_key: m.ordering_key,
                    })
                    .collect();
                let c = call(Method::Publish, r.topic, BTreeMap::new(), messages);
                handle(s, c)
                    .map(|a| match a {
                        Answer::MessageIds(message_ids) => proto::PublishResponse { message_ids },
                        _ => proto::PublishResponse::default(),
                    })
                    .map_err(status)
            })
            .await
        }
        None => {
            tonic::Status::unimplemented(format!("method {method} is not implemented by the fake"))
                .into_http::<tonic::body::Body>()
                .into_response()
        }
    }
}
