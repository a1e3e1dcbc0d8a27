//! Schema helpers for what `schemars` cannot say by derive alone.

use schemars::{Schema, SchemaGenerator, json_schema};

/// `status.conditions`: the `metav1.Condition` list, as a list-map keyed by `type`.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Conditions in the metav1.Condition shape; `Ready` summarizes the others.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "description": "Type of condition in CamelCase."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "Status of the condition."},
                "reason": {"type": "string", "description": "Machine-readable reason in CamelCase."},
                "message": {"type": "string", "description": "Human-readable message."},
                "observedGeneration": {"type": "integer", "format": "int64", "description": "The .metadata.generation the condition was set from."},
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."}
            }
        }
    })
}

/// A resource quantity (`10Gi`, `500Mi`), validated like Kubernetes does.
pub fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": crate::quantity::PATTERN,
        "description": "A Kubernetes quantity such as 10Gi."
    })
}

/// A list-map keyed by `name` (user lists, where duplicates make no sense).
pub fn named_list<T: schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut s = generator.subschema_for::<Vec<T>>();
    s.insert("x-kubernetes-list-type".into(), "map".into());
    s.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
    s
}
