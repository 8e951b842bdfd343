//! Helpers shared by the API tests: the committed CRDs, read from `crds/`.

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed CRD file, as JSON.
pub fn committed_crd(file: &str) -> Value {
    let path = repo_root().join("crds").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (run `make crds`)", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// The openAPIV3Schema of a committed CRD's only version.
pub fn schema(file: &str) -> Value {
    committed_crd(file)["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Parse a YAML document into JSON.
pub fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("test YAML parses")
}
