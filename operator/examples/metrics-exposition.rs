//! `make observability-test`, operator part: prints the operator's `/metrics` body as `edgewire-operator run`
//! serves it after one reconcile and one failed reconcile of each kind.
//!
//! Why not scrape a running operator: a family shows in the exposition only once it holds a series, and the
//! operator has series for reconciles and errors only after reconciling against an API server, which this
//! check does not start (a real control plane takes minutes to build and seconds to start; the e2e suite
//! runs there). The running binary without an API server is scraped too (`hack/observability/test.sh`); it
//! shows the leader gauge. Here the same `Metrics` the binary registers go through what a reconcile
//! records ([`Metrics::reconcile`], [`Metrics::error`]) and the same encoder, so a renamed metric shows here
//! as it would in the binary.

use edgewire_operator::controller::{bridge_link, event_broker, mqtt_broker};
use edgewire_operator::metrics::Metrics;

fn main() {
    let metrics = Metrics::default();
    for kind in [
        event_broker::KIND_LABEL,
        mqtt_broker::KIND_LABEL,
        bridge_link::KIND_LABEL,
    ] {
        drop(metrics.reconcile(kind));
        metrics.error(kind, edgewire_api::condition::reasons::RECONCILE_ERROR);
    }
    print!("{}", metrics.encode());
}
