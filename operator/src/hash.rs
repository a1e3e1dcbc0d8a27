//! The credentials hash: one digest over the data of every Secret a resource references. It goes into the
//! pod-template annotation `edgewire.dev/credentials-hash` (a changed Secret rolls the workload) and into
//! `status.credentialsRevision`. Only the digest leaves this module, never the data.

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

/// `sha256:<hex>` over the secrets' names, keys and values, in a stable order (the caller's order of
/// `secrets` does not matter).
pub fn credentials_hash<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> String {
    let mut entries: Vec<(String, String, &[u8])> = Vec::new();
    for s in secrets {
        let name = s.metadata.name.clone().unwrap_or_default();
        for (k, v) in s.data.iter().flatten() {
            entries.push((name.clone(), k.clone(), &v.0));
        }
        for (k, v) in s.string_data.iter().flatten() {
            entries.push((name.clone(), k.clone(), v.as_bytes()));
        }
    }
    entries.sort();
    entries.dedup();
    let mut h = Sha256::new();
    for (name, key, value) in entries {
        for part in [name.as_bytes(), key.as_bytes(), value] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(name: &str, k: &str, v: &str) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some([(k.to_string(), ByteString(v.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn changes_with_any_value_and_ignores_order() {
        let a = secret("a", "token", "one");
        let b = secret("b", "password", "two");
        let h1 = credentials_hash([&a, &b]);
        assert_eq!(h1, credentials_hash([&b, &a]));
        assert!(h1.starts_with("sha256:"));
        assert_ne!(h1, credentials_hash([&secret("a", "token", "uno"), &b]));
        assert_ne!(h1, credentials_hash([&a]));
        assert!(!h1.contains("one"));
    }
}
