//! Entry points for fuzzing: each takes arbitrary bytes, drives one parser that user input reaches, and
//! panics only when an invariant breaks. The cargo-fuzz targets in `fuzz/` call them under libFuzzer;
//! `agent/tests/fuzz_targets.rs` runs them on the seed corpora in `fuzz/corpus/` and on generated input
//! in every `cargo test`, so the same checks run without nightly.
//!
//! - [`cloudevent`]: the three HTTP modes of the CloudEvents decoder, then everything the ingress and the
//!   adapters do with an accepted event — in particular, an event the adapter checks let through must not
//!   make async-nats's header parser or lapin's short strings panic (issue 14 items 9 and 10).
//! - [`pattern`]: topic-pattern parsing and its translations round-trip.
//! - [`env`]: the publisher's environment parser.
//! - [`yaml`]: the bridge's BridgeLink parser and the publisher's EventBroker file parser.

use std::collections::HashMap;
use std::path::Path;

use cloudevents::{AttributesReader, Event};
use edgewire_api::v1alpha1::{EventBroker, Token, TopicPattern};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::event::{self, EventError};

/// The first byte picks the mode. Binary mode: `name: value` lines up to an empty line, then the body.
pub fn cloudevent(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
                Some(i) => (&rest[..i], &rest[i + 2..]),
                None => (rest, &[][..]),
            };
            let mut headers = HeaderMap::new();
            for line in head.split(|b| *b == b'\n') {
                let Some(colon) = line.iter().position(|b| *b == b':') else {
                    continue;
                };
                let value = line[colon + 1..].trim_ascii();
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(&line[..colon]),
                    HeaderValue::from_bytes(value),
                ) {
                    headers.append(n, v);
                }
            }
            accepted(event::parse_binary(&headers, body));
        }
        1 => accepted(event::parse_structured(rest)),
        _ => {
            if let Ok(items) = event::parse_batch(rest) {
                for item in items {
                    accepted(item);
                }
            }
        }
    }
}

/// What the ingress and the adapters do with a decoded event, with the invariants between the checks and
/// the libraries that panic.
fn accepted(r: Result<Event, EventError>) {
    let Ok(mut ev) = r else {
        return;
    };
    let names_ok = event::attribute_name_problem(&ev).is_none();
    event::stamp_corename(&mut ev, "fuzz");
    assert_eq!(event::data_len(&ev), event::data_bytes(&ev).len());
    let _ = event::structured_json(&ev);
    let _ = event::kafka_headers(&ev);
    let _ = event::nats_subject_problem(ev.ty());
    let _ = event::mqtt_topic_problem(ev.ty());
    let _ = event::mqtt_topic(ev.ty());
    if !names_ok {
        return;
    }
    if event::nats_headers_problem(&ev).is_none() {
        // The NATS adapter's headers: async-nats's `insert(&str, &str)` asserts on what it cannot carry.
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in event::nats_headers(&ev) {
            h.insert(k.as_str(), v.as_str());
        }
    }
    if event::amqp_problem(&ev).is_none() {
        // The AMQP adapter's short strings: lapin's `From<&str>` panics over 255 bytes.
        use lapin::types::ShortString;
        for (k, _) in event::amqp_headers(&ev) {
            let _ = ShortString::from(k);
        }
        let _ = ShortString::from(ev.id());
        let _ = ShortString::from(ev.ty());
        if let Some(ct) = ev.datacontenttype() {
            let _ = ShortString::from(ct);
        }
    }
}

/// A pattern from the input's text; for a valid one: it re-parses to itself, its MQTT and NATS forms
/// translate back to it, and a topic made from it (its wildcards filled with tokens from the input) is
/// matched with captures that substitute back into the same topic, in both separators.
pub fn pattern(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, fill) = text.split_once('\n').unwrap_or((&text, "x.y"));
    let Ok(p) = TopicPattern::parse(pattern) else {
        return;
    };
    assert_eq!(TopicPattern::parse(p.as_str()).as_ref(), Ok(&p));
    let from_mqtt = p.to_mqtt().replace('/', ".").replace('+', "*");
    assert_eq!(
        TopicPattern::parse(&from_mqtt).as_ref(),
        Ok(&p),
        "MQTT form"
    );
    let from_nats = p.to_nats().replace('>', "#");
    assert_eq!(
        TopicPattern::parse(&from_nats).as_ref(),
        Ok(&p),
        "NATS form"
    );
    assert_eq!(p.to_amqp(), p.as_str());
    // Tokens to fill wildcards with: non-empty, without separators or wildcard characters.
    let mut fill: Vec<String> = fill
        .split(['.', '/', '*', '#', '+', '>'])
        .filter(|t| !t.is_empty() && !t.chars().any(char::is_whitespace))
        .map(str::to_string)
        .collect();
    if fill.is_empty() {
        fill.push("x".into());
    }
    let mut next = fill.iter().cycle();
    let mut topic = Vec::new();
    for t in p.tokens() {
        match t {
            Token::Literal(l) => topic.push(l.clone()),
            Token::One => topic.push(next.next().cloned().unwrap_or_default()),
            Token::Rest => topic.extend(fill.iter().take(2).cloned()),
        }
    }
    let caps = p
        .captures(&topic)
        .unwrap_or_else(|| panic!("{pattern:?} does not match {topic:?}, made from it"));
    assert_eq!(p.substitute(&caps).as_ref(), Some(&topic));
    assert_eq!(p.captures_dotted(&topic.join(".")).as_ref(), Some(&caps));
    assert_eq!(p.captures_mqtt(&topic.join("/")).as_ref(), Some(&caps));
}

/// `NAME=value` lines as the publisher's environment.
pub fn env(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vars: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |k: &str| vars.get(k).cloned();
    if let Err(e) = crate::publisher::config::env::from_lookup(lookup) {
        let _ = e.to_string();
    }
    let _ = crate::publisher::config::env::listen_addr(lookup);
}

/// The text as a BridgeLink document (the bridge) and as an EventBroker (the publisher's `--config`).
pub fn yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let nowhere = Path::new("/nonexistent/edgewire-fuzz");
    if let Err(e) = crate::bridge::config::from_yaml(text, nowhere) {
        let _ = e.to_string();
    }
    if let Ok(eb) = serde_norway::from_str::<EventBroker>(text)
        && let Err(e) = crate::publisher::config::file::from_spec(&eb.spec, Some(nowhere))
    {
        let _ = e.to_string();
    }
}
