//! The fuzz targets (`edgewire_agent::fuzzing`, run by libFuzzer from `fuzz/`) on stable: every seed of
//! `fuzz/corpus/<target>/`, then generated input — random bytes, and mutations of the seeds (bytes
//! flipped, inserted, deleted, spliced), the cheap half of what a fuzzer does. Cases are bounded;
//! `PROPTEST_CASES` raises them (`make fuzz` without cargo-fuzz does).

use std::path::PathBuf;

use edgewire_agent::fuzzing;
use proptest::prelude::*;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../fuzz/corpus")
    .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out.into_iter().map(|(_, b)| b).collect()
}

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Splice(usize, usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let interesting = prop::sample::select(vec![
        b"\n".to_vec(),
        b"\r\n".to_vec(),
        b"\0".to_vec(),
        b"\"".to_vec(),
        b"\\n".to_vec(),
        b"\\u0000".to_vec(),
        b":".to_vec(),
        b" ".to_vec(),
        b"$".to_vec(),
        b"#".to_vec(),
        b"*".to_vec(),
        b".".to_vec(),
        b"{".to_vec(),
        b"[".to_vec(),
        "é".as_bytes().to_vec(),
        vec![0xff],
        b"x".repeat(300),
    ]);
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ];
    prop::collection::vec(edit, 1..8)
}

fn apply(mut data: Vec<u8>, edits: &[Edit], other: &[u8]) -> Vec<u8> {
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, b) if !data.is_empty() => {
                let i = i % data.len();
                data[i] ^= b | 1;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, b) => {
                let i = at(*i, data.len());
                data.splice(i..i, b.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(*i, data.len());
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
            Edit::Splice(i, j, n) if !other.is_empty() => {
                let i = at(*i, data.len());
                let j = j % other.len();
                let end = (j + n).min(other.len());
                data.splice(i..i, other[j..end].iter().copied());
            }
            Edit::Splice(..) => {}
        }
    }
    data
}

macro_rules! target {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn every_seed() {
                for s in seeds(stringify!($name)) {
                    fuzzing::$name(&s);
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig {
                    failure_persistence: None,
                    ..ProptestConfig::default()
                })]

                #[test]
                fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
                    fuzzing::$name(&data);
                }

                #[test]
                fn mutated_seeds(pick in any::<usize>(), other in any::<usize>(), e in edits()) {
                    let s = seeds(stringify!($name));
                    let base = s[pick % s.len()].clone();
                    let data = apply(base, &e, &s[other % s.len()]);
                    fuzzing::$name(&data);
                }
            }
        }
    };
}

target!(cloudevent);
target!(pattern);
target!(env);
target!(yaml);
