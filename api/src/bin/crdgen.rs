//! Prints every Edgewire CRD as multi-document YAML; with `--out DIR` writes one file per kind
//! (`<plural>.edgewire.dev.yaml`), and with `--chart DIR` the Helm template copies (gated by
//! `crds.install`, annotated `helm.sh/resource-policy: keep`), and with `--docs DIR` the reference page of
//! each kind (`<kind>.md`: every field, its type, default, validation and description).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let crds = edgewire_api::crds();
    if flag("--out").is_none() && flag("--chart").is_none() && flag("--docs").is_none() {
        for crd in &crds {
            print!("---\n{}", edgewire_api::crd_yaml(crd)?);
        }
        return Ok(());
    }
    for crd in &crds {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        if let Some(dir) = flag("--out") {
            std::fs::create_dir_all(dir)?;
            std::fs::write(format!("{dir}/{name}.yaml"), edgewire_api::crd_yaml(crd)?)?;
        }
        if let Some(dir) = flag("--docs") {
            std::fs::create_dir_all(dir)?;
            std::fs::write(
                format!("{dir}/{}", edgewire_api::reference_file_name(crd)),
                edgewire_api::crd_reference(crd),
            )?;
        }
        if let Some(dir) = flag("--chart") {
            std::fs::create_dir_all(dir)?;
            std::fs::write(
                format!("{dir}/{name}.yaml"),
                edgewire_api::crd_chart_template(crd)?,
            )?;
        }
    }
    Ok(())
}
