//! The operator's modules form layers, checked mechanically from the source: every `crate::` and `super::`
//! path a module names (in `use` lines and in code) must point down.
//!
//! - The shared kernel (everything outside `controller`, except `render` and `runtime`) never names a
//!   controller.
//! - `controller` (the runner) names no kind.
//! - In a kind, a stage names only earlier stages: `names` → `refs` → `validate` → `build` → `apply`
//!   (and the kind's cloud provisioning) → `status` → the kind's `mod.rs`, which runs the pipeline.
//! - A kind names another kind's `names` only.
//!
//! So there is no import circle between modules, and a reader finds each piece below what uses it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`controller::event_broker::build::broker`) of each source file under `src/`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts == ["main"] {
                continue; // the binary: it names the library as edgewire_operator::
            }
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// Strips comments, string literals and the `#[cfg(test)]` module at the end (whose `super` is the file's
/// own module), so only product code is searched for paths.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut in_str = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The longest known module that `segments` starts with.
fn resolve(known: &BTreeMap<String, PathBuf>, segments: &[String]) -> Option<String> {
    (0..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| known.contains_key(m))
}

/// Every module a module names through `crate::` and `super::` paths (brace groups of `use` expanded).
fn edges(known: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in known {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        let here: Vec<String> = if module.is_empty() {
            vec![]
        } else {
            module.split("::").map(String::from).collect()
        };
        let mut targets = BTreeSet::new();
        let mut add = |base: Vec<String>, rest: &str| {
            // `rest` is what follows the `crate::`/`super::` prefix: a path, or a brace group of paths.
            let rest = rest.trim_start_matches("::");
            let items: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut cur = String::new();
                let mut items = Vec::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            items.push(std::mem::take(&mut cur));
                            continue;
                        }
                        _ => {}
                    }
                    cur.push(c);
                }
                items.push(cur);
                items
            } else {
                vec![rest.to_string()]
            };
            for item in items {
                let mut segs = base.clone();
                for s in item.trim().split("::") {
                    let s: String = s
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if s.is_empty() {
                        break;
                    }
                    segs.push(s);
                }
                if let Some(m) = resolve(known, &segs) {
                    targets.insert(m);
                }
            }
        };
        let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
        let flat = flat
            .replace(":: ", "::")
            .replace(" ::", "::")
            .replace("{ ", "{")
            .replace(" }", "}");
        for (i, _) in flat.match_indices("crate::") {
            add(vec![], &flat[i + "crate::".len()..]);
        }
        let mut i = 0;
        while let Some(j) = flat[i..].find("super::") {
            let start = i + j;
            // Count a chain of `super::super::...`.
            let mut up = 0;
            let mut k = start;
            while flat[k..].starts_with("super::") {
                up += 1;
                k += "super::".len();
            }
            // A file's `super` is its parent module (a `mod.rs` is the module itself).
            let base: Vec<String> = here[..here.len().saturating_sub(up)].to_vec();
            add(base, &flat[k..]);
            i = k;
        }
        targets.remove(module);
        out.insert(module.clone(), targets);
    }
    out
}

/// Rank of a module inside its kind (`controller::<kind>::<stage>...`), `None` outside the kinds.
fn stage(module: &str) -> Option<(String, u32)> {
    let parts: Vec<&str> = module.split("::").collect();
    if parts.len() < 2 || parts[0] != "controller" || parts[1] == "backoff" {
        return None;
    }
    let rank = match parts.get(2).copied() {
        Some("names") => 0,
        Some("resolve") => 1,
        Some("refs") => 2,
        Some("validate") => 3,
        Some("build") => 4,
        Some("apply") | Some("topics") => 5,
        Some("status") => 6,
        Some("iotcore") => 7,
        None => 8,
        Some(other) => panic!("{module}: unknown stage {other}; give it a rank here"),
    };
    Some((parts[1].to_string(), rank))
}

fn violation(from: &str, to: &str) -> Option<String> {
    let top = |m: &str| matches!(m.split("::").next(), Some("render") | Some("runtime"));
    let kernel = |m: &str| !m.starts_with("controller") && !top(m) && !m.is_empty();
    if from.is_empty() || top(from) {
        return None;
    }
    if kernel(from) {
        return (!kernel(to)).then(|| "the kernel names only the kernel".into());
    }
    if from == "controller" {
        return (!kernel(to)).then(|| "the runner names only the kernel".into());
    }
    let (kind, rank) = stage(from)?;
    if kernel(to) || to == "controller" {
        return None;
    }
    let Some((to_kind, to_rank)) = stage(to) else {
        return Some("a kind names the kernel, the runner and its own earlier stages".into());
    };
    if to_kind != kind {
        return (to_rank != 0)
            .then(|| "another kind is named through its names module only".into());
    }
    let same_stage = from.split("::").nth(2) == to.split("::").nth(2);
    // Submodules of one stage (build::broker::nats → build::broker::common) may name each other's
    // parents and siblings, but never back up to the stage's root from its root.
    (to_rank > rank || (to_rank == rank && !same_stage))
        .then(|| format!("stage {rank} names a later stage ({to_rank})"))
}

#[test]
fn every_module_names_only_modules_below_it() {
    let src = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("src");
    let known = modules(&src);
    let edges = edges(&known);
    let mut bad = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if let Some(why) = violation(from, to) {
                bad.push(format!("{from} -> {to}: {why}"));
            }
        }
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn there_is_no_import_circle() {
    let src = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("src");
    let known = modules(&src);
    let edges = edges(&known);
    // Depth-first search for a back edge; a parent naming its child and the child naming the parent is one.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(1) => {
                let i = path.iter().position(|p| p == m).unwrap();
                let mut cycle = path[i..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for to in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(to, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            panic!("import circle: {}", cycle.join(" -> "));
        }
    }
}

/// The checker itself finds what it must: a circle and an upward edge in a made-up tree.
#[test]
fn the_checker_sees_an_upward_path() {
    assert!(
        violation(
            "controller::event_broker::validate",
            "controller::event_broker::build"
        )
        .is_some()
    );
    assert!(
        violation(
            "controller::event_broker::build",
            "controller::event_broker::validate"
        )
        .is_none()
    );
    assert!(
        violation(
            "controller::event_broker::validate",
            "controller::event_broker"
        )
        .is_some()
    );
    assert!(violation("pod", "controller::event_broker::names").is_some());
    assert!(
        violation(
            "controller::bridge_link::resolve",
            "controller::event_broker::names"
        )
        .is_none()
    );
    assert!(
        violation(
            "controller::bridge_link::resolve",
            "controller::event_broker"
        )
        .is_some()
    );
    assert!(violation("controller", "controller::event_broker").is_some());
}
