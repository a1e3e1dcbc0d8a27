//! One rule, three places: for each string type of the API with a rule (`edgewire_api`'s checked types) the
//! CRD schema (its `pattern`, from the CRD the API server gets, evaluated with a regex engine), the
//! operator's validation (a refused value is `InvalidSpec` naming the field) and the agent's parsers (the
//! publisher's environment and `--config` file, the bridge's BridgeLink file) accept and refuse the same
//! values — and so does the type's own `FromStr`. Before these types, the operator accepted a project id `1abc` and a topic prefix longer than the
//! agent allowed, marked the EventBroker Ready, and the publisher it deployed refused to start.

use edgewire_agent::bridge::config as bridge_config;
use edgewire_agent::publisher::config::{env as publisher_env, file as publisher_file};
use edgewire_api::*;
use edgewire_operator::context::Settings;
use edgewire_operator::controller::{bridge_link, event_broker, mqtt_broker};
use edgewire_operator::reconcile::Invalid;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

/// The pattern of `path` under `spec` in the CRD of `kind`, compiled.
fn schema_pattern(kind: &str, path: &str) -> regex_lite::Regex {
    let pattern = spec_field_pattern(kind, path)
        .unwrap_or_else(|| panic!("{kind} spec.{path} has no pattern"));
    regex_lite::Regex::new(&pattern).unwrap()
}

/// What one place says of a value: `Some(accepted)`, or `None` where the value cannot reach it.
type Side<'a> = (&'a str, Box<dyn Fn(&str) -> Option<bool> + 'a>);

fn schema<'a>(kind: &'a str, path: &'a str) -> Side<'a> {
    let re = schema_pattern(kind, path);
    ("CRD schema", Box::new(move |v: &str| Some(re.is_match(v))))
}

/// The operator's verdict: accepted, or refused as `InvalidSpec` naming `field`.
fn operator_verdict(r: Result<(), Invalid>, field: &str, value: &str) -> Option<bool> {
    match r {
        Ok(()) => Some(true),
        Err(e) => {
            assert_eq!(e.reason(), "InvalidSpec", "{value:?}: {e}");
            match &e {
                Invalid::Spec { field: f, .. } => {
                    assert!(
                        f.starts_with(field),
                        "{value:?}: refused for {e}, not {field}"
                    )
                }
                other => panic!("{value:?}: {other}"),
            }
            Some(false)
        }
    }
}

fn event_broker(yaml: &str) -> EventBroker {
    serde_norway::from_str(yaml).unwrap()
}

const PUBSUB: &str = "
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {name: events, namespace: factory, uid: u1}
spec:
  adapter: google_pubsub
  googlePubsub: {project: my-project-123, topicIdPrefix: edge-}
";

const SNS: &str = "
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {name: events, namespace: factory, uid: u1}
spec:
  adapter: aws_sns
  awsSns:
    region: us-east-1
    topicArnPrefix: 'arn:aws:sns:us-east-1:123456789012:'
    roleArn: arn:aws:iam::123456789012:role/publisher
";

const IOTCORE: &str = "
apiVersion: edgewire.dev/v1alpha1
kind: MqttBroker
metadata: {name: workers, namespace: factory, uid: u1}
spec:
  type: iotcore
  topicNamespace: edgewire
  iotcore:
    region: us-east-1
    topicRule: {name: to_sqs, sqsQueueUrl: 'https://sqs.us-east-1.amazonaws.com/123456789012/q', roleArn: 'arn:aws:iam::123456789012:role/iot'}
";

const BRIDGE: &str = "
apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {name: site-a, namespace: factory, uid: u1}
spec:
  siteId: site-a
  edge: {endpoint: {protocol: mqtt, url: '127.0.0.1:1883'}}
  cloud: {endpoint: {protocol: nats, url: 'nats://127.0.0.1:4222'}}
  spool: {size: 1Gi, maxBytes: 64Mi}
  rules:
    - {direction: EdgeToCloud, from: 'local.#', to: 'edge.#'}
";

/// The operator on an EventBroker `base` with the field `set` changes.
fn operator_eb<'a>(base: &'a str, field: &'a str, set: fn(&mut EventBrokerSpec, &str)) -> Side<'a> {
    (
        "operator (EventBroker)",
        Box::new(move |v: &str| {
            let mut eb = event_broker(base);
            set(&mut eb.spec, v);
            let r = event_broker::validate::validate(
                &eb,
                &event_broker::refs::Refs::default(),
                &Settings::default(),
            );
            operator_verdict(r.map(|_| ()), field, v)
        }),
    )
}

fn operator_mqb<'a>(field: &'a str, set: fn(&mut IotCoreSpec, &str)) -> Side<'a> {
    (
        "operator (MqttBroker)",
        Box::new(move |v: &str| {
            let mut mqb: MqttBroker = serde_norway::from_str(IOTCORE).unwrap();
            set(mqb.spec.iotcore.as_mut().unwrap(), v);
            operator_verdict(mqtt_broker::validate::check_spec(&mqb), field, v)
        }),
    )
}

/// The publisher's environment parser on the adapter's variables `base` with `var` set to the value.
/// An empty variable is an unset one in that interface (how the operator renders an absent optional
/// key), so an empty value is not judged here.
fn agent_env<'a>(base: &'a [(&'a str, &'a str)], var: &'a str) -> Side<'a> {
    (
        "agent env",
        Box::new(move |v: &str| {
            if v.is_empty() {
                return None;
            }
            let mut vars: HashMap<&str, &str> = base.iter().copied().collect();
            vars.insert(edgewire_api::env::ENABLED, "true");
            vars.insert(var, v);
            match publisher_env::from_lookup(|k| vars.get(k).map(|v| v.to_string())) {
                Ok(_) => Some(true),
                Err(e) => {
                    assert_eq!(e.name, var, "{v:?}: {e}");
                    Some(false)
                }
            }
        }),
    )
}

/// The publisher's `--config` parser on the EventBroker `base` with the field changed.
fn agent_file<'a>(base: &'a str, field: &'a str, set: fn(&mut EventBrokerSpec, &str)) -> Side<'a> {
    (
        "agent --config",
        Box::new(move |v: &str| {
            let mut eb = event_broker(base);
            set(&mut eb.spec, v);
            match publisher_file::from_spec(&eb.spec, None) {
                Ok(_) => Some(true),
                Err(e) => {
                    assert_eq!(e.name, field, "{v:?}: {e}");
                    Some(false)
                }
            }
        }),
    )
}

/// The BridgeLink with `headers`, through the operator's validation and the agent's bridge parser.
fn bridge_sides<'a>(
    field: &'a str,
    headers: fn(&str) -> BTreeMap<String, String>,
) -> [Side<'a>; 2] {
    let with = move |v: &str| {
        let mut bl: BridgeLink = serde_norway::from_str(BRIDGE).unwrap();
        bl.spec.headers = headers(v);
        bl
    };
    [
        (
            "operator (BridgeLink)",
            Box::new(move |v: &str| {
                operator_verdict(bridge_link::validate::check_spec(&with(v).spec), field, v)
            }),
        ),
        (
            "agent bridge",
            Box::new(move |v: &str| {
                let yaml = serde_norway::to_string(&with(v)).unwrap();
                match bridge_config::from_yaml(&yaml, Path::new("/nonexistent")) {
                    Ok(_) => Some(true),
                    Err(e) => {
                        assert!(e.0.starts_with(field), "{v:?}: {e}");
                        Some(false)
                    }
                }
            }),
        ),
    ]
}

/// Every side, and the type's own `FromStr`, gives `accepted` for every row; `pattern_cannot_say` are
/// refused values the schema lets through (validation says what the pattern cannot).
fn agree<T: FromStr<Err = String> + 'static>(
    what: &str,
    rows: &[(&str, bool)],
    pattern_cannot_say: &[&str],
    sides: &[Side],
) {
    let from_str: Side = ("FromStr", Box::new(|v: &str| Some(T::from_str(v).is_ok())));
    let sides: Vec<&Side> = std::iter::once(&from_str).chain(sides).collect();
    eprintln!(
        "{what}: {}",
        sides
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for (value, accepted) in rows {
        let mut said = Vec::new();
        for (name, side) in &sides {
            let Some(v) = side(value) else {
                said.push("-");
                continue;
            };
            let expected =
                *accepted || (*name == "CRD schema" && pattern_cannot_say.contains(value));
            assert_eq!(v, expected, "{what}: {name} on {value:?}");
            said.push(if v { "accepts" } else { "refuses" });
        }
        let shown: String = value.chars().take(40).collect();
        let more = if value.len() > 40 {
            format!("… ({} chars)", value.len())
        } else {
            String::new()
        };
        eprintln!("  {shown:?}{more}: {}", said.join(" | "));
    }
}

fn pubsub_env() -> Vec<(&'static str, &'static str)> {
    vec![
        (edgewire_api::env::ADAPTER, "google_pubsub"),
        (edgewire_api::env::GOOGLE_PUBSUB_PROJECT, "my-project-123"),
    ]
}

fn sns_env() -> Vec<(&'static str, &'static str)> {
    vec![
        (edgewire_api::env::ADAPTER, "aws_sns"),
        (edgewire_api::env::AWS_SNS_REGION, "us-east-1"),
        (
            edgewire_api::env::AWS_SNS_TOPIC_ARN_PREFIX,
            "arn:aws:sns:us-east-1:123456789012:",
        ),
    ]
}

#[test]
fn gcp_project_ids() {
    let base = pubsub_env();
    let hundred = "a".repeat(100);
    let too_long = "a".repeat(101);
    agree::<GcpProjectId>(
        "GcpProjectId",
        &[
            ("my-project-123", true),
            ("example.com:my-project", true),
            ("p", true),
            (&hundred, true),
            ("1abc", false),
            ("My-Project", false),
            ("my project", false),
            (" my-project", false),
            ("", false),
            (&too_long, false),
        ],
        &[],
        &[
            schema("EventBroker", "googlePubsub.project"),
            operator_eb(PUBSUB, "spec.googlePubsub.project", |s, v| {
                s.google_pubsub.as_mut().unwrap().project = v.into()
            }),
            agent_env(&base, edgewire_api::env::GOOGLE_PUBSUB_PROJECT),
            agent_file(PUBSUB, "spec.googlePubsub.project", |s, v| {
                s.google_pubsub.as_mut().unwrap().project = v.into()
            }),
        ],
    );
}

#[test]
fn pubsub_topic_id_prefixes() {
    let base = pubsub_env();
    // A topic id is at most 255 characters and the longest domain topic name (24) follows the prefix.
    let longest = format!("e{}", "x".repeat(PUBSUB_TOPIC_ID_PREFIX_MAX - 1));
    let too_long = format!("{longest}x");
    assert_eq!((longest.len(), too_long.len()), (231, 232));
    assert_eq!(longest.len() + "edge-self-updates-events".len(), 255);
    agree::<PubsubTopicIdPrefix>(
        "PubsubTopicIdPrefix",
        &[
            ("edge-prod-", true),
            ("", true),
            ("a~b+c%d.e_f-", true),
            (&longest, true),
            (&too_long, false),
            ("1prod", false),
            ("-prod", false),
            ("prod/", false),
            ("prod edge", false),
            ("goog-x", false),
        ],
        &["goog-x"],
        &[
            schema("EventBroker", "googlePubsub.topicIdPrefix"),
            operator_eb(PUBSUB, "spec.googlePubsub.topicIdPrefix", |s, v| {
                s.google_pubsub.as_mut().unwrap().topic_id_prefix = Some(v.into())
            }),
            agent_env(&base, edgewire_api::env::GOOGLE_PUBSUB_TOPIC_ID_PREFIX),
            agent_file(PUBSUB, "spec.googlePubsub.topicIdPrefix", |s, v| {
                s.google_pubsub.as_mut().unwrap().topic_id_prefix = Some(v.into())
            }),
        ],
    );
}

#[test]
fn aws_regions() {
    let base = sns_env();
    agree::<AwsRegion>(
        "AwsRegion",
        &[
            ("us-east-1", true),
            ("eu-central-1", true),
            ("us-gov-west-1", true),
            ("cn-north-1", true),
            ("us east", false),
            ("us-east", false),
            ("US-EAST-1", false),
            ("useast-1", false),
            ("us-east-1 ", false),
            ("", false),
        ],
        &[],
        &[
            schema("EventBroker", "awsSns.region"),
            schema("MqttBroker", "iotcore.region"),
            operator_eb(SNS, "spec.awsSns.region", |s, v| {
                s.aws_sns.as_mut().unwrap().region = v.into()
            }),
            operator_mqb("spec.iotcore.region", |s, v| s.region = v.into()),
            agent_env(&base, edgewire_api::env::AWS_SNS_REGION),
            agent_file(SNS, "spec.awsSns.region", |s, v| {
                s.aws_sns.as_mut().unwrap().region = v.into()
            }),
        ],
    );
}

#[test]
fn sns_topic_arn_prefixes() {
    let base = sns_env();
    let longest = format!("arn:aws:sns:us-east-1:123456789012:{}", "p".repeat(232));
    let too_long = format!("{longest}p");
    agree::<SnsTopicArnPrefix>(
        "SnsTopicArnPrefix",
        &[
            ("arn:aws:sns:us-east-1:123456789012:", true),
            ("arn:aws:sns:us-east-1:123456789012:prod-", true),
            ("arn:aws-cn:sns:cn-north-1:123456789012:prod_", true),
            (&longest, true),
            (&too_long, false),
            ("prod-", false),
            ("arn:aws:sqs:us-east-1:123456789012:", false),
            ("arn:aws:sns:us-east-1:1234:", false),
            ("arn:aws:sns:us-east-1:123456789012:prod.", false),
            ("arn:aws:sns:us-east-1:123456789012:a:b", false),
            ("arn:aws:sns:us-east-1:123456789012", false),
        ],
        &[],
        &[
            schema("EventBroker", "awsSns.topicArnPrefix"),
            operator_eb(SNS, "spec.awsSns.topicArnPrefix", |s, v| {
                s.aws_sns.as_mut().unwrap().topic_arn_prefix = Some(v.into())
            }),
            agent_env(&base, edgewire_api::env::AWS_SNS_TOPIC_ARN_PREFIX),
            agent_file(SNS, "spec.awsSns.topicArnPrefix", |s, v| {
                s.aws_sns.as_mut().unwrap().topic_arn_prefix = Some(v.into())
            }),
        ],
    );
}

/// The agent never reads a role ARN: it is the publisher ServiceAccount's IRSA annotation (the EKS webhook
/// turns it into `AWS_ROLE_ARN`, which the AWS SDK reads) and IoT Core's topic rule role, used by the
/// operator alone. The schema and the operator agree.
#[test]
fn iam_role_arns() {
    agree::<IamRoleArn>(
        "IamRoleArn",
        &[
            ("arn:aws:iam::123456789012:role/edgewire-publisher", true),
            (
                "arn:aws:iam::123456789012:role/service/iot+to=sqs,x.y@z_",
                true,
            ),
            ("arn:aws-us-gov:iam::123456789012:role/r", true),
            ("r", false),
            ("arn:aws:iam::123456789012:user/u", false),
            ("arn:aws:iam:us-east-1:123456789012:role/r", false),
            ("arn:aws:iam::123456789012:role/", false),
            ("arn:aws:iam::123456789012:role/a b", false),
        ],
        &[],
        &[
            schema("EventBroker", "awsSns.roleArn"),
            schema("MqttBroker", "iotcore.topicRule.roleArn"),
            operator_eb(SNS, "spec.awsSns.roleArn", |s, v| {
                s.aws_sns.as_mut().unwrap().role_arn = Some(v.into())
            }),
            operator_mqb("spec.iotcore.topicRule.roleArn", |s, v| {
                s.topic_rule.as_mut().unwrap().role_arn = v.into()
            }),
        ],
    );
}

#[test]
fn header_values() {
    let [operator, agent] = bridge_sides("spec.headers.plant", |v| {
        BTreeMap::from([("plant".to_string(), v.to_string())])
    });
    agree::<HeaderValue>(
        "HeaderValue",
        &[
            ("berlin", true),
            ("line 4: press", true),
            ("", true),
            ("a\r\nInjected: x", false),
            ("a\nb", false),
            ("tab\there", false),
            ("Köln", false),
        ],
        &[],
        &[schema("BridgeLink", "headers.*"), operator, agent],
    );
}

/// Header names are map keys, which a CRD schema cannot give a pattern: the type's pattern stands in for it.
#[test]
fn header_names() {
    let re = regex_lite::Regex::new(HeaderName::PATTERN).unwrap();
    let [operator, agent] = bridge_sides("spec.headers", |v| {
        BTreeMap::from([(v.to_string(), "x".to_string())])
    });
    let longest = "h".repeat(255);
    let too_long = "h".repeat(256);
    agree::<HeaderName>(
        "HeaderName",
        &[
            ("plant", true),
            ("x-edge_line.4", true),
            (&longest, true),
            (&too_long, false),
            ("", false),
            ("has space", false),
            ("colon:name", false),
            ("line\nbreak", false),
            ("Größe", false),
        ],
        &[],
        &[
            (
                "HeaderName::PATTERN",
                Box::new(move |v: &str| Some(re.is_match(v))),
            ),
            operator,
            agent,
        ],
    );
}

/// An endpoint override as the api crate's one rule (`edgewire_api::endpoint::endpoint_override`) judges it.
struct Endpoint;

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        edgewire_api::endpoint::endpoint_override(s).map(|_| Endpoint)
    }
}

/// Endpoint overrides carry no schema pattern (what makes a URL usable is more than a pattern should say):
/// the operator's validation and the agent's parsers apply the api crate's rule. The operator used to take
/// any `http://` prefix — `http://user:pw@host`, `http://` — and deploy a publisher that refused it.
#[test]
fn endpoint_overrides() {
    let (sns, pubsub) = (sns_env(), pubsub_env());
    agree::<Endpoint>(
        "endpoint override",
        &[
            ("http://127.0.0.1:5000", true),
            ("http://localhost:8085/", true),
            ("https://sns.us-east-1.amazonaws.com", true),
            ("https://vpce-1.pubsub.p.googleapis.com/v1", true),
            ("localhost:5000", false),
            ("ftp://mirror", false),
            ("http://", false),
            ("http://user:pw@moto:5000", false),
            ("https://:pw@pubsub", false),
        ],
        &[],
        &[
            operator_eb(SNS, "spec.awsSns.endpoint", |s, v| {
                s.aws_sns.as_mut().unwrap().endpoint = Some(v.into())
            }),
            operator_eb(PUBSUB, "spec.googlePubsub.endpoint", |s, v| {
                s.google_pubsub.as_mut().unwrap().endpoint = Some(v.into())
            }),
            operator_mqb("spec.iotcore.apiEndpoint", |s, v| {
                s.api_endpoint = Some(v.into())
            }),
            agent_env(&sns, edgewire_api::env::AWS_SNS_ENDPOINT),
            agent_env(&pubsub, edgewire_api::env::GOOGLE_PUBSUB_ENDPOINT),
            agent_file(SNS, "spec.awsSns.endpoint", |s, v| {
                s.aws_sns.as_mut().unwrap().endpoint = Some(v.into())
            }),
            agent_file(PUBSUB, "spec.googlePubsub.endpoint", |s, v| {
                s.google_pubsub.as_mut().unwrap().endpoint = Some(v.into())
            }),
        ],
    );
}
