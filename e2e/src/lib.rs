//! Test harness for Edgewire.
//!
//! - [`brokers`]: real broker processes (`nats-server`, `mosquitto`, `redis-server`, `rabbitmq-server`)
//!   started on free loopback ports in a private temp dir, stopped on drop.
//! - [`pki`]: a throw-away certificate authority with a server and a client certificate.
//! - [`pubsub`]: a fake Google Cloud Pub/Sub server (gRPC and REST) that records every request (async).
//! - [`kube`]: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
//!   kube-scheduler, kwok) with the chart installed, one per process; or the cluster in `KUBECONFIG`.
//!
//! The harness is synchronous (`std::process`); it is usable from plain `#[test]`s and from
//! `#[tokio::test]`s alike (starting a broker blocks the calling thread for the start-up time).

pub mod brokers;
pub mod kube;
pub mod pki;
pub mod pubsub;
