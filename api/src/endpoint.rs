//! Endpoint overrides (`awsSns.endpoint`, `googlePubsub.endpoint`, `iotcore.apiEndpoint`: VPC or private
//! endpoints, local emulators): one rule for the operator's validation and the agent's parsers, so an
//! endpoint the operator accepts is one the publisher it deploys starts with.

/// An `http://` or `https://` URL with a host and no credentials in it, returned without a trailing `/`;
/// otherwise why not (a message for a person; it quotes the value).
pub fn endpoint_override(s: &str) -> Result<String, String> {
    let ok = url::Url::parse(s).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some_and(|h| !h.is_empty())
            && u.username().is_empty()
            && u.password().is_none()
    });
    if ok {
        Ok(s.trim().trim_end_matches('/').to_string())
    } else {
        Err(format!(
            "{s:?} must be an http:// or https:// URL with a host and no credentials"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_or_https_with_a_host_and_no_credentials() {
        assert_eq!(
            endpoint_override("http://127.0.0.1:5000/").as_deref(),
            Ok("http://127.0.0.1:5000")
        );
        assert_eq!(
            endpoint_override("https://pubsub.googleapis.com").as_deref(),
            Ok("https://pubsub.googleapis.com")
        );
        for bad in [
            "localhost:5000",
            "ftp://h",
            "http://",
            "http://u:p@h",
            "https://:p@h",
            "",
        ] {
            let e = endpoint_override(bad).unwrap_err();
            assert!(
                !bad.contains(':') || e.contains("must be an http"),
                "{bad}: {e}"
            );
        }
    }
}
