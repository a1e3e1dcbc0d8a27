//! MQTT 3.1.1: `EVENT_BROKER_MQTT_URL` (`host:port`, no scheme), QoS, and the JWT or user/password login.

use super::*;

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub(super) fn mqtt(&self, notes: &mut Vec<String>) -> Result<MqttConfig, ConfigError> {
        const URL: &str = env::MQTT_URL;
        let username_var = env::adapter_var(Adapter::Mqtt, suffix::USERNAME);
        let password_var = env::adapter_var(Adapter::Mqtt, suffix::PASSWORD);
        let raw = self
            .get(URL)
            .ok_or_else(|| ConfigError::new(URL, "required for adapter mqtt"))?;
        let tls = self.tls(Adapter::Mqtt, false)?;
        let (host, port) = split_host_port(&raw, if tls.enabled { 8883 } else { 1883 })
            .ok_or_else(|| {
                ConfigError::new(
                    URL,
                    format!(
                        "must be host:port without a scheme, got {:?}",
                        crate::secret::redact_url(&raw)
                    ),
                )
            })?;
        let qos = match self.get(env::MQTT_QOS).as_deref() {
            None => 1,
            Some("0") => 0,
            Some("1") => 1,
            Some("2") => 2,
            Some(v) => {
                return Err(ConfigError::new(
                    env::MQTT_QOS,
                    format!("must be 0, 1 or 2, got {v:?}"),
                ));
            }
        };
        let jwt = self.secret(env::MQTT_JWT);
        let username = self.get(&username_var);
        let password = self.secret(&password_var);
        let auth = if let Some(token) = jwt {
            if password.is_some() {
                notes.push(format!(
                    "{password_var} ignored: {} takes precedence",
                    env::MQTT_JWT
                ));
            }
            MqttAuth::Jwt { username, token }
        } else if let Some(username) = username {
            MqttAuth::UserPassword { username, password }
        } else if password.is_some() {
            return Err(ConfigError::new(
                &username_var,
                format!(
                    "required with {password_var} (MQTT 3.1.1 sends no password without a user name)"
                ),
            ));
        } else {
            MqttAuth::None
        };
        Ok(MqttConfig {
            host,
            port,
            qos,
            auth,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn mqtt_defaults() {
        let (m, _) = mqtt(&[]).unwrap();
        assert_eq!((m.host.as_str(), m.port, m.qos), ("broker", 1883, 1));
        assert_eq!(m.auth, MqttAuth::None);
    }

    #[test]
    fn mqtt_qos_is_validated_with_the_documented_message() {
        for q in ["0", "1", "2"] {
            assert_eq!(
                mqtt(&[("EVENT_BROKER_MQTT_QOS", q)])
                    .unwrap()
                    .0
                    .qos
                    .to_string(),
                q
            );
        }
        let e = mqtt(&[("EVENT_BROKER_MQTT_QOS", "5")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "EVENT_BROKER_MQTT_QOS: must be 0, 1 or 2, got \"5\""
        );
    }

    #[test]
    fn mqtt_jwt_takes_precedence_over_user_password() {
        let (m, notes) = mqtt(&[
            ("EVENT_BROKER_MQTT_JWT", "eyJhbGciOi"),
            ("EVENT_BROKER_MQTT_USERNAME", "dev"),
            ("EVENT_BROKER_MQTT_PASSWORD", "pw"),
        ])
        .unwrap();
        assert_eq!(
            m.auth,
            MqttAuth::Jwt {
                username: Some("dev".into()),
                token: Secret::new("eyJhbGciOi")
            }
        );
        assert_eq!(notes.len(), 1);
        let (m, _) = mqtt(&[
            ("EVENT_BROKER_MQTT_USERNAME", "dev"),
            ("EVENT_BROKER_MQTT_PASSWORD", "pw"),
        ])
        .unwrap();
        assert_eq!(
            m.auth,
            MqttAuth::UserPassword {
                username: "dev".into(),
                password: Some(Secret::new("pw"))
            }
        );
        assert_eq!(
            mqtt(&[("EVENT_BROKER_MQTT_PASSWORD", "pw")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_MQTT_USERNAME"
        );
    }

    #[test]
    fn mqtt_url_must_not_carry_a_scheme() {
        let e = parse(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "mqtt"),
            ("EVENT_BROKER_MQTT_URL", "mqtt://b:1883"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_MQTT_URL");
    }
}
