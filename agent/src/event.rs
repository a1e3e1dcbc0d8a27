//! CloudEvents in and out: parsing the three HTTP modes with the CloudEvents SDK, and the protocol
//! bindings each adapter writes (NATS `ce-` headers, Kafka `ce_` headers, AMQP `cloudEvents:` headers,
//! structured JSON for Redis and MQTT).

use cloudevents::event::{AttributeValue, Data};
use cloudevents::{AttributesReader, Event};
use http::HeaderMap;

/// The extension carrying `CORE_NAME`.
pub const CORENAME: &str = "corename";

pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Why a request body is not a valid CloudEvent. `Display` is the problem `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("missing required attribute `specversion`{0}")]
    MissingSpecVersion(&'static str),
    #[error("unsupported specversion {0:?}: this ingress accepts CloudEvents 1.0")]
    UnsupportedSpecVersion(String),
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Invalid(String),
}

/// How the request carried its event(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Structured,
    Batch,
}

impl Mode {
    /// The mode a request's `content-type` selects.
    pub fn of(headers: &HeaderMap) -> Mode {
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if ct.starts_with(BATCH_CONTENT_TYPE) {
            Mode::Batch
        } else if ct.starts_with("application/cloudevents") {
            Mode::Structured
        } else {
            Mode::Binary
        }
    }
}

/// Parses a binary-mode request (`ce-*` headers, body = data) with the SDK's HTTP binding.
pub fn parse_binary(headers: &HeaderMap, body: &[u8]) -> Result<Event, EventError> {
    match headers
        .get("ce-specversion")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None => {
            return Err(EventError::MissingSpecVersion(
                " (binary mode needs a `ce-specversion` header; structured mode needs content-type application/cloudevents+json)",
            ));
        }
        Some("1.0") => {}
        Some(other) => return Err(EventError::UnsupportedSpecVersion(other.to_string())),
    }
    cloudevents::binding::http::to_event(headers, body.to_vec())
        .map_err(|e| EventError::Invalid(e.to_string()))
}

/// Parses one structured-mode event.
pub fn parse_structured(body: &[u8]) -> Result<Event, EventError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    from_json_value(v)
}

/// Parses a batch: a JSON array of structured events. The outer error is for a body that is not a JSON
/// array; each element carries its own result.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Result<Event, EventError>>, EventError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    match v {
        serde_json::Value::Array(items) => Ok(items.into_iter().map(from_json_value).collect()),
        _ => Err(EventError::Invalid(
            "a batch must be a JSON array of CloudEvents".into(),
        )),
    }
}

fn from_json_value(v: serde_json::Value) -> Result<Event, EventError> {
    let obj = v.as_object().ok_or_else(|| {
        EventError::Invalid("a structured CloudEvent must be a JSON object".into())
    })?;
    match obj.get("specversion") {
        None => return Err(EventError::MissingSpecVersion("")),
        Some(serde_json::Value::String(s)) if s == "1.0" => {}
        Some(other) => {
            let s = other
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| other.to_string());
            return Err(EventError::UnsupportedSpecVersion(s));
        }
    }
    for required in ["id", "source", "type"] {
        match obj.get(required) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => {}
            Some(_) => {
                return Err(EventError::Invalid(format!(
                    "attribute `{required}` must be a non-empty string"
                )));
            }
            None => {
                return Err(EventError::Invalid(format!(
                    "missing required attribute `{required}`"
                )));
            }
        }
    }
    serde_json::from_value(v).map_err(|e| EventError::Invalid(e.to_string()))
}

/// Sets the `corename` extension to the configured core name (the seed: "included in every event
/// envelope"); a `corename` the producer sent is replaced, so subscribers can trust it.
pub fn stamp_corename(event: &mut Event, core_name: &str) {
    event.set_extension(CORENAME, core_name);
}

/// The `corename` extension as a string.
pub fn corename(event: &Event) -> Option<String> {
    event.extension(CORENAME).map(|v| v.to_string())
}

/// The event's data as bytes, exactly as received in binary mode; JSON data serialized.
pub fn data_bytes(event: &Event) -> Vec<u8> {
    match event.data() {
        None => Vec::new(),
        Some(Data::Binary(b)) => b.clone(),
        Some(Data::String(s)) => s.as_bytes().to_vec(),
        Some(Data::Json(v)) => serde_json::to_vec(v).unwrap_or_default(),
    }
}

/// The length of [`data_bytes`], without copying binary or text data.
pub fn data_len(event: &Event) -> usize {
    match event.data() {
        None => 0,
        Some(Data::Binary(b)) => b.len(),
        Some(Data::String(s)) => s.len(),
        Some(Data::Json(v)) => serde_json::to_vec(v).map(|v| v.len()).unwrap_or(0),
    }
}

/// Attribute/extension name and value pairs of binary mode, `datacontenttype` excluded (it travels as
/// the protocol's content type).
pub fn binary_attributes(event: &Event) -> Vec<(String, String)> {
    event
        .iter()
        .filter(|(name, _)| *name != "datacontenttype")
        .map(|(name, value)| (name.to_string(), attribute_string(&value)))
        .collect()
}

fn attribute_string(v: &AttributeValue<'_>) -> String {
    v.to_string()
}

/// Structured-mode JSON of the whole event (Redis, MQTT).
///
/// Binary-mode data arrives as bytes; per the JSON event format, JSON data becomes `data` as JSON and
/// text becomes a string, so only opaque bytes end up in `data_base64`.
pub fn structured_json(event: &Event) -> Vec<u8> {
    if let Some(Data::Binary(bytes)) = event.data() {
        let ct = event
            .datacontenttype()
            .unwrap_or("application/json")
            .to_ascii_lowercase();
        let is_json = ct.starts_with("application/json")
            || ct.starts_with("text/json")
            || ct.contains("+json");
        let converted = if is_json {
            serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .map(Data::Json)
        } else if ct.starts_with("text/") || ct.contains("xml") {
            std::str::from_utf8(bytes)
                .ok()
                .map(|s| Data::String(s.to_string()))
        } else {
            None
        };
        if let Some(data) = converted {
            let mut ev = event.clone();
            ev.set_data_unchecked(data);
            return serde_json::to_vec(&ev).unwrap_or_default();
        }
    }
    serde_json::to_vec(event).unwrap_or_default()
}

/// An upper bound of `structured_json(event).len()` that serializes nothing, where one is cheap: `None`
/// for JSON data (its length is known only by serializing it). Every attribute value becomes a JSON
/// string of at most 6 bytes per byte of its text (`\u00XX` escapes) or a number or boolean as long as
/// its text; text data likewise; binary data becomes base64 (4/3), text (escaped, 6×) or re-serialized
/// JSON, where whitespace and escapes only shrink and a number token of n bytes grows to at most 24
/// bytes (a float prints in at most 24): 24× bounds them all.
pub fn structured_json_len_at_most(event: &Event) -> Option<usize> {
    let data = match event.data() {
        None => 0,
        Some(Data::Binary(b)) => 24 * b.len(),
        Some(Data::String(s)) => 6 * s.len(),
        Some(Data::Json(_)) => return None,
    };
    let attributes: usize = event
        .iter()
        .map(|(name, value)| name.len() + 6 * value.to_string().len() + 8)
        .sum();
    Some(2 + attributes + "\"data_base64\":\"\",".len() + data)
}

/// NATS binary mode: `ce-<attr>` headers plus `content-type`.
pub fn nats_headers(event: &Event) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = binary_attributes(event)
        .into_iter()
        .map(|(k, v)| (format!("ce-{k}"), v))
        .collect();
    if let Some(ct) = event.datacontenttype() {
        h.push(("content-type".into(), ct.to_string()));
    }
    h
}

/// Kafka binary mode: `ce_<attr>` headers plus `content-type`.
pub fn kafka_headers(event: &Event) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = binary_attributes(event)
        .into_iter()
        .map(|(k, v)| (format!("ce_{k}"), v))
        .collect();
    if let Some(ct) = event.datacontenttype() {
        h.push(("content-type".into(), ct.to_string()));
    }
    h
}

/// AMQP: the AMQP binding's application-property names `cloudEvents:<attr>`; content type goes in the
/// message's content-type property.
pub fn amqp_headers(event: &Event) -> Vec<(String, String)> {
    binary_attributes(event)
        .into_iter()
        .map(|(k, v)| (format!("cloudEvents:{k}"), v))
        .collect()
}

/// MQTT topic of an event type: `.` becomes `/`.
pub fn mqtt_topic(event_type: &str) -> String {
    event_type.replace('.', "/")
}

/// Why an event type cannot be a NATS subject (wildcards, whitespace, control characters, empty tokens),
/// or is one the publisher must not reach: a first token starting with `$` is the server's own subject
/// space (`$JS.API.>` manages JetStream, `$KV.>` and `$O.>` are key-value and object stores, `$SYS.>`
/// the system account) and one starting with `_` holds request replies (`_INBOX.>`, `_R_.>`). An event
/// type there would let any HTTP client delete a stream or answer someone else's request.
pub fn nats_subject_problem(t: &str) -> Option<String> {
    if t.is_empty() || t.split('.').any(|tok| tok.is_empty()) {
        return Some(format!(
            "type {t:?} is not a valid NATS subject (empty token)"
        ));
    }
    if t.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
    {
        return Some(format!(
            "type {t:?} is not a valid NATS subject (whitespace, control character or wildcard)"
        ));
    }
    if t.starts_with(['$', '_']) {
        return Some(format!(
            "type {t:?} is outside the publisher's subject space: subjects starting with `$` ($JS, $KV, $SYS, ...) belong to the NATS server and those starting with `_` (_INBOX, ...) to request replies"
        ));
    }
    None
}

/// Why an event type cannot be an MQTT topic name: wildcards, NUL, too long, or a `$` topic (`$SYS/...`),
/// which MQTT reserves for the broker.
pub fn mqtt_topic_problem(t: &str) -> Option<String> {
    if t.is_empty() || t.contains(['+', '#', '\0']) {
        return Some(format!(
            "type {t:?} cannot be an MQTT topic (wildcard characters)"
        ));
    }
    if t.starts_with('$') {
        return Some(format!(
            "type {t:?} cannot be an MQTT topic: topics starting with `$` belong to the broker"
        ));
    }
    if t.len() > 65535 {
        return Some("type is too long for an MQTT topic".into());
    }
    None
}

/// Why an attribute or extension name breaks the CloudEvents rule ("lower-case letters `a`-`z` or digits
/// `0`-`9` from the ASCII character set"). Every protocol binding turns the names into header names
/// (`ce-<name>`, `ce_<name>`, `cloudEvents:<name>`), so this rule is also what keeps a space, a `:` or a
/// line break out of a NATS or AMQP header name.
pub fn attribute_name_problem(event: &Event) -> Option<String> {
    event.iter().find_map(|(name, _)| {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        (!ok).then(|| {
            format!(
                "attribute name {name:?} is not a CloudEvents name (lower-case ASCII letters and digits only)"
            )
        })
    })
}

/// Why a header value cannot travel in a NATS header: NATS headers are lines of text, so a CR or LF
/// would end the header (the client library refuses it with a panic), and other control characters are
/// not text. A tab is allowed, as in HTTP.
fn nats_header_value_problem(v: &str) -> bool {
    v.chars().any(|c| c.is_control() && c != '\t')
}

/// Why the event's attributes cannot be NATS headers (`ce-<name>: <value>`), naming the first attribute
/// that cannot; `None` when all can.
pub fn nats_headers_problem(event: &Event) -> Option<String> {
    nats_headers(event).into_iter().find_map(|(k, v)| {
        let name_ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !name_ok {
            return Some(format!(
                "header name {k:?} cannot be a NATS header name (printable ASCII, no space or ':')"
            ));
        }
        nats_header_value_problem(&v).then(|| {
            format!(
                "the value of {k} cannot travel in a NATS header: it holds a line break or another control character"
            )
        })
    })
}

/// The longest AMQP 0-9-1 short string: message id, content type, header (field-table) names, routing key.
pub const AMQP_SHORT_STRING_MAX: usize = 255;

/// Why the event cannot be an AMQP 0-9-1 message: the id (message-id property), the content type and the
/// header names (`cloudEvents:<name>`) are short strings of at most 255 bytes.
pub fn amqp_problem(event: &Event) -> Option<String> {
    let long = |what: &str, v: &str| {
        (v.len() > AMQP_SHORT_STRING_MAX).then(|| {
            format!(
                "{what} is {} bytes; AMQP 0-9-1 carries it as a short string of at most {AMQP_SHORT_STRING_MAX}",
                v.len()
            )
        })
    };
    long("the type (routing key)", event.ty())
        .or_else(|| long("the id (message-id property)", event.id()))
        .or_else(|| {
            event
                .datacontenttype()
                .and_then(|ct| long("datacontenttype (content-type property)", ct))
        })
        .or_else(|| {
            amqp_headers(event)
                .into_iter()
                .find_map(|(k, _)| long(&format!("header name {:?}", truncate(&k, 40)), &k))
        })
}

/// At most `n` characters of `s`, for quoting a long value in a message.
fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn binary_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("ce-specversion", HeaderValue::from_static("1.0"));
        h.insert("ce-id", HeaderValue::from_static("42"));
        h.insert("ce-source", HeaderValue::from_static("/nodes/7"));
        h.insert("ce-type", HeaderValue::from_static("edge.node.registered"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h
    }

    #[test]
    fn binary_mode_keeps_the_body_bytes() {
        let body = br#"{"z":1,  "a":2}"#;
        let e = parse_binary(&binary_headers(), body).unwrap();
        assert_eq!(e.ty(), "edge.node.registered");
        assert_eq!(
            data_bytes(&e),
            body.to_vec(),
            "binary data must pass unchanged"
        );
    }

    #[test]
    fn binary_mode_without_specversion_names_it() {
        let mut h = binary_headers();
        h.remove("ce-specversion");
        let e = parse_binary(&h, b"{}").unwrap_err();
        assert!(matches!(e, EventError::MissingSpecVersion(_)));
        assert!(e.to_string().contains("specversion"));
    }

    #[test]
    fn structured_mode_errors() {
        assert!(matches!(
            parse_structured(b"not json"),
            Err(EventError::NotJson(_))
        ));
        let e = parse_structured(br#"{"id":"1","source":"/s","type":"edge.node.x"}"#).unwrap_err();
        assert_eq!(e, EventError::MissingSpecVersion(""));
        assert_eq!(e.to_string(), "missing required attribute `specversion`");
        let e = parse_structured(br#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#)
            .unwrap_err();
        assert!(matches!(e, EventError::UnsupportedSpecVersion(_)));
        let e = parse_structured(br#"{"specversion":"1.0","source":"/s","type":"t"}"#).unwrap_err();
        assert!(e.to_string().contains("`id`"), "{e}");
        assert!(parse_structured(b"[1]").is_err());
    }

    #[test]
    fn batch_reports_each_element() {
        let items = parse_batch(
            br#"[{"specversion":"1.0","id":"1","source":"/s","type":"edge.node.a"},{"id":"2"}]"#,
        )
        .unwrap();
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
        assert!(parse_batch(br#"{"specversion":"1.0"}"#).is_err());
    }

    #[test]
    fn bindings_name_type_and_corename() {
        let mut e = parse_binary(&binary_headers(), b"{}").unwrap();
        stamp_corename(&mut e, "prod-us");
        let nats = nats_headers(&e);
        assert!(nats.contains(&("ce-type".into(), "edge.node.registered".into())));
        assert!(nats.contains(&("ce-corename".into(), "prod-us".into())));
        assert!(nats.contains(&("content-type".into(), "application/json".into())));
        assert!(!nats.iter().any(|(k, _)| k == "ce-datacontenttype"));
        let kafka = kafka_headers(&e);
        assert!(kafka.contains(&("ce_type".into(), "edge.node.registered".into())));
        assert!(kafka.contains(&("ce_corename".into(), "prod-us".into())));
        let amqp = amqp_headers(&e);
        assert!(amqp.contains(&("cloudEvents:type".into(), "edge.node.registered".into())));
        assert!(amqp.contains(&("cloudEvents:corename".into(), "prod-us".into())));
        let json: serde_json::Value = serde_json::from_slice(&structured_json(&e)).unwrap();
        assert_eq!(json["corename"], "prod-us");
        assert_eq!(
            json["data"],
            serde_json::json!({}),
            "binary JSON data becomes JSON `data`"
        );
        assert_eq!(json["type"], "edge.node.registered");
    }

    #[test]
    fn corename_is_overwritten_with_the_configured_one() {
        let mut e = parse_structured(
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","corename":"spoofed"}"#,
        )
        .unwrap();
        stamp_corename(&mut e, "prod-us");
        assert_eq!(corename(&e).as_deref(), Some("prod-us"));
    }

    #[test]
    fn subject_and_topic_rules() {
        assert_eq!(mqtt_topic("edge.node.registered"), "edge/node/registered");
        assert!(nats_subject_problem("edge.node.registered").is_none());
        assert!(nats_subject_problem("edge.*.x").is_some());
        assert!(nats_subject_problem("edge..x").is_some());
        assert!(mqtt_topic_problem("edge.node.#").is_some());
    }

    /// A binary-mode event with `content-type` `ct` (none: no header) and `body` as its data.
    fn binary_with(ct: Option<&str>, body: &[u8]) -> Event {
        let mut h = binary_headers();
        h.remove("content-type");
        if let Some(ct) = ct {
            h.insert("content-type", HeaderValue::from_str(ct).unwrap());
        }
        parse_binary(&h, body).unwrap()
    }

    fn structured(json: serde_json::Value) -> Result<Event, EventError> {
        parse_structured(&serde_json::to_vec(&json).unwrap())
    }

    /// A valid structured event with `extra` merged into it.
    fn structured_with(extra: serde_json::Value) -> Event {
        let mut v = serde_json::json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "edge.node.x"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        structured(v).unwrap()
    }

    #[test]
    fn the_content_type_selects_the_mode() {
        let mode = |ct: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_str(ct).unwrap(),
                );
            }
            Mode::of(&h)
        };
        assert_eq!(mode(None), Mode::Binary);
        assert_eq!(mode(Some("application/json")), Mode::Binary);
        assert_eq!(mode(Some("application/cloudevents+json")), Mode::Structured);
        assert_eq!(
            mode(Some(" Application/CloudEvents+JSON; charset=utf-8")),
            Mode::Structured
        );
        assert_eq!(
            mode(Some("application/cloudevents-batch+json")),
            Mode::Batch
        );
        assert_eq!(
            mode(Some("APPLICATION/CLOUDEVENTS-BATCH+JSON")),
            Mode::Batch
        );
    }

    #[test]
    fn binary_mode_refusals_name_the_problem() {
        let mut h = binary_headers();
        h.insert("ce-specversion", HeaderValue::from_static("0.3"));
        assert_eq!(
            parse_binary(&h, b"{}").unwrap_err(),
            EventError::UnsupportedSpecVersion("0.3".into())
        );
        let mut h = binary_headers();
        h.remove("ce-specversion");
        let e = parse_binary(&h, b"{}").unwrap_err();
        assert!(e.to_string().contains("`ce-specversion` header"), "{e}");
        let mut h = binary_headers();
        h.remove("ce-id");
        assert!(matches!(
            parse_binary(&h, b"{}"),
            Err(EventError::Invalid(_))
        ));
    }

    #[test]
    fn structured_mode_checks_each_required_attribute() {
        let e = structured(serde_json::json!("a string")).unwrap_err();
        assert_eq!(
            e,
            EventError::Invalid("a structured CloudEvent must be a JSON object".into())
        );
        let e = structured(
            serde_json::json!({"specversion": 1, "id": "1", "source": "/s", "type": "t"}),
        )
        .unwrap_err();
        assert_eq!(e, EventError::UnsupportedSpecVersion("1".into()));
        for attr in ["id", "source", "type"] {
            let mut v =
                serde_json::json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
            v[attr] = serde_json::json!("");
            assert_eq!(
                structured(v.clone()).unwrap_err(),
                EventError::Invalid(format!("attribute `{attr}` must be a non-empty string"))
            );
            v[attr] = serde_json::json!(7);
            assert_eq!(
                structured(v.clone()).unwrap_err(),
                EventError::Invalid(format!("attribute `{attr}` must be a non-empty string"))
            );
            v.as_object_mut().unwrap().remove(attr);
            assert_eq!(
                structured(v).unwrap_err(),
                EventError::Invalid(format!("missing required attribute `{attr}`"))
            );
        }
        let e = structured_with(serde_json::json!({"data": {"k": 1}}));
        assert_eq!(e.id(), "1");
        assert_eq!(e.source().as_str(), "/s");
        assert_eq!(e.ty(), "edge.node.x");
        assert_eq!(data_bytes(&e), br#"{"k":1}"#);
    }

    #[test]
    fn a_batch_is_an_array_of_structured_events() {
        assert_eq!(
            parse_batch(br#"{"specversion":"1.0"}"#).unwrap_err(),
            EventError::Invalid("a batch must be a JSON array of CloudEvents".into())
        );
        assert!(matches!(parse_batch(b"[{"), Err(EventError::NotJson(_))));
        let items = parse_batch(
            br#"[{"specversion":"1.0","id":"a","source":"/s","type":"t"},{"specversion":"1.0","id":"b","source":"/s","type":"t"},7]"#,
        )
        .unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().id(), "a");
        assert_eq!(items[1].as_ref().unwrap().id(), "b");
        assert!(matches!(items[2], Err(EventError::Invalid(_))));
        assert!(parse_batch(b"[]").unwrap().is_empty());
    }

    #[test]
    fn data_bytes_and_length_of_each_kind_of_data() {
        let none = structured_with(serde_json::json!({}));
        assert_eq!((data_bytes(&none), data_len(&none)), (vec![], 0));
        let bin = binary_with(Some("application/octet-stream"), b"\x00\x01raw");
        assert_eq!(
            (data_bytes(&bin), data_len(&bin)),
            (b"\x00\x01raw".to_vec(), 5)
        );
        let text =
            structured_with(serde_json::json!({"datacontenttype": "text/plain", "data": "hello"}));
        assert_eq!((data_bytes(&text), data_len(&text)), (b"hello".to_vec(), 5));
        let json = structured_with(serde_json::json!({"data": [1, 2]}));
        assert_eq!((data_bytes(&json), data_len(&json)), (b"[1,2]".to_vec(), 5));
    }

    #[test]
    fn corename_is_none_until_stamped() {
        let mut e = structured_with(serde_json::json!({}));
        assert_eq!(corename(&e), None);
        stamp_corename(&mut e, "prod-us");
        assert_eq!(corename(&e).as_deref(), Some("prod-us"));
    }

    #[test]
    fn each_binding_carries_every_attribute_under_its_prefix() {
        let mut e = binary_with(Some("text/plain"), b"hi");
        stamp_corename(&mut e, "prod-us");
        let mut attrs = binary_attributes(&e);
        attrs.sort();
        let want: Vec<(String, String)> = [
            ("corename", "prod-us"),
            ("id", "42"),
            ("source", "/nodes/7"),
            ("specversion", "1.0"),
            ("type", "edge.node.registered"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(attrs, want, "datacontenttype travels as the content type");
        let with = |prefix: &str, ct: bool| {
            let mut v: Vec<(String, String)> = want
                .iter()
                .map(|(k, x)| (format!("{prefix}{k}"), x.clone()))
                .collect();
            if ct {
                v.push(("content-type".into(), "text/plain".into()));
            }
            v.sort();
            v
        };
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        assert_eq!(sorted(nats_headers(&e)), with("ce-", true));
        assert_eq!(sorted(kafka_headers(&e)), with("ce_", true));
        assert_eq!(sorted(amqp_headers(&e)), with("cloudEvents:", false));
        let no_ct = binary_with(None, b"");
        assert!(
            !nats_headers(&no_ct)
                .iter()
                .any(|(k, _)| k == "content-type")
        );
        assert!(
            !kafka_headers(&no_ct)
                .iter()
                .any(|(k, _)| k == "content-type")
        );
    }

    #[test]
    fn structured_json_keeps_json_and_text_readable() {
        let data_of = |ct: Option<&str>, body: &[u8]| {
            let v: serde_json::Value =
                serde_json::from_slice(&structured_json(&binary_with(ct, body))).unwrap();
            (v.get("data").cloned(), v.get("data_base64").cloned())
        };
        let obj = serde_json::json!({"a": 1});
        for ct in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("text/json"),
            Some("application/vnd.edge+json"),
        ] {
            assert_eq!(
                data_of(ct, br#"{"a":1}"#),
                (Some(obj.clone()), None),
                "{ct:?}"
            );
        }
        for ct in ["text/plain", "application/xml"] {
            assert_eq!(
                data_of(Some(ct), b"<a>1</a>"),
                (Some(serde_json::json!("<a>1</a>")), None),
                "{ct}"
            );
        }
        // Bytes that are not what the content type says, and opaque bytes, stay base64.
        assert_eq!(data_of(Some("application/json"), b"not json").0, None);
        assert_eq!(
            data_of(Some("application/json"), b"not json").1,
            Some(serde_json::json!("bm90IGpzb24="))
        );
        assert_eq!(data_of(Some("text/plain"), b"\xff\xfe").0, None);
        assert_eq!(
            data_of(Some("application/octet-stream"), b"ab").1,
            Some(serde_json::json!("YWI="))
        );
        let v: serde_json::Value = serde_json::from_slice(&structured_json(&binary_with(
            Some("application/json"),
            b"{}",
        )))
        .unwrap();
        assert_eq!(v["id"], "42");
        assert_eq!(v["type"], "edge.node.registered");
        let text = structured_with(serde_json::json!({"data": "x"}));
        let v: serde_json::Value = serde_json::from_slice(&structured_json(&text)).unwrap();
        assert_eq!(v["data"], "x");
        assert_eq!(v["id"], "1");
    }

    #[test]
    fn nats_subject_rules_each_refusal() {
        for ok in ["edge.node.registered", "a", "a.$b", "a._b", "a-b_c"] {
            assert_eq!(nats_subject_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("", "empty token"),
            ("a..b", "empty token"),
            (".a", "empty token"),
            ("a.", "empty token"),
            ("a b", "wildcard"),
            ("a\tb", "wildcard"),
            ("a\u{1}b", "wildcard"),
            ("a.*", "wildcard"),
            ("a.>", "wildcard"),
            ("$JS.API.STREAM.DELETE.x", "belong to the NATS server"),
            ("_INBOX.x", "request replies"),
        ] {
            let p = nats_subject_problem(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(p.contains(why), "{bad:?}: {p}");
        }
    }

    #[test]
    fn mqtt_topic_rules_each_refusal() {
        let longest = "a".repeat(65535);
        for ok in ["edge/node", "a.b", "a$", longest.as_str()] {
            assert_eq!(mqtt_topic_problem(ok), None, "{}", &ok[..ok.len().min(20)]);
        }
        for (bad, why) in [
            ("", "wildcard"),
            ("a+b", "wildcard"),
            ("a#", "wildcard"),
            ("a\0b", "wildcard"),
            ("$SYS/x", "belong to the broker"),
        ] {
            let p = mqtt_topic_problem(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(p.contains(why), "{bad:?}: {p}");
        }
        assert_eq!(
            mqtt_topic_problem(&"a".repeat(65536)).as_deref(),
            Some("type is too long for an MQTT topic")
        );
    }

    #[test]
    fn attribute_names_are_lower_case_letters_and_digits() {
        for ok in ["x", "ext1", "a9b"] {
            let e = structured_with(serde_json::json!({ok: "v"}));
            assert_eq!(attribute_name_problem(&e), None, "{ok}");
        }
        for bad in ["Ext", "with-dash", "a b", "a:b", "é"] {
            let e = structured_with(serde_json::json!({bad: "v"}));
            let p = attribute_name_problem(&e).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(p.contains(&format!("{bad:?}")), "{p}");
        }
    }

    #[test]
    fn nats_headers_refuse_control_characters_but_a_tab() {
        assert_eq!(
            nats_headers_problem(&structured_with(serde_json::json!({}))),
            None
        );
        let e = structured_with(serde_json::json!({"x": "a\tb c"}));
        assert_eq!(nats_headers_problem(&e), None, "a tab and a space are text");
        for v in ["a\r\nInjected: 1", "a\nb", "a\u{1}b", "a\u{7f}b"] {
            let e = structured_with(serde_json::json!({"x": v}));
            let p = nats_headers_problem(&e).unwrap_or_else(|| panic!("{v:?} passed"));
            assert!(p.contains("the value of ce-x"), "{p}");
        }
        for name in ["a:b", "a b", "é"] {
            let e = structured_with(serde_json::json!({name: "v"}));
            let p = nats_headers_problem(&e).unwrap_or_else(|| panic!("{name:?} passed"));
            assert!(p.contains("cannot be a NATS header name"), "{p}");
        }
    }

    #[test]
    fn amqp_short_strings_are_at_most_255_bytes() {
        let fits = "t".repeat(AMQP_SHORT_STRING_MAX);
        let over = "t".repeat(AMQP_SHORT_STRING_MAX + 1);
        let e = structured_with;
        assert_eq!(
            amqp_problem(&e(serde_json::json!({"type": fits, "id": fits}))),
            None
        );
        let p = amqp_problem(&e(serde_json::json!({"type": over}))).unwrap();
        assert!(p.starts_with("the type (routing key) is 256 bytes"), "{p}");
        let p = amqp_problem(&e(serde_json::json!({"id": over}))).unwrap();
        assert!(
            p.starts_with("the id (message-id property) is 256 bytes"),
            "{p}"
        );
        let ct = format!("application/{}", "x".repeat(250));
        let p = amqp_problem(&e(serde_json::json!({"datacontenttype": ct, "data": "x"}))).unwrap();
        assert!(
            p.starts_with("datacontenttype (content-type property)"),
            "{p}"
        );
        // `cloudEvents:` (12 bytes) and the name: 243 fits, 244 does not.
        let name_fits = "n".repeat(AMQP_SHORT_STRING_MAX - 12);
        assert_eq!(amqp_problem(&e(serde_json::json!({name_fits: "v"}))), None);
        let name_over = "n".repeat(AMQP_SHORT_STRING_MAX - 11);
        let p = amqp_problem(&e(serde_json::json!({name_over: "v"}))).unwrap();
        let quoted = format!(
            "header name \"cloudEvents:{}...\" is 256 bytes",
            "n".repeat(28)
        );
        assert!(p.starts_with(&quoted), "{p}");
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("abcdef", 3), "abc...");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("ab", 3), "ab");
        assert_eq!(truncate("äöüß", 2), "äö...");
    }

    mod bound {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The bound the MQTT adapter checks its packet limit with holds for any binary-mode event:
            /// numbers that grow when re-serialized (`1e20`), control characters escaped 6×, text, bytes.
            #[test]
            fn structured_json_len_at_most_bounds_the_json(
                data in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..200),
                    prop::collection::vec(
                        prop::sample::select(vec!["1e20", "1E300", "-1e-7", "0", "[", "]", ",", "\"\\u0001\"", "{\"a\":", "1e15"]),
                        0..40,
                    ).prop_map(|t| t.concat().into_bytes()),
                    prop::collection::vec(0u8..0x20, 0..100),
                ],
                ct in prop::sample::select(vec!["application/json", "text/plain", "application/octet-stream", "application/xml"]),
                subject in "[ -~]{0,40}",
            ) {
                let mut h = binary_headers();
                h.insert("content-type", HeaderValue::from_str(ct).unwrap());
                h.insert("ce-subject", HeaderValue::from_str(&subject).unwrap());
                let mut e = parse_binary(&h, &data).unwrap();
                stamp_corename(&mut e, "core\u{1}");
                let bound = structured_json_len_at_most(&e).unwrap();
                let json = structured_json(&e);
                prop_assert!(json.len() <= bound, "{} > {bound}: {}", json.len(), String::from_utf8_lossy(&json));
            }
        }
    }

    /// Each term of the bound where it is the one that matters: the data's (base64 of 10,000 bytes, 4/3 of
    /// them, over any slack the attributes leave), an attribute value that escapes 6x, and attributes with
    /// empty values (each still costs its name, quotes and separators).
    #[test]
    fn each_term_of_the_bound_holds_where_it_dominates() {
        let mut h = binary_headers();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        let big = parse_binary(&h, &[0xffu8; 10_000]).unwrap();
        let escaped = {
            let mut e = parse_binary(&binary_headers(), b"").unwrap();
            stamp_corename(&mut e, &"\u{1}".repeat(1_000));
            e
        };
        let mut empty_values =
            String::from(r#"{"specversion":"1.0","id":"1","source":"/","type":"t""#);
        for i in 0..40 {
            empty_values.push_str(&format!(r#","extension{i:011}":"""#));
        }
        empty_values.push('}');
        let empty_values = parse_structured(empty_values.as_bytes()).unwrap();
        for e in [&big, &escaped, &empty_values] {
            let json = structured_json(e);
            let bound = structured_json_len_at_most(e).unwrap();
            assert!(json.len() <= bound, "{} > {bound}", json.len());
        }
    }

    /// Text data: a byte may escape to six (`\u0001`), so the text term is 6x its length; for plain text the
    /// whole bound stays within six times the JSON.
    #[test]
    fn the_text_data_term_bounds_escapes_and_stays_close_for_plain_text() {
        let text = |data: &str| {
            let json = serde_json::json!({
                "specversion": "1.0", "id": "1", "source": "/", "type": "t",
                "datacontenttype": "text/plain", "data": data,
            });
            let e = parse_structured(json.to_string().as_bytes()).unwrap();
            assert!(matches!(e.data(), Some(Data::String(_))), "{e:?}");
            e
        };
        for e in [text(&"\u{1}".repeat(1_000)), text(&"a".repeat(1_000))] {
            let (json, bound) = (
                structured_json(&e),
                structured_json_len_at_most(&e).unwrap(),
            );
            assert!(
                json.len() <= bound && bound <= 6 * json.len(),
                "{} vs {bound}",
                json.len()
            );
        }
    }

    /// The bound is worth having only if it is close enough for the cheap path to be taken: for the
    /// smallest event (one-character values, no data) it is about twice the JSON, and stays within 3x.
    #[test]
    fn the_bound_of_the_smallest_event_is_within_three_times_its_json() {
        let e =
            parse_structured(br#"{"specversion":"1.0","id":"1","source":"/","type":"t"}"#).unwrap();
        let (json, bound) = (
            structured_json(&e),
            structured_json_len_at_most(&e).unwrap(),
        );
        assert!(
            json.len() <= bound && bound <= 3 * json.len(),
            "{} vs {bound}: {}",
            json.len(),
            String::from_utf8_lossy(&json)
        );
    }

    #[test]
    fn a_number_that_grows_stays_within_the_bound() {
        // Short number tokens that re-serialize longer: `1e15` is written out in full.
        let e = parse_binary(&binary_headers(), b"[1e15,1e15,1e15]").unwrap();
        let json = structured_json(&e);
        assert!(json.len() <= structured_json_len_at_most(&e).unwrap());
        let structured = parse_structured(
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(
            structured_json_len_at_most(&structured),
            None,
            "JSON data has no cheap bound"
        );
    }
}
