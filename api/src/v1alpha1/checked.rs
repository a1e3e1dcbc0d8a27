//! Strings with rules that both binaries check: the operator before it deploys, the agent before it starts.
//! Each type states its rule twice in one place — as the schema `pattern` the API server enforces and as
//! [`FromStr`]. `agent/tests/contract/checked.rs` holds them to one table of values per type, with the
//! operator's validation and the agent's parsers: all accept and refuse the same values.
//!
//! A value of one of these types has passed its check: it is made by [`FromStr`] or by deserializing, which
//! checks too. The spec fields stay `String` with the type's schema: an object the API server stored before a
//! rule existed (or one breaking a rule a pattern cannot say — a Pub/Sub prefix starting with `goog`) must
//! still decode, so that the operator's validation can parse the field and report `InvalidSpec` naming it
//! instead of skipping an undecodable object. The agent parses its environment and configuration files into
//! these types, so an adapter never sees an unchecked value.

use crate::domain::DOMAINS;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

macro_rules! checked {
    ($(#[$doc:meta])* $name:ident, $pattern:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// The schema pattern (RE2 syntax, as the API server evaluates it).
            pub const PATTERN: &'static str = $pattern;

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The schema of a string field holding one.
            pub fn schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({"type": "string", "pattern": $pattern})
            }
        }

        impl FromStr for $name {
            type Err = String;
            /// The value, or why it breaks the rule (a message for a person; it quotes the value).
            fn from_str(s: &str) -> Result<Self, String> {
                $check(s).map(|()| Self(s.to_string()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $check(&s).map(|()| Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                Self::schema(generator)
            }
        }
    };
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `<letters>-<letters>...-<digits>` with a two-letter first part: `us-east-1`, `us-gov-west-1`, `cn-north-1`.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `aws`, `aws-cn`, `aws-us-gov`.
fn is_partition(s: &str) -> bool {
    s.strip_prefix("aws").is_some_and(|rest| {
        rest.is_empty()
            || rest.strip_prefix('-').is_some_and(|r| {
                r.split('-')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
            })
    })
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_project(s: &str) -> Result<(), String> {
    let ok = (1..=100).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| lower_alnum(b) || matches!(b, b'-' | b'.' | b':'));
    ok.then_some(())
        .ok_or_else(|| format!("{s:?} is not a GCP project id (like my-project-123)"))
}

checked!(
    /// A Google Cloud project id: lower-case letters, digits and `-`, starting with a letter (`my-project-123`;
    /// the legacy `example.com:my-project` form too). At most 100 characters, which emulators accept.
    GcpProjectId,
    r"^[a-z][a-z0-9.:-]{0,99}$",
    check_project
);

/// Longest Pub/Sub topic id (and SNS topic name is 256).
pub const PUBSUB_TOPIC_ID_MAX: usize = 255;

/// The longest domain topic name (`edge-self-updates-events`): every prefix is followed by one.
pub const fn longest_domain_topic() -> usize {
    let mut i = 0;
    let mut max = 0;
    while i < DOMAINS.len() {
        if DOMAINS[i].topic.len() > max {
            max = DOMAINS[i].topic.len();
        }
        i += 1;
    }
    max
}

/// The longest topic id prefix: a topic id is at most 255 characters and the longest domain topic name
/// (24) follows the prefix, so 231.
pub const PUBSUB_TOPIC_ID_PREFIX_MAX: usize = PUBSUB_TOPIC_ID_MAX - longest_domain_topic();

fn check_topic_id_prefix(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let ok = s.len() <= PUBSUB_TOPIC_ID_PREFIX_MAX
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'%')
        })
        && !s.starts_with("goog");
    ok.then_some(()).ok_or_else(|| {
        format!(
            "{s:?} must start with a letter (not \"goog\"), hold only letters, digits and - _ . ~ + %, and be at most {PUBSUB_TOPIC_ID_PREFIX_MAX} characters (a topic id is at most {PUBSUB_TOPIC_ID_MAX}, the domain topic name follows)"
        )
    })
}

checked!(
    /// The prefix of the four Pub/Sub topic ids (`edge-prod-`): the topic ids it makes start with a letter
    /// and hold only letters, digits and `- _ . ~ + %`, must not start with `goog` (which the pattern cannot
    /// say; validation does), and stay within 255 characters with the longest domain topic name appended.
    /// Empty means no prefix.
    PubsubTopicIdPrefix,
    r"^([A-Za-z][A-Za-z0-9._~+%-]{0,230})?$",
    check_topic_id_prefix
);

/// No prefix.
impl Default for PubsubTopicIdPrefix {
    fn default() -> Self {
        Self(String::new())
    }
}

fn check_region(s: &str) -> Result<(), String> {
    is_region(s)
        .then_some(())
        .ok_or_else(|| format!("{s:?} is not an AWS region (like us-east-1)"))
}

checked!(
    /// An AWS region: `us-east-1`, `eu-central-1`, `us-gov-west-1`, `cn-north-1`.
    AwsRegion,
    r"^[a-z]{2}(-[a-z]+)+-[0-9]+$",
    check_region
);

fn check_sns_prefix(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let ok = matches!(parts.as_slice(),
        ["arn", partition, "sns", region, account, name]
            if is_partition(partition)
                && is_region(region)
                && is_account(account)
                && name.len() <= 256 - longest_domain_topic()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    ok.then_some(()).ok_or_else(|| {
        format!(
            "{s:?} must be arn:aws:sns:<region>:<account>: followed by an optional topic-name prefix (letters, digits, - and _)"
        )
    })
}

impl SnsTopicArnPrefix {
    /// The region the ARN names: `us-east-1` of `arn:aws:sns:us-east-1:123456789012:`.
    pub fn region(&self) -> AwsRegion {
        // The check held the fourth part to the region rule.
        AwsRegion(self.0.split(':').nth(3).unwrap_or_default().to_string())
    }

    /// The topic-name prefix after the account: `prod-` of `arn:aws:sns:us-east-1:123456789012:prod-`
    /// (empty when there is none). Topic names are this prefix and a domain topic name.
    pub fn name_prefix(&self) -> &str {
        self.0.splitn(6, ':').nth(5).unwrap_or_default()
    }
}

checked!(
    /// An account-scoped SNS topic ARN prefix: `arn:aws:sns:us-east-1:123456789012:`, optionally followed by
    /// a topic-name prefix (`prod-`) of letters, digits, `-` and `_` short enough for the longest domain topic
    /// name to follow within SNS's 256 characters.
    SnsTopicArnPrefix,
    r"^arn:aws(-[a-z]+)*:sns:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:[A-Za-z0-9_-]{0,232}$",
    check_sns_prefix
);

fn check_role_arn(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let ok = matches!(parts.as_slice(),
    ["arn", partition, "iam", "", account, resource]
        if is_partition(partition)
            && is_account(account)
            && resource.strip_prefix("role/").is_some_and(|r| {
                (1..=512).contains(&r.len())
                    && r.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'+' | b'=' | b',' | b'.' | b'@' | b'_' | b'/' | b'-')
                    })
            }));
    ok.then_some(())
        .ok_or_else(|| format!("{s:?} must be an IAM role ARN"))
}

checked!(
    /// An IAM role ARN: `arn:aws:iam::123456789012:role/edgewire-publisher` (a path may precede the name).
    IamRoleArn,
    r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$",
    check_role_arn
);

/// AMQP 0-9-1 field-table keys are short strings.
pub const HEADER_NAME_MAX: usize = 255;

fn check_header_name(s: &str) -> Result<(), String> {
    let ok = (1..=HEADER_NAME_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    ok.then_some(()).ok_or_else(|| {
        format!(
            "{s:?} is not a header name every bridge protocol can carry: 1 to {HEADER_NAME_MAX} printable ASCII characters, no space and no ':'"
        )
    })
}

checked!(
    /// A header name the bridge sends on every protocol: NATS headers are the strictest (printable ASCII, no
    /// space, no `:`), AMQP 0-9-1 keys at most 255 bytes.
    HeaderName,
    r"^[!-9;-~]{1,255}$",
    check_header_name
);

fn check_header_value(s: &str) -> Result<(), String> {
    s.bytes()
        .all(|b| b == b' ' || b.is_ascii_graphic())
        .then_some(())
        .ok_or_else(|| {
            format!(
                "{s:?} is not a header value every bridge protocol can carry: printable ASCII and spaces, no line breaks"
            )
        })
}

checked!(
    /// A header value the bridge sends on every protocol: printable ASCII and spaces (no CR or LF, which
    /// would end a NATS header line).
    HeaderValue,
    r"^[ -~]*$",
    check_header_value
);

/// The schema of `spec.headers`: values with [`HeaderValue::PATTERN`]. A map's keys cannot carry a pattern
/// in a CRD; the operator checks them ([`HeaderName`]) and reports `InvalidSpec`.
pub fn headers_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": HeaderValue::schema(generator),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_budget_follows_the_domain_topics() {
        assert_eq!(longest_domain_topic(), "edge-self-updates-events".len());
        assert_eq!(PUBSUB_TOPIC_ID_PREFIX_MAX, 231);
        assert!(
            PubsubTopicIdPrefix::PATTERN
                .contains(&format!("{{0,{}}}", PUBSUB_TOPIC_ID_PREFIX_MAX - 1))
        );
        assert!(
            SnsTopicArnPrefix::PATTERN.contains(&format!("{{0,{}}}", 256 - longest_domain_topic()))
        );
    }

    #[test]
    fn deserializing_checks_and_the_arn_prefix_names_its_region() {
        let p: SnsTopicArnPrefix =
            serde_json::from_str("\"arn:aws-cn:sns:cn-north-1:123456789012:prod-\"").unwrap();
        assert_eq!(p.region().as_str(), "cn-north-1");
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            "\"arn:aws-cn:sns:cn-north-1:123456789012:prod-\""
        );
        let e = serde_json::from_str::<GcpProjectId>("\"1abc\"").unwrap_err();
        assert!(e.to_string().contains("not a GCP project id"), "{e}");
        assert_eq!(PubsubTopicIdPrefix::default().as_str(), "");
    }

    /// Moved from the operator's `cloud::sns::name_prefix`, which parsed the ARN again by its own rule.
    #[test]
    fn the_arn_prefix_names_its_topic_name_prefix() {
        let name_prefix = |s: &str| {
            SnsTopicArnPrefix::from_str(s)
                .map(|p| p.name_prefix().to_string())
                .ok()
        };
        assert_eq!(
            name_prefix("arn:aws:sns:us-east-1:123456789012:prod-").as_deref(),
            Some("prod-")
        );
        assert_eq!(
            name_prefix("arn:aws:sns:us-east-1:123456789012:").as_deref(),
            Some("")
        );
        assert_eq!(name_prefix("arn:aws:sqs:us-east-1:1:"), None);
        assert_eq!(name_prefix("prod-"), None);
    }

    /// Each type's `FromStr` and its schema `PATTERN` (RE2, here `regex_lite`) against one table of values
    /// at the rules' edges (lengths, first characters, each ARN part). `pattern_cannot_say` are values the
    /// check refuses and the pattern lets through. `agent/tests/contract/checked.rs` holds the operator and
    /// the agent's parsers to the same rules; this one keeps the rules themselves in the api crate's tests.
    fn rule<T: FromStr<Err = String>>(
        pattern: &str,
        rows: &[(&str, bool)],
        pattern_cannot_say: &[&str],
    ) {
        let re = regex_lite::Regex::new(pattern).unwrap();
        for (v, ok) in rows {
            let parsed = T::from_str(v);
            assert_eq!(parsed.is_ok(), *ok, "FromStr on {v:?}: {:?}", parsed.err());
            if let Err(e) = parsed {
                assert!(!e.is_empty(), "a refusal says why: {v:?}");
            }
            let want = *ok || pattern_cannot_say.contains(v);
            assert_eq!(re.is_match(v), want, "PATTERN {pattern} on {v:?}");
        }
    }

    #[test]
    fn gcp_project_id_rule() {
        let (max, over) = ("a".repeat(100), "a".repeat(101));
        rule::<GcpProjectId>(
            GcpProjectId::PATTERN,
            &[
                ("my-project-123", true),
                ("p", true),
                ("p0", true),
                ("example.com:my-project", true),
                (&max, true),
                (&over, false),
                ("", false),
                ("1abc", false),
                ("-abc", false),
                ("my_project", false),
                ("my-Project", false),
                ("my project", false),
            ],
            &[],
        );
    }

    #[test]
    fn pubsub_topic_id_prefix_rule() {
        let max = format!("e{}", "x".repeat(PUBSUB_TOPIC_ID_PREFIX_MAX - 1));
        let over = format!("{max}x");
        rule::<PubsubTopicIdPrefix>(
            PubsubTopicIdPrefix::PATTERN,
            &[
                ("", true),
                ("edge-prod-", true),
                ("E", true),
                ("a~b+c%d.e_f-9", true),
                (&max, true),
                (&over, false),
                ("1prod", false),
                ("-prod", false),
                ("prod/", false),
                ("prod edge", false),
                ("goog", false),
                ("goog-x", false),
                ("googl", false),
                ("Goog-x", true),
                ("go-og", true),
            ],
            &["goog", "goog-x", "googl"],
        );
    }

    #[test]
    fn aws_region_rule() {
        rule::<AwsRegion>(
            AwsRegion::PATTERN,
            &[
                ("us-east-1", true),
                ("us-gov-west-1", true),
                ("cn-north-12", true),
                ("", false),
                ("us-1", false),
                ("us-east", false),
                ("u-east-1", false),
                ("use-east-1", false),
                ("us--1", false),
                ("us-east-", false),
                ("us-east-1a", false),
                ("us-East-1", false),
                ("us-e4st-1", false),
                ("-us-east-1", false),
            ],
            &[],
        );
    }

    #[test]
    fn sns_topic_arn_prefix_rule() {
        const A: &str = "arn:aws:sns:us-east-1:123456789012:";
        let budget = 256 - longest_domain_topic();
        assert_eq!(budget, 232);
        let max = format!("{A}{}", "p".repeat(budget));
        let over = format!("{A}{}", "p".repeat(budget + 1));
        rule::<SnsTopicArnPrefix>(
            SnsTopicArnPrefix::PATTERN,
            &[
                (A, true),
                ("arn:aws:sns:us-east-1:123456789012:prod-_9", true),
                ("arn:aws-cn:sns:cn-north-1:123456789012:", true),
                ("arn:aws-us-gov:sns:us-gov-west-1:123456789012:", true),
                (&max, true),
                (&over, false),
                ("arn:aws-:sns:us-east-1:123456789012:", false),
                ("arn:aws--x:sns:us-east-1:123456789012:", false),
                ("arn:aws-CN:sns:cn-north-1:123456789012:", false),
                ("arn:awsx:sns:us-east-1:123456789012:", false),
                ("arn:gcp:sns:us-east-1:123456789012:", false),
                ("arn:aws:sqs:us-east-1:123456789012:", false),
                ("arn:aws:sns:useast1:123456789012:", false),
                ("arn:aws:sns:us-east-1:12345678901:", false),
                ("arn:aws:sns:us-east-1:1234567890123:", false),
                ("arn:aws:sns:us-east-1:12345678901x:", false),
                ("arn:aws:sns:us-east-1:123456789012:prod.", false),
                ("arn:aws:sns:us-east-1:123456789012:a:b", false),
                ("arn:aws:sns:us-east-1:123456789012", false),
                ("nra:aws:sns:us-east-1:123456789012:", false),
            ],
            &[],
        );
        let p = SnsTopicArnPrefix::from_str("arn:aws:sns:eu-west-3:123456789012:prod-").unwrap();
        assert_eq!(p.region().as_str(), "eu-west-3");
        assert_eq!(p.name_prefix(), "prod-");
    }

    #[test]
    fn iam_role_arn_rule() {
        const A: &str = "arn:aws:iam::123456789012:role/";
        let (max, over) = (
            format!("{A}{}", "r".repeat(512)),
            format!("{A}{}", "r".repeat(513)),
        );
        rule::<IamRoleArn>(
            IamRoleArn::PATTERN,
            &[
                ("arn:aws:iam::123456789012:role/edgewire-publisher", true),
                ("arn:aws:iam::123456789012:role/path/x+=,.@_-Y9", true),
                ("arn:aws-us-gov:iam::123456789012:role/r", true),
                (&max, true),
                (&over, false),
                ("arn:aws:iam::123456789012:role/", false),
                ("arn:aws:iam::123456789012:role/a b", false),
                ("arn:aws:iam::123456789012:role/a:b", false),
                ("arn:aws:iam::123456789012:user/u", false),
                ("arn:aws:iam:us-east-1:123456789012:role/r", false),
                ("arn:aws:sts::123456789012:role/r", false),
                ("arn:awsx:iam::123456789012:role/r", false),
                ("arn:aws:iam::12345678901:role/r", false),
                ("xrn:aws:iam::123456789012:role/r", false),
                ("arn:aws:iam::123456789012", false),
            ],
            &[],
        );
    }

    #[test]
    fn header_name_and_value_rules() {
        let (max, over) = ("h".repeat(HEADER_NAME_MAX), "h".repeat(HEADER_NAME_MAX + 1));
        rule::<HeaderName>(
            HeaderName::PATTERN,
            &[
                ("plant", true),
                ("!", true),
                ("~x-edge_line.4", true),
                (&max, true),
                (&over, false),
                ("", false),
                ("has space", false),
                ("colon:name", false),
                (":", false),
                ("line\nbreak", false),
                ("del\u{7f}", false),
                ("Größe", false),
            ],
            &[],
        );
        rule::<HeaderValue>(
            HeaderValue::PATTERN,
            &[
                ("", true),
                (" ", true),
                ("line 4: press ~!", true),
                ("a\r\nInjected: x", false),
                ("tab\there", false),
                ("del\u{7f}", false),
                ("Köln", false),
            ],
            &[],
        );
    }

    /// A CRD map cannot give its keys a pattern, so `spec.headers` holds only its values to one.
    #[test]
    fn the_headers_schema_holds_values_to_the_header_value_pattern() {
        let schema = headers_schema(&mut SchemaGenerator::default());
        let v = serde_json::to_value(&schema).unwrap();
        assert_eq!(v["type"], "object");
        assert_eq!(v["additionalProperties"]["type"], "string");
        assert_eq!(v["additionalProperties"]["pattern"], HeaderValue::PATTERN);
    }
}
