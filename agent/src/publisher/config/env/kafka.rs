//! Kafka: bootstrap servers, the one-topic override, SASL and TLS.

use super::*;

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub(super) fn kafka(&self, notes: &mut Vec<String>) -> Result<KafkaConfig, ConfigError> {
        const URLS: &str = env::KAFKA_URLS;
        let username_var = env::adapter_var(Adapter::Kafka, suffix::USERNAME);
        let password_var = env::adapter_var(Adapter::Kafka, suffix::PASSWORD);
        let raw = self
            .get(URLS)
            .ok_or_else(|| ConfigError::new(URLS, "required for adapter kafka"))?;
        let brokers: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if brokers.is_empty() {
            return Err(ConfigError::new(URLS, "required for adapter kafka"));
        }
        for b in &brokers {
            if b.contains("://") {
                return Err(ConfigError::new(
                    URLS,
                    format!(
                        "must be host:port without a scheme, got {:?}",
                        crate::secret::redact_url(b)
                    ),
                ));
            }
            if split_host_port(b, 9092).is_none() {
                return Err(ConfigError::new(
                    URLS,
                    format!(
                        "must be a comma-separated list of host:port, got {:?}",
                        crate::secret::redact_url(b)
                    ),
                ));
            }
        }
        let topic = self.get(env::KAFKA_TOPIC);
        if let Some(t) = &topic
            && (t.len() > 249
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ConfigError::new(
                env::KAFKA_TOPIC,
                format!("must be 1-249 characters of letters, digits, '.', '_' and '-', got {t:?}"),
            ));
        }
        let mechanism = match self.get(env::KAFKA_SASL_MECHANISM) {
            None => SaslMechanism::Plain,
            Some(m) => parse_sasl_mechanism(&m).ok_or_else(|| {
                ConfigError::new(
                    env::KAFKA_SASL_MECHANISM,
                    format!("must be plain, scram_sha_256 or scram_sha_512, got {m:?}"),
                )
            })?,
        };
        let username = self.get(&username_var);
        let password = self.secret(&password_var);
        let sasl = match (username, password) {
            (None, None) => {
                if self.get(env::KAFKA_SASL_MECHANISM).is_some() {
                    notes.push(format!(
                        "{} ignored: no {username_var}",
                        env::KAFKA_SASL_MECHANISM
                    ));
                }
                None
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    &password_var,
                    format!("required with {username_var}"),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    &username_var,
                    format!("required with {password_var}"),
                ));
            }
            (Some(username), Some(password)) => Some(KafkaSasl {
                mechanism,
                username,
                password,
            }),
        };
        let tls = self.tls(Adapter::Kafka, false)?;
        Ok(KafkaConfig {
            brokers,
            topic,
            sasl,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn kafka(extra: &[(&str, &str)]) -> Result<KafkaConfig, ConfigError> {
        let mut v = vec![
            ON,
            ("EVENT_BROKER_ADAPTER", "kafka"),
            ("EVENT_BROKER_KAFKA_URLS", "k1:9092,k2:9092"),
        ];
        v.extend_from_slice(extra);
        match parse(&v)?.broker {
            Some(BrokerConfig::Kafka(k)) => Ok(k),
            _ => panic!("not kafka"),
        }
    }

    #[test]
    fn kafka_defaults_sasl_and_topic() {
        let k = kafka(&[]).unwrap();
        assert_eq!(k.brokers, vec!["k1:9092", "k2:9092"]);
        assert_eq!(k.sasl, None);
        assert_eq!(k.topic, None);
        let k = kafka(&[
            ("EVENT_BROKER_KAFKA_USERNAME", "u"),
            ("EVENT_BROKER_KAFKA_PASSWORD", "p"),
        ])
        .unwrap();
        assert_eq!(
            k.sasl.unwrap().mechanism,
            SaslMechanism::Plain,
            "plain is the default mechanism"
        );
        let k = kafka(&[
            ("EVENT_BROKER_KAFKA_USERNAME", "u"),
            ("EVENT_BROKER_KAFKA_PASSWORD", "p"),
            ("EVENT_BROKER_KAFKA_SASL_MECHANISM", "scram_sha_512"),
            ("EVENT_BROKER_KAFKA_SSL", "true"),
            ("EVENT_BROKER_KAFKA_TOPIC", "all-events"),
        ])
        .unwrap();
        assert_eq!(k.sasl.unwrap().mechanism, SaslMechanism::ScramSha512);
        assert!(k.tls.enabled);
        assert_eq!(k.topic.as_deref(), Some("all-events"));
    }

    #[test]
    fn kafka_errors_name_the_variable() {
        assert_eq!(
            kafka(&[("EVENT_BROKER_KAFKA_SASL_MECHANISM", "gssapi")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_KAFKA_SASL_MECHANISM"
        );
        assert_eq!(
            kafka(&[("EVENT_BROKER_KAFKA_USERNAME", "u")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_KAFKA_PASSWORD"
        );
        assert_eq!(
            kafka(&[("EVENT_BROKER_KAFKA_TOPIC", "bad topic")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_KAFKA_TOPIC"
        );
        let e = parse(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "kafka"),
            ("EVENT_BROKER_KAFKA_URLS", "kafka://k:9092"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_KAFKA_URLS");
    }
}
