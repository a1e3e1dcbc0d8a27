//! The end-to-end suite: the real `edgewire-operator` (and `edgewire-agent`) binaries driven with kubectl
//! and helm against a real control plane — etcd, kube-apiserver, kube-controller-manager, kube-scheduler
//! and kwok, built from Go modules by `hack/kube/build.sh` — with the chart installed by helm and the
//! operator under the chart's ServiceAccount; or against the cluster in `KUBECONFIG`.
//!
//! One test binary, so one control plane for the whole run (`edgewire_e2e::kube::ControlPlane::shared`);
//! each scenario works in namespaces of its own. Run `cargo test --workspace --test cluster`
//! (`make e2e`); `EDGEWIRE_E2E_KEEP=1` keeps the control plane's logs and every test's files.

mod support;

mod bridgelink;
mod control_plane;
mod crds;
mod deletion;
mod drift;
mod eventbroker;
mod helm;
mod images;
mod kstatus;
mod managed;
mod mqttbroker;
mod operator;
mod publisher;
mod rbac;
mod samples;
mod secrets;
