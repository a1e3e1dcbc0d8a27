//! `BridgeLink`: an edge-to-cloud bridge with directional topic mapping and a durable spool.

use super::common::*;
use super::pattern::TopicPattern;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Desired state of a BridgeLink.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "edgewire.dev",
    version = "v1alpha1",
    kind = "BridgeLink",
    doc = "An edge-to-cloud bridge: topics mapped in each direction between an edge broker and a cloud broker, with a durable store-and-forward spool.",
    plural = "bridgelinks",
    shortname = "bl",
    category = "edgewire",
    namespaced,
    status = "BridgeLinkStatus",
    printcolumn = r#"{"name":"Site","type":"string","jsonPath":".spec.siteId"}"#,
    printcolumn = r#"{"name":"Cloud","type":"string","jsonPath":".spec.cloud.endpoint.url"}"#,
    printcolumn = r#"{"name":"Spooled","type":"integer","jsonPath":".status.runtime.spoolMessages"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BridgeLinkSpec {
    /// Identifier of the edge site; sent as the `edge-site-id` header on every edge→cloud message.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub site_id: String,
    /// Where local devices publish.
    pub edge: BridgeSide,
    /// The cloud broker.
    pub cloud: BridgeSide,
    /// Topic mapping rules, in order.
    #[schemars(length(min = 1))]
    pub rules: Vec<BridgeRule>,
    /// Extra headers added to every edge→cloud message (protocol headers; a JSON envelope field where the
    /// protocol has none). Names are printable ASCII without spaces or ':' (at most 255), values printable
    /// ASCII: what NATS, AMQP 0-9-1, Kafka and MQTT 5 can all carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::checked::headers_schema")]
    pub headers: BTreeMap<String, String>,
    /// The durable store-and-forward spool.
    #[serde(default)]
    pub spool: SpoolSpec,
    /// Resources of the bridge container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// What outlives this resource: the spool volume. Default Retain.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One side of the bridge: a reference to a broker Edgewire manages, or an explicit endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.brokerRef) != has(self.endpoint)").message("set exactly one of brokerRef, endpoint"))]
pub struct BridgeSide {
    /// A broker managed by Edgewire in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_ref: Option<BrokerRef>,
    /// An explicit endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
}

/// A reference to an Edgewire-managed broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerRef {
    /// EventBroker (its deployed broker) or MqttBroker (builtin).
    pub kind: BrokerRefKind,
    /// Name of the resource, in this namespace.
    pub name: String,
}

/// Kinds a BridgeLink side may reference.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BrokerRefKind {
    /// An EventBroker with `deployBroker` (nats or mosquitto/emqx).
    EventBroker,
    /// A builtin MqttBroker.
    MqttBroker,
}

/// Direction of a rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Direction {
    /// Edge topics forwarded to the cloud (through the spool).
    EdgeToCloud,
    /// Cloud topics delivered to the edge.
    CloudToEdge,
}

/// A topic mapping rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeRule {
    /// Direction.
    pub direction: Direction,
    /// Source pattern (neutral syntax: `.` separators, `*` one token, `#` the rest).
    pub from: TopicPattern,
    /// Target pattern; `*` and `#` take what `from` captured.
    pub to: TopicPattern,
    /// MQTT QoS used on MQTT sides (default 1).
    // Defaulted when read, not by the API server: `rules` is an atomic list, and a schema default inside
    // one makes every re-apply of a manifest that leaves qos out differ from the stored list, so server-side
    // apply rewrites the applier's managedFields entry and bumps the resourceVersion of an unchanged object
    // (seen on the real control plane: e2e/tests/cluster/samples.rs, crds.rs).
    #[serde(default = "default_rule_qos")]
    #[schemars(range(min = 0, max = 2), transform = no_schema_default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 2").message("rules[].qos must be 0, 1 or 2"))]
    pub qos: u8,
}

fn default_rule_qos() -> u8 {
    1
}

/// Drops the `default` schemars derives from `#[serde(default)]`.
fn no_schema_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// What happens when the spool reaches `maxBytes`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Overflow {
    /// Stop acknowledging the edge (back-pressure); nothing is lost.
    #[default]
    RejectNew,
    /// Drop the oldest spooled messages (counted in a metric and an Event).
    DropOldest,
}

/// The spool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpoolSpec {
    /// Size of the PVC backing the spool.
    #[serde(default = "default_spool_size")]
    #[schemars(schema_with = "super::schema::quantity")]
    pub size: String,
    /// Spool content limit; must be below `size`.
    #[serde(default = "default_spool_max")]
    #[schemars(schema_with = "super::schema::quantity")]
    pub max_bytes: String,
    /// RejectNew (default) or DropOldest.
    #[serde(default)]
    pub overflow: Overflow,
    /// StorageClass of the spool volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// The size of one spool segment file for a `maxBytes` of `max_bytes`: an eighth of it, between 64 KiB and
/// 64 MiB. The agent rolls segments at this size; the operator counts it into the disk the spool needs.
pub fn spool_segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024)
}

/// Room on the spool's volume for everything besides the unacknowledged records: the cursor and spool id
/// files, the directory, the filesystem's own blocks.
pub const SPOOL_DISK_OVERHEAD: u64 = 4 * 1024 * 1024;

/// The disk a spool of `max_bytes` can fill: the unacknowledged records (at most `maxBytes`), the
/// acknowledged part of the oldest segment (deleted whole, less than one segment) and the active segment's
/// overshoot (one record past the roll size, within a second segment), plus [`SPOOL_DISK_OVERHEAD`].
pub fn spool_disk_bytes(max_bytes: u64) -> u64 {
    max_bytes
        .saturating_add(2 * spool_segment_bytes(max_bytes))
        .saturating_add(SPOOL_DISK_OVERHEAD)
}

impl Default for SpoolSpec {
    fn default() -> Self {
        Self {
            size: default_spool_size(),
            max_bytes: default_spool_max(),
            overflow: Overflow::default(),
            storage_class_name: None,
        }
    }
}

fn default_spool_size() -> String {
    "5Gi".into()
}
fn default_spool_max() -> String {
    "4Gi".into()
}

/// Observed state of a BridgeLink.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeLinkStatus {
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, EdgeConnected, CloudConnected, Spooling, CredentialsReady.
    #[serde(default)]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// Hash of the referenced Secrets in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_revision: Option<String>,
    /// `runtime.dropped` as of the last `SpoolOverflow` Event the operator recorded (an Event is recorded
    /// when the agent's count grows past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_reported: Option<u64>,
    /// Written by the bridge agent (its own field manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<BridgeRuntime>,
}

/// Runtime figures the bridge agent reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeRuntime {
    /// Messages waiting in the spool.
    #[serde(default)]
    pub spool_messages: u64,
    /// Bytes waiting in the spool.
    #[serde(default)]
    pub spool_bytes: u64,
    /// Age of the oldest spooled message in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_spooled_age_seconds: Option<u64>,
    /// Messages forwarded to the cloud since the agent started.
    #[serde(default)]
    pub forwarded: u64,
    /// Messages dropped by `overflow: DropOldest`.
    #[serde(default)]
    pub dropped: u64,
    /// Spooled records found damaged on disk and skipped since the agent started
    /// (`edgewire_bridge_spool_corrupt_records_total`).
    #[serde(default)]
    pub corrupt_records: u64,
    /// Where the last damage was found (segment file, offset, records), while there was any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_corrupt: Option<String>,
    /// The spool cannot write (its disk is full): nothing more is taken from the edge, which is not
    /// acknowledged, until there is room again (`edgewire_bridge_spool_write_blocked`).
    #[serde(default)]
    pub spool_write_blocked: bool,
    /// Why the spool cannot write, while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_write_error: Option<String>,
    /// Whether the edge side is connected.
    #[serde(default)]
    pub edge_connected: bool,
    /// Whether the cloud side is connected.
    #[serde(default)]
    pub cloud_connected: bool,
    /// When a message last reached the cloud (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_forward_time: Option<String>,
    /// When the agent wrote this (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

impl BridgeSide {
    /// The protocol of this side when it is an explicit endpoint (a `brokerRef` side's protocol is known only
    /// once the operator resolved it).
    pub fn endpoint_protocol(&self) -> Option<Protocol> {
        self.endpoint.as_ref().map(|e| e.protocol)
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Mqtt => "mqtt",
        Protocol::Nats => "nats",
        Protocol::Amqp091 => "amqp091",
        Protocol::Kafka => "kafka",
    }
}

/// Checks what the schema cannot: the edge protocol, each rule's qos and patterns (`to` must be fillable from
/// what `from` captures), and that no rule set loops. A loop is a CloudToEdge rule whose `to` overlaps an
/// EdgeToCloud rule's `from` (the cloud would be fed back what came from it), or an EdgeToCloud rule whose `to`
/// overlaps a CloudToEdge rule's `from` (the edge would be fed back what it sent). The error names the field,
/// and for a loop both rules by index and pattern.
pub fn validate_rules(spec: &BridgeLinkSpec) -> Result<(), String> {
    if let Some(p @ (Protocol::Amqp091 | Protocol::Kafka)) = spec.edge.endpoint_protocol() {
        return Err(format!(
            "spec.edge.endpoint.protocol: {} is a cloud-only protocol; the edge side speaks mqtt or nats",
            protocol_name(p)
        ));
    }
    if spec.rules.is_empty() {
        return Err("spec.rules: at least one rule is required".into());
    }
    for (i, r) in spec.rules.iter().enumerate() {
        if r.qos > 2 {
            return Err(format!("spec.rules[{i}].qos: {} is not 0, 1 or 2", r.qos));
        }
        if !r.from.can_fill(&r.to) {
            return Err(format!(
                "spec.rules[{i}].to: {:?} cannot be filled from {:?}: it may use no more '*' than from, and '#' only if from ends with '#'",
                r.to.as_str(),
                r.from.as_str()
            ));
        }
    }
    let of = |d: Direction| {
        spec.rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.direction == d)
    };
    for (c, down) in of(Direction::CloudToEdge) {
        for (e, up) in of(Direction::EdgeToCloud) {
            if down.to.overlaps(&up.from) {
                return Err(format!(
                    "spec.rules[{c}] (CloudToEdge to {:?}) feeds spec.rules[{e}] (EdgeToCloud from {:?}): a loop",
                    down.to.as_str(),
                    up.from.as_str()
                ));
            }
        }
    }
    for (e, up) in of(Direction::EdgeToCloud) {
        for (c, down) in of(Direction::CloudToEdge) {
            if up.to.overlaps(&down.from) {
                return Err(format!(
                    "spec.rules[{e}] (EdgeToCloud to {:?}) feeds spec.rules[{c}] (CloudToEdge from {:?}): a loop",
                    up.to.as_str(),
                    down.from.as_str()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BridgeLinkSpec {
        serde_norway::from_str(yaml).unwrap()
    }

    const SIDES: &str = r#"
siteId: site-a
edge: {endpoint: {protocol: mqtt, url: "localhost:1883"}}
cloud: {endpoint: {protocol: nats, url: "nats://cloud:4222"}}
"#;

    fn with_rules(rules: &str) -> BridgeLinkSpec {
        spec(&format!("{SIDES}rules:\n{rules}"))
    }

    #[test]
    fn accepts_the_design_example() {
        let s = with_rules(
            r#"
  - {direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.telemetry.#", qos: 1}
  - {direction: CloudToEdge, from: "cloud.commands.site-a", to: "local.commands"}
"#,
        );
        assert_eq!(validate_rules(&s), Ok(()));
    }

    #[test]
    fn rejects_a_cloud_to_edge_rule_feeding_an_edge_to_cloud_rule() {
        let s = with_rules(
            r#"
  - {direction: EdgeToCloud, from: "local.#", to: "edge.site-a.#"}
  - {direction: CloudToEdge, from: "cloud.commands.#", to: "local.commands.#"}
"#,
        );
        assert_eq!(
            validate_rules(&s).unwrap_err(),
            r#"spec.rules[1] (CloudToEdge to "local.commands.#") feeds spec.rules[0] (EdgeToCloud from "local.#"): a loop"#
        );
    }

    #[test]
    fn rejects_an_edge_to_cloud_rule_feeding_a_cloud_to_edge_rule() {
        let s = with_rules(
            r#"
  - {direction: CloudToEdge, from: "edge.*.commands", to: "local.commands"}
  - {direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.#"}
"#,
        );
        assert_eq!(
            validate_rules(&s).unwrap_err(),
            r#"spec.rules[1] (EdgeToCloud to "edge.site-a.#") feeds spec.rules[0] (CloudToEdge from "edge.*.commands"): a loop"#
        );
    }

    #[test]
    fn wildcard_overlap_counts_as_a_loop_but_disjoint_literals_do_not() {
        let looping = with_rules(
            r#"
  - {direction: EdgeToCloud, from: "local.*.telemetry", to: "edge.x.*"}
  - {direction: CloudToEdge, from: "cloud.cmd", to: "local.line1.telemetry"}
"#,
        );
        assert!(validate_rules(&looping).unwrap_err().contains("a loop"));
        let fine = with_rules(
            r#"
  - {direction: EdgeToCloud, from: "local.*.telemetry", to: "edge.x.*"}
  - {direction: CloudToEdge, from: "cloud.cmd", to: "local.line1.commands"}
"#,
        );
        assert_eq!(validate_rules(&fine), Ok(()));
    }

    #[test]
    fn rejects_a_target_its_source_cannot_fill() {
        let s = with_rules(
            r#"
  - {direction: EdgeToCloud, from: "local.telemetry", to: "edge.site-a.#"}
"#,
        );
        let err = validate_rules(&s).unwrap_err();
        assert!(
            err.starts_with("spec.rules[0].to: \"edge.site-a.#\""),
            "{err}"
        );
        let s = with_rules(
            r#"
  - {direction: EdgeToCloud, from: "a.*", to: "b.*"}
  - {direction: EdgeToCloud, from: "a.*", to: "b.*.*"}
"#,
        );
        assert!(
            validate_rules(&s)
                .unwrap_err()
                .starts_with("spec.rules[1].to")
        );
    }

    #[test]
    fn rejects_an_invalid_pattern_when_parsing() {
        let err = serde_norway::from_str::<BridgeLinkSpec>(&format!(
            "{SIDES}rules:\n  - {{direction: EdgeToCloud, from: \"local/#\", to: \"x.#\"}}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("local/#"), "{err}");
    }

    #[test]
    fn rejects_qos_above_two() {
        let s = with_rules("  - {direction: EdgeToCloud, from: \"a.#\", to: \"b.#\", qos: 3}\n");
        assert_eq!(
            validate_rules(&s).unwrap_err(),
            "spec.rules[0].qos: 3 is not 0, 1 or 2"
        );
    }

    #[test]
    fn edge_protocol_is_mqtt_or_nats() {
        for (proto, ok) in [
            ("mqtt", true),
            ("nats", true),
            ("amqp091", false),
            ("kafka", false),
        ] {
            let s = spec(&format!(
                r#"
siteId: site-a
edge: {{endpoint: {{protocol: {proto}, url: "edge:1"}}}}
cloud: {{endpoint: {{protocol: kafka, url: "cloud:9092"}}}}
rules:
  - {{direction: EdgeToCloud, from: "a.#", to: "b.#"}}
"#
            ));
            let r = validate_rules(&s);
            assert_eq!(r.is_ok(), ok, "{proto}: {r:?}");
            if !ok {
                assert!(
                    r.unwrap_err()
                        .starts_with(&format!("spec.edge.endpoint.protocol: {proto} ")),
                );
            }
        }
    }
}
