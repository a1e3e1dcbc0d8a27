//! Each string rule of the API is written twice in one place — the schema `pattern` of the generated CRD and
//! the type's `FromStr` — and both must accept and refuse the same values. The pattern is read from the CRD
//! the API server gets and evaluated with a regex engine; values a pattern cannot judge are marked.

use edgewire_api::*;
use serde_json::Value;
use std::str::FromStr;

/// The schema of `path` (dot-separated property names) under `spec` of the CRD of `kind`.
fn field_schema(kind: &str, path: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("a CRD of this kind");
    let mut v = serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"]
        ["properties"]["spec"]
        .clone();
    for p in path.split('.') {
        v = if p == "*" {
            v["additionalProperties"].clone()
        } else {
            v["properties"][p].clone()
        };
    }
    v
}

/// What the API server's pattern says of each value.
fn schema_accepts(kind: &str, path: &str, value: &str) -> bool {
    let schema = field_schema(kind, path);
    let pattern = schema["pattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{kind} spec.{path} has no pattern: {schema}"));
    regex_lite::Regex::new(pattern).unwrap().is_match(value)
}

/// `(value, accepted)`: the schema and `T::from_str` both give `accepted`.
fn agree<T: FromStr<Err = String>>(kind: &str, path: &str, table: &[(&str, bool)]) {
    for (value, accepted) in table {
        assert_eq!(
            schema_accepts(kind, path, value),
            *accepted,
            "schema of {kind} spec.{path} on {value:?}"
        );
        let parsed = T::from_str(value);
        assert_eq!(
            parsed.is_ok(),
            *accepted,
            "FromStr on {value:?}: {:?}",
            parsed.err()
        );
    }
}

#[test]
fn gcp_project_ids() {
    agree::<GcpProjectId>(
        "EventBroker",
        "googlePubsub.project",
        &[
            ("my-project-123", true),
            ("example.com:my-project", true),
            ("p", true),
            (&"a".repeat(100), true),
            ("1abc", false),
            ("My-Project", false),
            ("my project", false),
            ("", false),
            (&"a".repeat(101), false),
        ],
    );
}

#[test]
fn pubsub_topic_id_prefixes() {
    let longest = format!("e{}", "x".repeat(PUBSUB_TOPIC_ID_PREFIX_MAX - 1));
    let too_long = format!("{longest}x");
    agree::<PubsubTopicIdPrefix>(
        "EventBroker",
        "googlePubsub.topicIdPrefix",
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
        ],
    );
    // The pattern cannot say "not goog": the schema lets it through, FromStr (and so the operator) refuses.
    assert!(schema_accepts(
        "EventBroker",
        "googlePubsub.topicIdPrefix",
        "goog-x"
    ));
    assert!(PubsubTopicIdPrefix::from_str("goog-x").is_err());
    assert_eq!(longest.len() + "edge-self-updates-events".len(), 255);
}

#[test]
fn aws_regions() {
    let table = [
        ("us-east-1", true),
        ("eu-central-1", true),
        ("us-gov-west-1", true),
        ("cn-north-1", true),
        ("us east", false),
        ("us-east", false),
        ("US-EAST-1", false),
        ("useast-1", false),
        ("", false),
    ];
    agree::<AwsRegion>("EventBroker", "awsSns.region", &table);
    agree::<AwsRegion>("MqttBroker", "iotcore.region", &table);
}

#[test]
fn sns_topic_arn_prefixes() {
    let longest = format!("arn:aws:sns:us-east-1:123456789012:{}", "p".repeat(232));
    agree::<SnsTopicArnPrefix>(
        "EventBroker",
        "awsSns.topicArnPrefix",
        &[
            ("arn:aws:sns:us-east-1:123456789012:", true),
            ("arn:aws:sns:us-east-1:123456789012:prod-", true),
            ("arn:aws-cn:sns:cn-north-1:123456789012:prod_", true),
            (&longest, true),
            (&format!("{longest}p"), false),
            ("prod-", false),
            ("arn:aws:sqs:us-east-1:123456789012:", false),
            ("arn:aws:sns:us-east-1:1234:", false),
            ("arn:aws:sns:us-east-1:123456789012:prod.", false),
            ("arn:aws:sns:us-east-1:123456789012", false),
        ],
    );
}

#[test]
fn iam_role_arns() {
    let table = [
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
    ];
    agree::<IamRoleArn>("EventBroker", "awsSns.roleArn", &table);
    agree::<IamRoleArn>("MqttBroker", "iotcore.topicRule.roleArn", &table);
}

#[test]
fn header_values() {
    agree::<HeaderValue>(
        "BridgeLink",
        "headers.*",
        &[
            ("berlin", true),
            ("line 4: press", true),
            ("", true),
            ("a\r\nInjected: x", false),
            ("a\nb", false),
            ("tab\there", false),
            ("Köln", false),
        ],
    );
}

/// Header names are map keys, which a CRD schema cannot give a pattern: the type's pattern and `FromStr`
/// agree, and the operator refuses the rest with `InvalidSpec`.
#[test]
fn header_names() {
    let re = regex_lite::Regex::new(HeaderName::PATTERN).unwrap();
    for (value, accepted) in [
        ("plant", true),
        ("x-edge_line.4", true),
        (&*"h".repeat(255), true),
        (&*"h".repeat(256), false),
        ("", false),
        ("has space", false),
        ("colon:name", false),
        ("line\nbreak", false),
        ("Größe", false),
    ] {
        assert_eq!(re.is_match(value), accepted, "pattern on {value:?}");
        assert_eq!(
            HeaderName::from_str(value).is_ok(),
            accepted,
            "FromStr on {value:?}"
        );
    }
}
