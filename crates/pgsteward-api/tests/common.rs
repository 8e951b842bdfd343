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

/// A generated file the cluster tier reads, kept in the repository: fails
/// when it differs from `expected`, and rewrites it first when
/// PGSTEWARD_UPDATE_FIXTURES is set. `test` names the test target that
/// makes it, for the message.
pub fn assert_generated_file_current(relative: &str, expected: &str, test: &str) {
    let path = repo_root().join(relative);
    if std::env::var_os("PGSTEWARD_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is out of date: run PGSTEWARD_UPDATE_FIXTURES=1 cargo test -p pgsteward-api --test {test}",
        path.display()
    );
}
