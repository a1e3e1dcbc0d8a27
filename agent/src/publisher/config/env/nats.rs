//! NATS: `EVENT_BROKER_NATS_URLS` (`nats://`, `tls://`), JetStream and its stream, and the auth modes in
//! their order of precedence (token, user/password, NKEY seed with an optional JWT).

use super::*;

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub(super) fn nats(&self, notes: &mut Vec<String>) -> Result<NatsConfig, ConfigError> {
        const URLS: &str = env::NATS_URLS;
        let username_var = env::adapter_var(Adapter::Nats, suffix::USERNAME);
        let password_var = env::adapter_var(Adapter::Nats, suffix::PASSWORD);
        let raw = self
            .get(URLS)
            .ok_or_else(|| ConfigError::new(URLS, "required for adapter nats"))?;
        let urls: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if urls.is_empty() {
            return Err(ConfigError::new(URLS, "required for adapter nats"));
        }
        let mut implied_tls = false;
        for u in &urls {
            match u.split_once("://") {
                Some(("nats", _)) | None => {}
                Some(("tls", _)) => implied_tls = true,
                Some((scheme, _)) => {
                    return Err(ConfigError::new(
                        URLS,
                        format!("unsupported scheme {scheme:?} (use nats:// or tls://)"),
                    ));
                }
            }
            if u.contains('@') {
                notes.push(format!("{URLS}: credentials in the URL are used as given"));
            }
        }
        let jetstream = if self.bool(env::NATS_JETSTREAM, false)? {
            let stream = self
                .get(env::NATS_STREAM)
                .unwrap_or_else(|| "EDGE_EVENTS".into());
            if !stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::new(
                    env::NATS_STREAM,
                    format!("must contain only letters, digits, _ and -, got {stream:?}"),
                ));
            }
            let max_age_raw = self
                .get(env::NATS_STREAM_MAX_AGE)
                .unwrap_or_else(|| "168h".into());
            let max_age = parse_go_duration(&max_age_raw).ok_or_else(|| {
                ConfigError::new(
                    env::NATS_STREAM_MAX_AGE,
                    format!("must be a Go duration like 168h or 30m, got {max_age_raw:?}"),
                )
            })?;
            Some(JetStreamConfig { stream, max_age })
        } else {
            None
        };
        let token = self.secret(env::NATS_TOKEN);
        let username = self.get(&username_var);
        let password = self.secret(&password_var);
        let seed = self.secret(env::NATS_NKEY_SEED);
        let jwt = self.secret(env::NATS_JWT);
        let auth = if let Some(token) = token {
            for (set, name) in [
                (username.is_some(), username_var.as_str()),
                (password.is_some(), password_var.as_str()),
                (seed.is_some(), env::NATS_NKEY_SEED),
                (jwt.is_some(), env::NATS_JWT),
            ] {
                if set {
                    notes.push(format!(
                        "{name} ignored: {} takes precedence",
                        env::NATS_TOKEN
                    ));
                }
            }
            NatsAuth::Token(token)
        } else if username.is_some() || password.is_some() {
            let username = username.ok_or_else(|| {
                ConfigError::new(&username_var, format!("required with {password_var}"))
            })?;
            let password = password.ok_or_else(|| {
                ConfigError::new(&password_var, format!("required with {username_var}"))
            })?;
            for (set, name) in [
                (seed.is_some(), env::NATS_NKEY_SEED),
                (jwt.is_some(), env::NATS_JWT),
            ] {
                if set {
                    notes.push(format!(
                        "{name} ignored: {username_var}/{password_var} take precedence"
                    ));
                }
            }
            NatsAuth::UserPassword { username, password }
        } else if let Some(seed) = seed {
            if !seed.expose().starts_with("SU") {
                return Err(ConfigError::new(
                    env::NATS_NKEY_SEED,
                    "must be a user NKEY seed (starts with \"SU\")",
                ));
            }
            NatsAuth::Nkey { seed, jwt }
        } else if jwt.is_some() {
            return Err(ConfigError::new(
                env::NATS_JWT,
                format!(
                    "requires {} (the JWT is signed with the seed's key)",
                    env::NATS_NKEY_SEED
                ),
            ));
        } else {
            NatsAuth::None
        };
        let tls = self.tls(Adapter::Nats, implied_tls)?;
        Ok(NatsConfig {
            urls,
            jetstream,
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
    fn nats_minimal_and_jetstream_defaults() {
        let BrokerConfig::Nats(n) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "nats://a:4222, nats://b:4222"),
        ]) else {
            panic!("not nats")
        };
        assert_eq!(n.urls, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(n.jetstream, None);
        assert_eq!(n.auth, NatsAuth::None);
        assert!(!n.tls.enabled);

        let BrokerConfig::Nats(n) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "tls://a:4222"),
            ("EVENT_BROKER_NATS_JETSTREAM", "true"),
        ]) else {
            panic!("not nats")
        };
        let js = n.jetstream.unwrap();
        assert_eq!(js.stream, "EDGE_EVENTS");
        assert_eq!(js.max_age, std::time::Duration::from_secs(168 * 3600));
        assert!(n.tls.enabled, "tls:// implies TLS");
    }

    #[test]
    fn nats_stream_extensions_are_validated() {
        let base = [
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "nats://a:4222"),
            ("EVENT_BROKER_NATS_JETSTREAM", "true"),
        ];
        let mut v = base.to_vec();
        v.push(("EVENT_BROKER_NATS_STREAM_MAX_AGE", "a week"));
        assert_eq!(err(&v).name, "EVENT_BROKER_NATS_STREAM_MAX_AGE");
        let mut v = base.to_vec();
        v.push(("EVENT_BROKER_NATS_STREAM", "bad.name"));
        assert_eq!(err(&v).name, "EVENT_BROKER_NATS_STREAM");
        let mut v = base.to_vec();
        v.extend([
            ("EVENT_BROKER_NATS_STREAM", "EVENTS"),
            ("EVENT_BROKER_NATS_STREAM_MAX_AGE", "30m"),
        ]);
        let BrokerConfig::Nats(n) = broker(&v) else {
            panic!()
        };
        assert_eq!(
            n.jetstream,
            Some(JetStreamConfig {
                stream: "EVENTS".into(),
                max_age: std::time::Duration::from_secs(1800)
            })
        );
    }

    #[test]
    fn nats_urls_required_and_scheme_checked() {
        assert_eq!(
            err(&[ON, ("EVENT_BROKER_ADAPTER", "nats")]).name,
            "EVENT_BROKER_NATS_URLS"
        );
        assert_eq!(
            err(&[
                ON,
                ("EVENT_BROKER_ADAPTER", "nats"),
                ("EVENT_BROKER_NATS_URLS", " , ")
            ])
            .name,
            "EVENT_BROKER_NATS_URLS"
        );
        assert_eq!(
            err(&[
                ON,
                ("EVENT_BROKER_ADAPTER", "nats"),
                ("EVENT_BROKER_NATS_URLS", "http://a:4222")
            ])
            .name,
            "EVENT_BROKER_NATS_URLS"
        );
    }

    fn nats_auth(extra: &[(&str, &str)]) -> Result<(NatsAuth, Vec<String>), ConfigError> {
        let mut v = vec![
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "nats://a:4222"),
        ];
        v.extend_from_slice(extra);
        let c = parse(&v)?;
        match c.broker {
            Some(BrokerConfig::Nats(n)) => Ok((n.auth, c.notes)),
            _ => panic!("not nats"),
        }
    }

    #[test]
    fn nats_token_takes_precedence_over_everything() {
        let (auth, notes) = nats_auth(&[
            ("EVENT_BROKER_NATS_TOKEN", "t0k"),
            ("EVENT_BROKER_NATS_USERNAME", "u"),
            ("EVENT_BROKER_NATS_PASSWORD", "p"),
            ("EVENT_BROKER_NATS_NKEY_SEED", "SUAAA"),
        ])
        .unwrap();
        assert_eq!(auth, NatsAuth::Token(Secret::new("t0k")));
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            notes
                .iter()
                .all(|n| n.contains("EVENT_BROKER_NATS_TOKEN takes precedence"))
        );
        assert!(
            !notes
                .iter()
                .any(|n| n.contains("t0k") || n.contains("SUAAA"))
        );
    }

    #[test]
    fn nats_user_password_then_nkey() {
        let (auth, _) = nats_auth(&[
            ("EVENT_BROKER_NATS_USERNAME", "u"),
            ("EVENT_BROKER_NATS_PASSWORD", "p"),
        ])
        .unwrap();
        assert_eq!(
            auth,
            NatsAuth::UserPassword {
                username: "u".into(),
                password: Secret::new("p")
            }
        );
        let (auth, notes) = nats_auth(&[
            ("EVENT_BROKER_NATS_USERNAME", "u"),
            ("EVENT_BROKER_NATS_PASSWORD", "p"),
            ("EVENT_BROKER_NATS_NKEY_SEED", "SUAAA"),
        ])
        .unwrap();
        assert_eq!(auth.mode(), "user/password");
        assert_eq!(notes.len(), 1);
        assert_eq!(
            nats_auth(&[("EVENT_BROKER_NATS_USERNAME", "u")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_NATS_PASSWORD"
        );
        assert_eq!(
            nats_auth(&[("EVENT_BROKER_NATS_PASSWORD", "p")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_NATS_USERNAME"
        );
    }

    #[test]
    fn nats_nkey_alone_or_with_jwt() {
        let (auth, _) = nats_auth(&[("EVENT_BROKER_NATS_NKEY_SEED", "SUXYZ")]).unwrap();
        assert_eq!(
            auth,
            NatsAuth::Nkey {
                seed: Secret::new("SUXYZ"),
                jwt: None
            }
        );
        let (auth, _) = nats_auth(&[
            ("EVENT_BROKER_NATS_NKEY_SEED", "SUXYZ"),
            ("EVENT_BROKER_NATS_JWT", "eyJ"),
        ])
        .unwrap();
        assert_eq!(auth.mode(), "nkey+jwt");
        assert_eq!(
            nats_auth(&[("EVENT_BROKER_NATS_JWT", "eyJ")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_NATS_JWT"
        );
        let e = nats_auth(&[("EVENT_BROKER_NATS_NKEY_SEED", "not-a-seed")]).unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_NATS_NKEY_SEED");
        assert!(
            !e.to_string().contains("not-a-seed"),
            "a secret leaked into {e}"
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let (auth, _) = nats_auth(&[
            ("EVENT_BROKER_NATS_TOKEN", ""),
            ("EVENT_BROKER_NATS_USERNAME", ""),
        ])
        .unwrap();
        assert_eq!(auth, NatsAuth::None);
    }
}
