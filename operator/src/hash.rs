//! The credentials hash: one digest over the data of every Secret a resource references. It goes into the
//! pod-template annotation `edgewire.dev/credentials-hash` (a changed Secret rolls the workload) and into
//! `status.credentialsRevision`. Only the digest leaves this module, never the data. Every `sha256:<hex>` the
//! operator writes (credentials hash, config hashes) is made by [`sha256`].

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

/// `sha256:<hex>` of what `feed` writes into the hasher.
pub fn sha256(feed: impl FnOnce(&mut Sha256)) -> String {
    let mut h = Sha256::new();
    feed(&mut h);
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Writes `part` length-prefixed, so `("ab", "c")` and `("a", "bc")` hash differently.
pub fn update_prefixed(h: &mut Sha256, part: &[u8]) {
    h.update((part.len() as u64).to_be_bytes());
    h.update(part);
}

/// SHA-256 of `domain` and `parts`, each part length-prefixed. Used to derive deterministic salts and ids:
/// a rendered Secret must not change between reconciles.
pub fn derive(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for p in parts {
        update_prefixed(&mut h, p);
    }
    h.finalize().into()
}

/// `sha256:<hex>` over a Secret's data (keys and values, length-prefixed, in key order): the config hash of a
/// rendered config Secret.
pub fn secret_data_digest(secret: &Secret) -> String {
    sha256(|h| {
        for (k, v) in secret.data.iter().flatten() {
            update_prefixed(h, k.as_bytes());
            update_prefixed(h, &v.0);
        }
    })
}

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
    sha256(|h| {
        for (name, key, value) in entries {
            for part in [name.as_bytes(), key.as_bytes(), value] {
                update_prefixed(h, part);
            }
        }
    })
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
