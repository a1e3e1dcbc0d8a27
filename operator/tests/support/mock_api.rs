//! A mocked Kubernetes API service for controller scenario tests (the `ApiServerVerifier` pattern of
//! controller-rs): kube's `Client` talks to a tower-test service; this side answers from an in-memory
//! object map and records every request, so tests assert method, path, query and body of each call.

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One request the controller made.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

impl Recorded {
    /// `"PATCH /apis/apps/v1/namespaces/factory/statefulsets/events-nats"`
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Objects by API path (`/api/v1/namespaces/ns/secrets/name`).
#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<String, Value>,
    pub requests: Vec<Recorded>,
    /// Namespaces being deleted: creates in them are refused, as the NamespaceLifecycle admission does.
    pub terminating: Vec<String>,
    next_rv: u64,
    /// Woken on every request (see [`MockApi::wait_for`]).
    arrived: Arc<tokio::sync::Notify>,
}

#[derive(Clone, Default)]
pub struct MockApi(pub Arc<Mutex<State>>);

impl MockApi {
    /// A client wired to a fresh mock and the mock itself (served on a background task).
    pub fn start() -> (kube::Client, MockApi) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let mock = MockApi::default();
        let served = mock.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let resp = served.handle(req).await;
                send.send_response(resp);
            }
        });
        (client, mock)
    }

    /// Waits until the requests so far satisfy `done` (for controllers running on their own task).
    #[allow(dead_code)] // each test binary compiles this module; not all of them run a controller
    pub async fn wait_for(&self, done: impl Fn(&[Recorded]) -> bool) {
        let arrived = self.0.lock().unwrap().arrived.clone();
        loop {
            let next = arrived.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            if done(&self.requests()) {
                return;
            }
            next.await;
        }
    }

    /// Puts a raw JSON object at its path (one a typed object could not express, e.g. one that does not
    /// decode).
    #[allow(dead_code)] // each test binary compiles this module; not all of them need raw objects
    pub fn insert_json(&self, v: Value) {
        let path = object_path(&v);
        self.0.lock().unwrap().objects.insert(path, v);
    }

    /// Removes the object at `path` (a deletion behind the controller's back).
    #[allow(dead_code)] // each test binary compiles this module; not all of them remove objects
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.remove(path)
    }

    /// Marks namespace `ns` as being deleted: creates in it are refused from now on.
    #[allow(dead_code)] // each test binary compiles this module; not all of them delete namespaces
    pub fn terminate_namespace(&self, ns: &str) {
        self.0.lock().unwrap().terminating.push(ns.into());
    }

    /// Puts `obj` (a typed Kubernetes object) at its path.
    pub fn insert<K: serde::Serialize + kube::Resource<DynamicType = ()>>(&self, obj: &K) {
        let v = serde_json::to_value(obj).unwrap();
        let path = object_path(&v);
        let mut s = self.0.lock().unwrap();
        s.objects.insert(path, v);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.0.lock().unwrap().requests.clear();
    }

    pub fn object(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().to_string();
        let merge_patch = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/merge-patch+json"));
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        let mut s = self.0.lock().unwrap();
        s.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        s.arrived.notify_waiters();
        s.next_rv += 1;
        let rv = s.next_rv.to_string();
        match method.as_str() {
            "GET" if is_collection(&path) => {
                let selector = query_param(&query, "labelSelector");
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(p, _)| p.rsplit_once('/').map(|(dir, _)| dir) == Some(path.as_str()))
                    .filter(|(_, o)| {
                        selector
                            .as_deref()
                            .is_none_or(|sel| matches_selector(o, sel))
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                ok(
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            "GET" => match s.objects.get(&path) {
                Some(o) => ok(o.clone()),
                None => not_found(&path),
            },
            "PATCH" => {
                let mut obj = body.unwrap_or(json!({}));
                let (target, status_only) = match path.strip_suffix("/status") {
                    Some(p) => (p.to_string(), true),
                    None => (path.clone(), false),
                };
                let existing = s.objects.get(&target).cloned();
                if merge_patch && !status_only {
                    // JSON merge patch (RFC 7386) onto what the server has; an emptied finalizer list on an
                    // object being deleted removes it, as the API server does.
                    let Some(mut cur) = existing else {
                        return not_found(&target);
                    };
                    merge(&mut cur, &obj);
                    cur["metadata"]["resourceVersion"] = json!(rv);
                    let finalizers_left = cur["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty());
                    if !cur["metadata"]["deletionTimestamp"].is_null() && !finalizers_left {
                        s.objects.remove(&target);
                    } else {
                        s.objects.insert(target, cur.clone());
                    }
                    return ok(cur);
                }
                if status_only {
                    let Some(mut cur) = existing else {
                        return not_found(&target);
                    };
                    cur["status"] = obj["status"].take();
                    cur["metadata"]["resourceVersion"] = json!(rv);
                    s.objects.insert(target, cur.clone());
                    return ok(cur);
                }
                // Server-side apply: the applied object replaces ours; status stays what the server has.
                // Kinds with a spec under /apis (workloads, the edgewire kinds) have a generation, which a
                // change of the spec bumps.
                if target.starts_with("/apis/") && obj.get("spec").is_some() {
                    let generation = match &existing {
                        None => 1,
                        Some(cur) => {
                            let g = cur["metadata"]["generation"].as_i64().unwrap_or(1);
                            if cur.get("spec") == obj.get("spec") {
                                g
                            } else {
                                g + 1
                            }
                        }
                    };
                    obj["metadata"]["generation"] = json!(generation);
                }
                if let Some(cur) = &existing {
                    obj["status"] = cur.get("status").cloned().unwrap_or(Value::Null);
                    obj["metadata"]["uid"] = cur["metadata"]["uid"].clone();
                } else {
                    obj["metadata"]["uid"] = json!(format!("uid-{}", s.next_rv));
                }
                if obj["status"].is_null() {
                    obj.as_object_mut().unwrap().remove("status");
                }
                obj["metadata"]["resourceVersion"] = json!(rv);
                s.objects.insert(target, obj.clone());
                ok(obj)
            }
            "DELETE" => {
                // An object with finalizers gets a deletionTimestamp (and a new generation) and stays.
                let has_finalizers = s.objects.get(&path).is_some_and(|o| {
                    o["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty())
                });
                if has_finalizers {
                    let o = s.objects.get_mut(&path).unwrap();
                    o["metadata"]["deletionTimestamp"] = json!("2026-11-22T00:00:00Z");
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    o["metadata"]["generation"] = json!(g + 1);
                    o["metadata"]["resourceVersion"] = json!(rv);
                    return ok(o.clone());
                }
                match s.objects.remove(&path) {
                    Some(o) => ok(o),
                    None => not_found(&path),
                }
            }
            "POST"
                if s.terminating
                    .iter()
                    .any(|ns| path.contains(&format!("/namespaces/{ns}/"))) =>
            {
                let ns = path
                    .split('/')
                    .skip_while(|p| *p != "namespaces")
                    .nth(1)
                    .unwrap_or_default();
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Forbidden", "code": 403,
                    "message": format!("unable to create new content in namespace {ns} because it is being terminated"),
                    "details": {"causes": [{"reason": "NamespaceTerminating",
                        "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}});
                Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap()
            }
            "POST" => {
                // Created, as the API server would: a later GET or PATCH of it finds it.
                let mut obj = body.unwrap_or(json!({}));
                if let Some(name) = obj["metadata"]["name"].as_str() {
                    let at = format!("{path}/{name}");
                    obj["metadata"]["resourceVersion"] = json!(rv);
                    s.objects.insert(at, obj.clone());
                }
                Response::builder()
                    .status(StatusCode::CREATED)
                    .body(Body::from(serde_json::to_vec(&obj).unwrap()))
                    .unwrap()
            }
            _ => Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .body(Body::empty())
                .unwrap(),
        }
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn ok(v: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(serde_json::to_vec(&v).unwrap()))
        .unwrap()
}

fn not_found(path: &str) -> Response<Body> {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
        "message": format!("{path} not found")});
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

/// Collections end with a plural resource name right after `namespaces/<ns>`.
fn is_collection(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    parts.len() >= 2 && parts[parts.len() - 3] == "namespaces"
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

/// The API path of a serialized object.
pub fn object_path(v: &Value) -> String {
    let api_version = v["apiVersion"].as_str().unwrap();
    let kind = v["kind"].as_str().unwrap();
    let ns = v["metadata"]["namespace"].as_str().unwrap();
    let name = v["metadata"]["name"].as_str().unwrap();
    let plural = match kind {
        "EventBroker" => "eventbrokers".to_string(),
        "MqttBroker" => "mqttbrokers".to_string(),
        "BridgeLink" => "bridgelinks".to_string(),
        k => format!("{}s", k.to_lowercase()),
    };
    let prefix = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    format!("{prefix}/namespaces/{ns}/{plural}/{name}")
}
