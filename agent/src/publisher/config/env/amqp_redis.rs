//! The brokers configured by one URL that may hold credentials: AMQP 0-9-1 (`EVENT_BROKER_RABBITMQ_URL`)
//! and Redis (`EVENT_BROKER_REDIS_URL`). The TLS scheme implies TLS; the URL is never echoed.

use super::*;

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub(super) fn amqp(&self) -> Result<AmqpConfig, ConfigError> {
        const URL: &str = env::RABBITMQ_URL;
        let url = self
            .secret(URL)
            .ok_or_else(|| ConfigError::new(URL, "required for adapter amqp091"))?;
        let implied = check_scheme(URL, url.expose(), "amqp", "amqps")?;
        let tls = self.tls(Adapter::Amqp091, implied)?;
        Ok(AmqpConfig { url, tls })
    }

    pub(super) fn redis(&self) -> Result<RedisConfig, ConfigError> {
        const URL: &str = env::REDIS_URL;
        let url = self
            .secret(URL)
            .ok_or_else(|| ConfigError::new(URL, "required for adapter redis"))?;
        let implied = check_scheme(URL, url.expose(), "redis", "rediss")?;
        let tls = self.tls(Adapter::Redis, implied)?;
        Ok(RedisConfig { url, tls })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn amqp_alias_and_url_scheme() {
        for a in ["amqp091", "rabbitmq"] {
            let b = broker(&[
                ON,
                ("EVENT_BROKER_ADAPTER", a),
                ("EVENT_BROKER_RABBITMQ_URL", "amqp://u:p@h:5672/%2f"),
            ]);
            assert_eq!(b.adapter_name(), "amqp091");
        }
        let BrokerConfig::Amqp(a) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "rabbitmq"),
            ("EVENT_BROKER_RABBITMQ_URL", "amqps://u:p@h"),
        ]) else {
            panic!()
        };
        assert!(a.tls.enabled, "amqps:// implies TLS");
        let e = err(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "rabbitmq"),
            ("EVENT_BROKER_RABBITMQ_URL", "http://u:s3cr3t@h"),
        ]);
        assert_eq!(e.name, "EVENT_BROKER_RABBITMQ_URL");
        assert!(
            !e.to_string().contains("s3cr3t"),
            "URL credentials leaked: {e}"
        );
    }

    #[test]
    fn redis_url_and_ssl() {
        let BrokerConfig::Redis(r) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "redis"),
            ("EVENT_BROKER_REDIS_URL", "rediss://:pw@h:6380"),
        ]) else {
            panic!()
        };
        assert!(r.tls.enabled);
        let BrokerConfig::Redis(r) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "redis"),
            ("EVENT_BROKER_REDIS_URL", "redis://h:6379"),
            ("EVENT_BROKER_REDIS_SSL", "true"),
        ]) else {
            panic!()
        };
        assert!(r.tls.enabled);
        assert_eq!(
            err(&[ON, ("EVENT_BROKER_ADAPTER", "redis")]).name,
            "EVENT_BROKER_REDIS_URL"
        );
    }
}
