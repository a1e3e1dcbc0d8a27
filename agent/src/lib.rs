//! `edgewire-agent`: the data plane of Edgewire.
//!
//! Subcommands live in their own modules: [`publisher`] (CloudEvents HTTP ingress into a broker; its
//! [`publisher::config`] turns the environment interface or an `EventBroker` YAML file into one internal
//! configuration, and [`adapters`] publish to each broker), [`tail`] (print what a broker receives),
//! [`bridge`] (edge-to-cloud bridge with a durable spool) and [`mqtt_sidecar`] (beside Mosquitto).
//!
//! Shared by all of them: [`connect`] (one connection layer per broker protocol), [`tls`] and [`secret`]
//! (TLS settings and credentials, mounted Secret files), [`retry`] (the one backoff curve), [`event`]
//! (CloudEvents and their protocol bindings) and [`telemetry`]. `fuzzing` holds the fuzz targets' bodies.

pub mod adapters;
pub mod bridge;
pub mod connect;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod mqtt_sidecar;
pub mod publisher;
pub mod retry;
pub mod secret;
pub mod tail;
pub mod telemetry;
pub mod tls;
