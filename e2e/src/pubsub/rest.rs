//! The REST/JSON transport (HTTP/1.1, the paths of `pubsub.googleapis.com`), which the `TopicAdmin`
//! client uses, around the shared [`handle`](super::handle).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Answer, Call, Code, Message, Method, Shared, Topic, Transport, handle};

fn rest_error((code, message): (Code, String)) -> Response {
    let (http, name) = code.http();
    let body = json!({"error": {"code": http, "message": message, "status": name}});
    (
        StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn topic_json(t: &Topic) -> Value {
    json!({"name": t.name, "labels": t.labels, "state": "ACTIVE"})
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn rest_answer(r: Result<Answer, (Code, String)>) -> Response {
    match r {
        Ok(Answer::Topic(t)) => axum::Json(topic_json(&t)).into_response(),
        Ok(Answer::Topics(ts)) => {
            axum::Json(json!({"topics": ts.iter().map(topic_json).collect::<Vec<_>>()}))
                .into_response()
        }
        Ok(Answer::MessageIds(ids)) => axum::Json(json!({"messageIds": ids})).into_response(),
        Ok(Answer::Empty) => axum::Json(json!({})).into_response(),
        Err(e) => rest_error(e),
    }
}

pub(super) async fn list(State(state): State<Shared>, Path(project): Path<String>) -> Response {
    let c = Call {
        method: Method::ListTopics,
        transport: Transport::Rest,
        topic: format!("projects/{project}"),
        labels: BTreeMap::new(),
        messages: vec![],
    };
    rest_answer(handle(&state, c))
}

pub(super) async fn topic(
    State(state): State<Shared>,
    Path((project, topic)): Path<(String, String)>,
    method: axum::http::Method,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_body = || -> Result<Value, (Code, String)> {
        if body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&body).map_err(|e| {
            (
                Code::InvalidArgument,
                format!("Invalid JSON payload received. {e}"),
            )
        })
    };
    let (m, id) = match (&method, topic.strip_suffix(":publish")) {
        (&axum::http::Method::POST, Some(id)) => (Method::Publish, id.to_string()),
        (&axum::http::Method::PUT, None) => (Method::CreateTopic, topic.clone()),
        (&axum::http::Method::GET, None) => (Method::GetTopic, topic.clone()),
        (&axum::http::Method::PATCH, None) => (Method::UpdateTopic, topic.clone()),
        (&axum::http::Method::DELETE, None) => (Method::DeleteTopic, topic.clone()),
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    let name = format!("projects/{project}/topics/{id}");
    let body = match json_body() {
        Ok(b) => b,
        Err(e) => return rest_error(e),
    };
    let (labels, messages) = match m {
        Method::CreateTopic => (labels_of(&body), vec![]),
        Method::UpdateTopic => (labels_of(body.get("topic").unwrap_or(&Value::Null)), vec![]),
        Method::Publish => {
            let mut out = Vec::new();
            for msg in body
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let data =
                    match B64.decode(msg.get("data").and_then(Value::as_str).unwrap_or_default()) {
                        Ok(d) => d,
                        Err(e) => {
                            return rest_error((
                                Code::InvalidArgument,
                                format!("data is not base64: {e}"),
                            ));
                        }
                    };
                out.push(Message {
                    data,
                    attributes: labels_of(&json!({"labels": msg.get("attributes")})),
                    ordering_key: msg
                        .get("orderingKey")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            (BTreeMap::new(), out)
        }
        _ => (BTreeMap::new(), vec![]),
    };
    let c = Call {
        method: m,
        transport: Transport::Rest,
        topic: name,
        labels,
        messages,
    };
    rest_answer(handle(&state, c))
}
