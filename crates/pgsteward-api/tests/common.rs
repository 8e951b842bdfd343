//! Helpers shared by the API tests: the committed CRDs, read from `crds/`.

#![allow(dead_code)]

use serde_json::Value;

/// The repository, the committed CRD files and their schemas: one copy, in
/// the `fuzz` module the operator's tests share.
#[allow(unused_imports)] // each test target uses some of them
pub use pgsteward_api::fuzz::{committed_crd, repo_root, schema};

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
