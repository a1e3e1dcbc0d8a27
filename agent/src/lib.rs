//! `edgewire-agent`: the data plane of Edgewire.
//!
//! Subcommands live in their own modules: [`publisher`] (CloudEvents HTTP ingress into a broker) and
//! [`tail`] (print what a broker receives), [`bridge`] (edge-to-cloud bridge with a durable spool). [`config`] turns the environment interface or an
//! `EventBroker` YAML file into one internal configuration; [`adapters`] speak each broker protocol.

pub mod adapters;
pub mod bridge;
pub mod config;
pub mod connect;
pub mod event;
pub mod mqtt_sidecar;
pub mod publisher;
pub mod retry;
pub mod secret;
pub mod tail;
pub mod telemetry;
pub mod tls;
