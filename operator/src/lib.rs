//! Edgewire's control plane. `main.rs` is thin; everything it runs lives here so tests reach it.

pub mod apply;
pub mod cache;
pub mod children;
pub mod cloud;
pub mod context;
pub mod controller;
pub mod events;
pub mod hash;
pub mod metrics;
pub mod mosquitto;
pub mod pod;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod runtime;
pub mod secret;
pub mod status;
