//! The checked-in CRDs (crds/ and the chart copy) must be what the code generates: `make crds` refreshes them.

use std::path::Path;

#[test]
fn checked_in_crds_match_the_code() {
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .parent()
    .unwrap()
    .to_path_buf();
    for crd in edgewire_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let file = root.join("crds").join(format!("{name}.yaml"));
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            on_disk == edgewire_api::crd_yaml(&crd).unwrap(),
            "{} is out of date: run `make crds`",
            file.display()
        );
        let chart = root
            .join("charts/edgewire/templates/crds")
            .join(format!("{name}.yaml"));
        let on_disk = std::fs::read_to_string(&chart).unwrap_or_default();
        assert!(
            on_disk == edgewire_api::crd_chart_template(&crd).unwrap(),
            "{} is out of date: run `make crds`",
            chart.display()
        );
    }
}

/// The reference pages under docs/reference/ are generated from the same CRDs.
#[test]
fn checked_in_reference_pages_match_the_code() {
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .parent()
    .unwrap()
    .to_path_buf();
    let mut names = Vec::new();
    for crd in edgewire_api::crds() {
        let name = edgewire_api::reference_file_name(&crd);
        let file = root.join("docs/reference").join(&name);
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            on_disk == edgewire_api::crd_reference(&crd),
            "{} is out of date: run `make crds`",
            file.display()
        );
        names.push(name);
    }
    assert_eq!(names, ["eventbroker.md", "mqttbroker.md", "bridgelink.md"]);
}

#[test]
fn crds_carry_names_categories_and_status_subresource() {
    let crds = edgewire_api::crds();
    let names: Vec<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "eventbrokers.edgewire.dev",
            "mqttbrokers.edgewire.dev",
            "bridgelinks.edgewire.dev"
        ]
    );
    for (crd, short) in crds.iter().zip(["eb", "mqb", "bl"]) {
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["edgewire".to_string()][..])
        );
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(cols.contains(&"Ready") && cols.contains(&"Age"), "{cols:?}");
        let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
        let conds = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conds["x-kubernetes-list-type"], "map");
        assert_eq!(conds["x-kubernetes-list-map-keys"][0], "type");
    }
}

/// Every property under `v` without a `description`, as `path.field` (`[]` for list items), through
/// nested objects, list items, map values and `anyOf`/`oneOf`/`allOf`.
fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
    if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
        for (k, p) in props {
            let here = format!("{path}.{k}");
            if p.get("description").is_none()
                && !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
            {
                missing.push(here.clone());
            }
            walk(&here, p, missing);
        }
    }
    if let Some(items) = v.get("items") {
        walk(&format!("{path}[]"), items, missing);
    }
    if let Some(values) = v.get("additionalProperties").filter(|a| a.is_object()) {
        walk(&format!("{path}{{}}"), values, missing);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for s in v.get(key).and_then(|a| a.as_array()).into_iter().flatten() {
            walk(path, s, missing);
        }
    }
}

#[test]
fn the_description_walk_finds_undocumented_fields_at_any_depth() {
    let schema = serde_json::json!({"properties": {
        "documented": {"description": "d", "type": "string"},
        "bare": {"type": "string"},
        "list": {"description": "d", "type": "array", "items": {"properties": {"inner": {"type": "string"}}}},
        "map": {"description": "d", "type": "object", "additionalProperties": {"properties": {"v": {"type": "string"}}}},
        "either": {"description": "d", "anyOf": [{"properties": {"alt": {"type": "string"}}}]}
    }});
    let mut missing = Vec::new();
    walk("X.status", &schema, &mut missing);
    missing.sort();
    assert_eq!(
        missing,
        [
            "X.status.bare",
            "X.status.either.alt",
            "X.status.list[].inner",
            "X.status.map{}.v"
        ]
    );
}

#[test]
fn every_schema_field_has_a_description() {
    let mut missing = Vec::new();
    for crd in edgewire_api::crds() {
        let v = serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap()).unwrap();
        let root = &v["openAPIV3Schema"]["properties"];
        for part in ["spec", "status"] {
            assert!(
                root[part].get("properties").is_some(),
                "{}: no {part} schema to walk",
                crd.spec.names.kind
            );
            walk(
                &format!("{}.{part}", crd.spec.names.kind),
                &root[part],
                &mut missing,
            );
        }
    }
    // resource requirements come from k8s-openapi with their own docs; anything of ours must be explained
    missing.retain(|m| !m.contains("resources."));
    assert!(
        missing.is_empty(),
        "fields without a doc comment (kubectl explain text): {missing:#?}"
    );
}
