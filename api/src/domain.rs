//! Event domains: which managed-cloud / Kafka topic an event type belongs to.

/// One event domain and its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain {
    /// Short name used in status (`nodes`).
    pub name: &'static str,
    /// Event type prefix (`edge.node.`).
    pub type_prefix: &'static str,
    /// Topic name (`edge-nodes-events`).
    pub topic: &'static str,
}

/// The four domains, in the seed's order.
pub const DOMAINS: [Domain; 4] = [
    Domain {
        name: "nodes",
        type_prefix: "edge.node.",
        topic: "edge-nodes-events",
    },
    Domain {
        name: "commands",
        type_prefix: "edge.command_execution.",
        topic: "edge-commands-events",
    },
    Domain {
        name: "self_updates",
        type_prefix: "edge.self_update.",
        topic: "edge-self-updates-events",
    },
    Domain {
        name: "ssh",
        type_prefix: "edge.ssh.",
        topic: "edge-ssh-events",
    },
];

/// The domain of an event type, if it has one.
pub fn for_type(event_type: &str) -> Option<&'static Domain> {
    DOMAINS
        .iter()
        .find(|d| event_type.starts_with(d.type_prefix) && event_type.len() > d.type_prefix.len())
}

/// "edge.node.*, edge.command_execution.*, ..." for error messages.
pub fn describe() -> String {
    DOMAINS
        .iter()
        .map(|d| format!("{}*", d.type_prefix))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_types_to_domain_topics() {
        assert_eq!(
            for_type("edge.node.registered").unwrap().topic,
            "edge-nodes-events"
        );
        assert_eq!(
            for_type("edge.command_execution.completed").unwrap().topic,
            "edge-commands-events"
        );
        assert_eq!(
            for_type("edge.self_update.started").unwrap().topic,
            "edge-self-updates-events"
        );
        assert_eq!(
            for_type("edge.ssh.opened").unwrap().topic,
            "edge-ssh-events"
        );
        assert!(for_type("edge.nodes.registered").is_none());
        assert!(for_type("edge.node.").is_none());
        assert!(for_type("other.thing").is_none());
    }
}
