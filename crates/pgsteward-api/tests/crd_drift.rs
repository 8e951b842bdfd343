//! `crds/*.yaml` must be exactly what `crdgen` writes: run `make crds` after
//! changing the types.

mod common;

#[test]
fn committed_crds_match_crdgen_output() {
    let dir = common::repo_root().join("crds");
    let mut stale = Vec::new();
    for (file, crd) in pgsteward_api::crds() {
        let expected = pgsteward_api::crd_yaml(&crd);
        let actual = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if actual != expected {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is out of date for {stale:?}: run `make crds` and commit the result"
    );
}

#[test]
fn crds_dir_holds_no_stray_files() {
    let known: Vec<&str> = pgsteward_api::crds().into_iter().map(|(f, _)| f).collect();
    for entry in std::fs::read_dir(common::repo_root().join("crds")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            known.contains(&name.as_str()),
            "crds/{name} is not written by crdgen: delete it or add it to pgsteward_api::crds()"
        );
    }
}
