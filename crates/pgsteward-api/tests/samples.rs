//! Every manifest in `config/samples/` is valid against the committed CRD's
//! OpenAPI schema, with unknown fields refused (as `kubectl apply` does with
//! its default strict field validation), and passes the CEL rules.

mod common;

use serde_json::Value;

/// Refuse unknown fields: every object schema that lists its properties and
/// does not preserve unknown fields gets `additionalProperties: false`.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let preserve = map
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserve
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for v in map.values_mut() {
                strict(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

fn crd_file_for(kind: &str) -> &'static str {
    match kind {
        "PgInstance" => "pginstances.pgsteward.io.yaml",
        "PgBackup" => "pgbackups.pgsteward.io.yaml",
        other => panic!("samples may only hold pgsteward kinds, found {other}"),
    }
}

fn schema_errors(kind: &str, object: &Value) -> Vec<String> {
    let mut schema = common::schema(crd_file_for(kind));
    // apiVersion, kind and metadata are validated by the API server itself,
    // not by the CRD's schema.
    for field in ["apiVersion", "kind", "metadata"] {
        let ty = if field == "metadata" {
            "object"
        } else {
            "string"
        };
        schema["properties"][field] = serde_json::json!({ "type": ty });
    }
    strict(&mut schema);
    let validator = jsonschema::validator_for(&schema).expect("the CRD schema compiles");
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn samples() -> Vec<(String, Value)> {
    let dir = common::repo_root().join("config/samples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("config/samples exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        out.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            common::yaml(&text),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_sample_is_valid_against_the_crd_schema() {
    let samples = samples();
    assert!(
        samples.len() >= 5,
        "expected the five samples, found {}",
        samples.len()
    );
    for (name, object) in samples {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        assert_eq!(object["apiVersion"], "pgsteward.io/v1alpha1", "{name}");
        let errors = schema_errors(&kind, &object);
        assert!(
            errors.is_empty(),
            "{name} is invalid:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn every_sample_passes_the_cel_rules() {
    for (name, object) in samples() {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let schema = common::schema(crd_file_for(&kind));
        let result = kube::core::cel::Validator::new().validate(&schema, &object, None);
        assert!(result.is_ok(), "{name} breaks a CEL rule: {result:?}");
    }
}

#[test]
fn every_pginstance_sample_deserializes_into_the_rust_types() {
    for (name, object) in samples() {
        match object["kind"].as_str() {
            Some("PgInstance") => {
                serde_json::from_value::<pgsteward_api::PgInstance>(object)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            Some("PgBackup") => {
                serde_json::from_value::<pgsteward_api::PgBackup>(object)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn schema_check_catches_a_misspelt_field() {
    let object = common::yaml(
        "apiVersion: pgsteward.io/v1alpha1\nkind: PgInstance\nmetadata: {name: x}\n\
         spec: {postgresVersion: 18, storage: {size: 1Gi, sizeFactr: 3}}\n",
    );
    let errors = schema_errors("PgInstance", &object);
    assert!(
        errors.iter().any(|e| e.contains("sizeFactr")),
        "expected the typo to be reported, got {errors:?}"
    );
}
