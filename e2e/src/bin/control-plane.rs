//! `control-plane`: starts the e2e suite's control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok; the chart installed with helm) for a person or a script, and keeps it until its
//! stdin closes (or it is killed: the guardian tears everything down either way).
//!
//! On stdout, one `NAME=value` per line, then `READY`:
//! `KUBECONFIG` (the admin's), `OPERATOR_KUBECONFIG` (the chart's ServiceAccount), `RELEASE_NAMESPACE`,
//! `WORK_DIR` (logs, certificates). `EDGEWIRE_E2E_KEEP=1` keeps the work directory afterwards.

use std::io::Read;

use edgewire_e2e::kube::ControlPlane;

fn main() -> std::process::ExitCode {
    let cp = match ControlPlane::start() {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let operator = match cp.operator_kubeconfig() {
        Ok(p) => p,
        Err(e) => {
            cp.keep_logs();
            eprintln!("a token for the chart's ServiceAccount: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("control plane {}", cp.startup());
    println!("KUBECONFIG={}", cp.admin_kubeconfig().display());
    println!("OPERATOR_KUBECONFIG={}", operator.display());
    println!("RELEASE_NAMESPACE={}", cp.release_namespace());
    println!("WORK_DIR={}", cp.dir().display());
    println!("READY");
    // Until stdin closes: the caller's end of the pipe, or a terminal's Ctrl-D.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::ExitCode::SUCCESS
}
