//! The publisher against real brokers: each adapter's naming, each auth mode, TLS, reconnection, and
//! the ingress's error answers. Brokers are started per test by `edgewire-e2e` on free loopback ports.

mod amqp;
mod cli;
mod common;
mod frozen;
mod hostile;
mod ingress;
mod kafka;
mod mqtt;
mod nats;
mod pubsub;
mod redis;
mod sns;
