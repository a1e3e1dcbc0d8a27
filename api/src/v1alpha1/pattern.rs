//! Topic patterns in Edgewire's neutral syntax: dot-separated tokens, `*` matches one token, `#` matches the
//! rest (last token only), as in `local.telemetry.#`. Patterns translate to each protocol's wildcards, match
//! concrete topics, and substitute what they captured into a target pattern.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One token of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// A literal token.
    Literal(String),
    /// `*`: exactly one token.
    One,
    /// `#`: one or more remaining tokens (last position only).
    Rest,
}

/// A validated topic pattern in the neutral syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern {
    raw: String,
    tokens: Vec<Token>,
}

/// Why a pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern {0:?} has an empty token (two dots in a row, or a leading or trailing dot)")]
    EmptyToken(String),
    #[error("pattern {0:?}: '#' may only be the last token")]
    RestNotLast(String),
    #[error(
        "pattern {pattern:?}: token {token:?} holds a wildcard or separator character ('*', '#', '+', '>', '/', or white space) that is not the whole token"
    )]
    BadToken { pattern: String, token: String },
}

/// The values `*` and `#` captured when a pattern matched a topic.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Captures {
    /// One entry per `*`, in order.
    pub ones: Vec<String>,
    /// The tokens `#` matched, if the pattern has one.
    pub rest: Option<Vec<String>>,
}

impl TopicPattern {
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        let parts: Vec<&str> = s.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let t = match *p {
                "" => return Err(PatternError::EmptyToken(s.into())),
                "*" => Token::One,
                "#" if i + 1 == parts.len() => Token::Rest,
                "#" => return Err(PatternError::RestNotLast(s.into())),
                lit if lit
                    .chars()
                    .any(|c| matches!(c, '*' | '#' | '+' | '>' | '/') || c.is_whitespace()) =>
                {
                    return Err(PatternError::BadToken {
                        pattern: s.into(),
                        token: lit.into(),
                    });
                }
                lit => Token::Literal(lit.into()),
            };
            tokens.push(t);
        }
        Ok(Self {
            raw: s.into(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Whether the pattern has no wildcard (a single concrete topic).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    fn join(&self, sep: &str, one: &str, rest: &str) -> String {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Literal(l) => l.as_str(),
                Token::One => one,
                Token::Rest => rest,
            })
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// MQTT topic filter: `/` separators, `+` and `#`.
    pub fn to_mqtt(&self) -> String {
        self.join("/", "+", "#")
    }

    /// NATS subject: `.` separators, `*` and `>`.
    pub fn to_nats(&self) -> String {
        self.join(".", "*", ">")
    }

    /// AMQP 0-9-1 topic-exchange binding key: the neutral syntax as it is.
    pub fn to_amqp(&self) -> String {
        self.raw.clone()
    }

    /// Match a topic given as tokens; the captures on success.
    pub fn captures<S: AsRef<str>>(&self, topic: &[S]) -> Option<Captures> {
        let mut caps = Captures::default();
        for (i, t) in self.tokens.iter().enumerate() {
            match t {
                Token::Rest => {
                    if topic.len() <= i {
                        return None;
                    }
                    caps.rest = Some(topic[i..].iter().map(|s| s.as_ref().to_owned()).collect());
                    return Some(caps);
                }
                Token::One => caps.ones.push(topic.get(i)?.as_ref().to_owned()),
                Token::Literal(l) => {
                    if topic.get(i)?.as_ref() != l {
                        return None;
                    }
                }
            }
        }
        (topic.len() == self.tokens.len()).then_some(caps)
    }

    /// Match an MQTT topic (`/`-separated).
    pub fn captures_mqtt(&self, topic: &str) -> Option<Captures> {
        self.captures(&topic.split('/').collect::<Vec<_>>())
    }

    /// Match a NATS subject or AMQP routing key (`.`-separated).
    pub fn captures_dotted(&self, topic: &str) -> Option<Captures> {
        self.captures(&topic.split('.').collect::<Vec<_>>())
    }

    /// The concrete tokens of this pattern with `caps` substituted: the n-th `*` takes the n-th captured
    /// `*`, `#` takes the captured rest. `None` when the captures do not fill the pattern.
    pub fn substitute(&self, caps: &Captures) -> Option<Vec<String>> {
        let mut ones = caps.ones.iter();
        let mut out = Vec::with_capacity(self.tokens.len());
        for t in &self.tokens {
            match t {
                Token::Literal(l) => out.push(l.clone()),
                Token::One => out.push(ones.next()?.clone()),
                Token::Rest => out.extend(caps.rest.as_ref()?.iter().cloned()),
            }
        }
        Some(out)
    }

    /// Checks that `target` can be filled from what `self` captures: it has no more `*` than `self`, and a
    /// `#` only if `self` has one.
    pub fn can_fill(&self, target: &TopicPattern) -> bool {
        let count = |p: &TopicPattern| p.tokens.iter().filter(|t| **t == Token::One).count();
        let has_rest = |p: &TopicPattern| p.tokens.last() == Some(&Token::Rest);
        count(target) <= count(self) && (!has_rest(target) || has_rest(self))
    }

    /// Whether some concrete topic matches both patterns.
    pub fn overlaps(&self, other: &TopicPattern) -> bool {
        let (a, b) = (&self.tokens, &other.tokens);
        let mut i = 0;
        loop {
            match (a.get(i), b.get(i)) {
                (Some(Token::Rest), Some(_)) | (Some(_), Some(Token::Rest)) => return true,
                (None, None) => return true,
                (None, Some(_)) | (Some(_), None) => return false,
                (Some(Token::Literal(x)), Some(Token::Literal(y))) if x != y => return false,
                _ => i += 1,
            }
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for TopicPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for TopicPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The schema mirrors `parse`: tokens of anything but separators and wildcards, `*` tokens, `#` last.
pub const TOPIC_PATTERN_REGEX: &str = r"^(#|([^.*#+>/\s]+|\*)(\.([^.*#+>/\s]+|\*))*(\.#)?)$";

impl JsonSchema for TopicPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TopicPattern".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": TOPIC_PATTERN_REGEX,
            "description": "Dot-separated tokens; `*` matches one token, `#` (last only) the rest."
        })
    }
    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TopicPattern {
        TopicPattern::parse(s).unwrap()
    }

    #[test]
    fn translates_to_each_protocol() {
        let pat = p("local.*.telemetry.#");
        assert_eq!(pat.to_mqtt(), "local/+/telemetry/#");
        assert_eq!(pat.to_nats(), "local.*.telemetry.>");
        assert_eq!(pat.to_amqp(), "local.*.telemetry.#");
    }

    #[test]
    fn rejects_malformed_patterns() {
        assert_eq!(TopicPattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            TopicPattern::parse("a..b"),
            Err(PatternError::EmptyToken(_))
        ));
        assert!(matches!(
            TopicPattern::parse("a.#.b"),
            Err(PatternError::RestNotLast(_))
        ));
        assert!(matches!(
            TopicPattern::parse("a/b"),
            Err(PatternError::BadToken { .. })
        ));
        assert!(matches!(
            TopicPattern::parse("a.b*"),
            Err(PatternError::BadToken { .. })
        ));
        assert!(matches!(
            TopicPattern::parse("a.>"),
            Err(PatternError::BadToken { .. })
        ));
    }

    #[test]
    fn captures_and_substitutes_rest_into_target() {
        let from = p("local.telemetry.#");
        let to = p("edge.site-a.telemetry.#");
        let caps = from.captures_mqtt("local/telemetry/line1/temp").unwrap();
        assert_eq!(
            to.substitute(&caps).unwrap().join("."),
            "edge.site-a.telemetry.line1.temp"
        );
        assert!(
            from.captures_mqtt("local/telemetry").is_none(),
            "# needs at least one token"
        );
        assert!(from.captures_mqtt("local/other/x").is_none());
    }

    #[test]
    fn star_captures_fill_stars_in_order() {
        let from = p("plant.*.line.*");
        let to = p("cloud.*.*");
        let caps = from.captures_dotted("plant.p1.line.l7").unwrap();
        assert_eq!(to.substitute(&caps).unwrap(), vec!["cloud", "p1", "l7"]);
        assert!(from.captures_dotted("plant.p1.line").is_none());
        assert!(from.captures_dotted("plant.p1.line.l7.extra").is_none());
        assert!(from.can_fill(&to));
        assert!(!p("a.b").can_fill(&p("c.#")));
        assert!(!p("a.*").can_fill(&p("c.*.*")));
    }

    #[test]
    fn overlap() {
        assert!(p("local.#").overlaps(&p("local.commands")));
        assert!(p("local.*").overlaps(&p("*.commands")));
        assert!(!p("local.commands").overlaps(&p("local.telemetry.#")));
        assert!(!p("a.b").overlaps(&p("a.b.c")));
        assert!(p("#").overlaps(&p("x.y")));
    }

    #[test]
    fn literal_patterns_tokens_and_text() {
        assert!(p("local.commands").is_literal());
        assert!(!p("local.*").is_literal());
        assert!(!p("local.#").is_literal());
        assert_eq!(
            p("a.*.#").tokens(),
            &[Token::Literal("a".into()), Token::One, Token::Rest]
        );
        let pat = p("edge.*.x");
        assert_eq!(pat.as_str(), "edge.*.x");
        assert_eq!(pat.to_string(), "edge.*.x");
        assert_eq!("edge.*.x".parse::<TopicPattern>(), Ok(pat.clone()));
        assert!("edge..x".parse::<TopicPattern>().is_err());
    }

    #[test]
    fn serde_round_trip_and_refusal() {
        let pat = p("local.*.#");
        let json = serde_json::to_value(&pat).unwrap();
        assert_eq!(json, serde_json::json!("local.*.#"));
        assert_eq!(serde_json::from_value::<TopicPattern>(json).unwrap(), pat);
        let err = serde_json::from_value::<TopicPattern>(serde_json::json!("a.#.b")).unwrap_err();
        assert!(
            err.to_string().contains("may only be the last token"),
            "{err}"
        );
    }

    #[test]
    fn substitution_needs_what_the_target_uses() {
        let caps = p("a.*").captures_dotted("a.x").unwrap();
        assert_eq!(caps.ones, vec!["x"]);
        assert_eq!(caps.rest, None);
        assert_eq!(p("b.*.*").substitute(&caps), None, "two stars, one capture");
        assert_eq!(p("b.#").substitute(&caps), None, "no rest captured");
        assert_eq!(
            p("b.c").substitute(&caps),
            Some(vec!["b".into(), "c".into()])
        );
        // Fewer stars in the target than captured is fine; more is not.
        assert!(p("a.*.*").can_fill(&p("c.*")));
        assert!(p("a.#").can_fill(&p("c.#")));
        assert!(!p("a.*").can_fill(&p("c.#")));
        // `#` captures everything after its position, across separators of each protocol.
        let caps = p("a.#").captures_mqtt("a/b/c").unwrap();
        assert_eq!(caps.rest, Some(vec!["b".into(), "c".into()]));
        assert_eq!(
            p("#").captures_dotted("x.y").unwrap().rest.unwrap().len(),
            2
        );
        assert!(p("a.b").captures_mqtt("a.b").is_none(), "MQTT splits on /");
        assert!(
            p("a.b").captures_dotted("a/b").is_none(),
            "NATS splits on ."
        );
        assert!(p("a.b").captures_dotted("a.c").is_none());
        assert!(p("a.b").captures_dotted("a").is_none());
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        for (a, b, want) in [
            ("a.#", "a.b.c", true),
            ("a.*", "a.b", true),
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.*", "a.b.c", false),
            ("a.*.c", "a.b.d", false),
            ("*.#", "x", false),
            ("#", "#", true),
        ] {
            assert_eq!(p(a).overlaps(&p(b)), want, "{a} vs {b}");
            assert_eq!(p(b).overlaps(&p(a)), want, "{b} vs {a}");
        }
    }

    #[test]
    fn schema_regex_agrees_with_parser() {
        let re = regex_lite::Regex::new(TOPIC_PATTERN_REGEX).unwrap();
        for s in [
            "#",
            "a",
            "a.b",
            "a.*.c",
            "a.#",
            "*",
            "edge.site-a.telemetry.#",
            "x:y.z_1",
        ] {
            assert!(re.is_match(s), "{s} should match");
            assert!(TopicPattern::parse(s).is_ok(), "{s} should parse");
        }
        for s in ["", "a..b", "a.#.b", "a/b", "a.b*", ".a", "a.", "a b", "a.>"] {
            assert!(!re.is_match(s), "{s} should not match");
            assert!(TopicPattern::parse(s).is_err(), "{s} should not parse");
        }
    }

    mod properties {
        //! Translation round trips over generated patterns and topics.

        use super::super::*;
        use proptest::prelude::*;

        /// A literal token: anything the parser takes (no separator, wildcard or white space).
        fn literal() -> impl Strategy<Value = String> {
            "[^.*#+>/\\s]{1,8}"
        }

        #[derive(Debug, Clone)]
        enum Gen {
            Lit(String),
            One,
        }

        fn pattern() -> impl Strategy<Value = (Vec<Gen>, bool)> {
            (
                prop::collection::vec(
                    prop_oneof![literal().prop_map(Gen::Lit), Just(Gen::One)],
                    0..6,
                ),
                any::<bool>(),
            )
                .prop_filter("not empty", |(t, rest)| !t.is_empty() || *rest)
        }

        fn text(tokens: &[Gen], rest: bool) -> String {
            let mut parts: Vec<String> = tokens
                .iter()
                .map(|t| match t {
                    Gen::Lit(l) => l.clone(),
                    Gen::One => "*".into(),
                })
                .collect();
            if rest {
                parts.push("#".into());
            }
            parts.join(".")
        }

        proptest! {
            #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

            /// Neutral → MQTT / NATS / AMQP → neutral gives the same pattern.
            #[test]
            fn protocol_forms_translate_back((tokens, rest) in pattern()) {
                let s = text(&tokens, rest);
                let p = TopicPattern::parse(&s).unwrap();
                prop_assert_eq!(p.as_str(), s.as_str());
                let mqtt = p.to_mqtt().replace('/', ".").replace('+', "*");
                prop_assert_eq!(TopicPattern::parse(&mqtt).unwrap(), p.clone());
                let nats = p.to_nats().replace('>', "#");
                prop_assert_eq!(TopicPattern::parse(&nats).unwrap(), p.clone());
                prop_assert_eq!(TopicPattern::parse(&p.to_amqp()).unwrap(), p);
            }

            /// A topic made by filling a pattern's wildcards is matched, in both separators, with captures
            /// that substitute back into the same topic; mapped through a second pattern with the same
            /// wildcards and back, it is the topic again (a bridge rule and its reverse).
            #[test]
            fn captures_substitute_and_map_back(
                (tokens, rest) in pattern(),
                fill in prop::collection::vec(literal(), 1..8),
                other in prop::collection::vec(literal(), 6),
            ) {
                let p = TopicPattern::parse(&text(&tokens, rest)).unwrap();
                let mut next = fill.iter().cycle();
                let mut topic: Vec<String> = Vec::new();
                for t in &tokens {
                    topic.push(match t {
                        Gen::Lit(l) => l.clone(),
                        Gen::One => next.next().unwrap().clone(),
                    });
                }
                if rest {
                    topic.extend(fill.iter().cloned());
                }
                let caps = p.captures(&topic).expect("matches the topic made from it");
                prop_assert_eq!(p.substitute(&caps), Some(topic.clone()));
                prop_assert_eq!(p.captures_dotted(&topic.join(".")), Some(caps.clone()));
                prop_assert_eq!(p.captures_mqtt(&topic.join("/")), Some(caps.clone()));
                // The same wildcards with other literals: forward and back.
                let q_tokens: Vec<Gen> = tokens
                    .iter()
                    .zip(other.iter().cycle())
                    .map(|(t, o)| match t {
                        Gen::Lit(_) => Gen::Lit(o.clone()),
                        Gen::One => Gen::One,
                    })
                    .collect();
                let q = TopicPattern::parse(&text(&q_tokens, rest)).unwrap();
                prop_assert!(p.can_fill(&q) && q.can_fill(&p));
                let mapped = q.substitute(&caps).unwrap();
                let back = p.substitute(&q.captures(&mapped).unwrap());
                prop_assert_eq!(back, Some(topic));
            }
        }
    }
}
