//! Who built the images, when `BUILDER_ID` does not say: the one setting whose default is read
//! from the machine (its host name, from `HOSTNAME` or `/proc`) or from Cloud Build's `BUILD_ID`.

/// The builder's id when `BUILDER_ID` is not given: a Cloud Build's page (its `BUILD_ID`, in the
/// project, in the global region `cloud-build` submits to), else this machine, by its name.
pub(super) fn default_builder_id(
    build_id: Option<String>,
    project: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> String {
    if let Some(id) = build_id {
        return format!(
            "https://console.cloud.google.com/cloud-build/builds;region=global/{id}?project={project}"
        );
    }
    let name = lookup("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("host:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_build_is_named_by_its_page_else_the_host_by_its_name() {
        let nobody = |_: &str| None;
        assert_eq!(
            default_builder_id(Some("b-1".into()), "p", &nobody),
            "https://console.cloud.google.com/cloud-build/builds;region=global/b-1?project=p"
        );
        let named = |name: &str| (name == "HOSTNAME").then(|| " box-7\n".to_string());
        assert_eq!(default_builder_id(None, "p", &named), "host:box-7");
    }
}
