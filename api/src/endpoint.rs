//! Endpoint overrides (`awsSns.endpoint`, `googlePubsub.endpoint`, `iotcore.apiEndpoint`: VPC or private
//! endpoints, local emulators): one rule for the operator's validation and the agent's parsers, so an
//! endpoint the operator accepts is one the publisher it deploys starts with.

/// An `http://` or `https://` URL with a host and no credentials in it, returned without a trailing `/`;
/// otherwise why not (a message for a person; it quotes the value without any credentials in it: the
/// message reaches the resource's status, Events and logs).
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
            "{} must be an http:// or https:// URL with a host and no credentials",
            shown(s)
        ))
    }
}

/// `s` quoted for a message, with whatever could be a user name or password taken out.
fn shown(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if matches!(u.scheme(), "http" | "https") => {
            if u.username().is_empty() && u.password().is_none() {
                return format!("{s:?}");
            }
            let _ = u.set_username("");
            let _ = u.set_password(None);
            format!("{:?} (credentials removed)", u.as_str())
        }
        _ => match s.rfind('@') {
            Some(at) => format!("{:?} (credentials removed)", &s[at + 1..]),
            None => format!("{s:?}"),
        },
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
            "u:secretpw@h",
            "",
        ] {
            let e = endpoint_override(bad).unwrap_err();
            assert!(
                !bad.contains(':') || e.contains("must be an http"),
                "{bad}: {e}"
            );
            assert!(!e.contains("secretpw") && !e.contains("u:p"), "{bad}: {e}");
        }
        let e = endpoint_override("http://user:Planted@127.0.0.1:5000").unwrap_err();
        assert!(!e.contains("Planted") && !e.contains("user"), "{e}");
        assert!(e.contains("127.0.0.1:5000"), "{e}");
    }
}
