//! Step 4, apply: server-side apply of every desired object, with one field
//! manager (`pgsteward`), `force`, and owner references set by `build`. It
//! writes the owned objects and nothing else (not status, not the pod).
//!
//! Nothing is written when the live object already holds every field we
//! would apply (compared field by field, see [`is_applied`]): an idle
//! reconcile makes no write request at all.

use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::StatefulSet, core::v1::PersistentVolumeClaim},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use pgsteward_api::quantity::Quantity;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    build::DesiredObjects,
    error::{Error, Result},
    names::FIELD_MANAGER,
    observe::Observed,
};

/// What apply did: the objects as they are now, and what it wrote. Only
/// `apply` makes one, so status is computed from objects that were applied.
#[derive(Clone, Debug)]
pub struct Applied {
    pub statefulset: StatefulSet,
    /// `Kind/name` of every object written, in order; empty when idle.
    pub written: Vec<String>,
}

/// Server-side apply patch parameters: one field manager, force.
pub fn patch_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// True when `live` already holds every field of `desired`: same scalars
/// (quantities compared by value), objects compared key by key, lists
/// element by element. Fields the server adds are ignored; a field we set
/// to an empty value (false, 0, "", [], {}) matches its absence, because
/// the API server omits empty values.
pub fn is_applied(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_applied(dv, lv),
            // Nested objects (a claim template) may come back without the
            // type fields k8s-openapi always writes.
            None => is_empty(dv) || k == "apiVersion" || k == "kind",
        }),
        (Value::Object(d), Value::Null) => d.values().all(is_empty),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_applied(dv, lv))
        }
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::String(d), Value::String(l)) => d == l || same_quantity(d, l),
        (Value::String(d), Value::Number(l)) => same_quantity(d, &l.to_string()),
        (Value::Number(d), Value::String(l)) => same_quantity(&d.to_string(), l),
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_empty),
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    // Only strings that look like quantities: "10Gi", "500m", "1".
    let looks = |s: &str| s.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    looks(a)
        && looks(b)
        && matches!((Quantity::parse(a), Quantity::parse(b)), (Ok(x), Ok(y)) if x == y)
}

async fn apply_one<K>(
    client: &Client,
    desired: K,
    live: Option<&K>,
    written: &mut Vec<String>,
) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).into_owned();
    let name = desired.name_any();
    let to_json = |k: &K| serde_json::to_value(k).expect("Kubernetes objects serialize to JSON");
    if let Some(live) = live
        && is_applied(&to_json(&desired), &to_json(live))
    {
        return Ok(live.clone());
    }
    let ns = desired.namespace().unwrap_or_else(|| "default".into());
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let result = api
        .patch(&name, &patch_params(), &Patch::Apply(&desired))
        .await
        .map_err(|source| Error::Apply {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
    written.push(format!("{kind}/{name}"));
    Ok(result)
}

/// Apply every desired object that differs from what is there.
pub async fn apply(
    client: &Client,
    desired: DesiredObjects,
    observed: &Observed,
) -> Result<Applied> {
    // No `..`: an object added to DesiredObjects must be applied here.
    let DesiredObjects {
        config_map,
        superuser_secret,
        service,
        headless_service,
        statefulset,
        data_claim_expansions,
    } = desired;
    let mut written = Vec::new();
    apply_one(
        client,
        config_map,
        observed.config_map.as_ref(),
        &mut written,
    )
    .await?;
    if let Some(secret) = superuser_secret {
        // Only built when no such Secret exists: created once, never updated.
        apply_one(client, secret, None, &mut written).await?;
    }
    apply_one(client, service, observed.service.as_ref(), &mut written).await?;
    apply_one(
        client,
        headless_service,
        observed.headless_service.as_ref(),
        &mut written,
    )
    .await?;
    let statefulset = apply_one(
        client,
        statefulset,
        observed.statefulset.as_ref(),
        &mut written,
    )
    .await?;
    for claim in data_claim_expansions {
        let live: Option<&PersistentVolumeClaim> = None;
        apply_one(client, claim, live, &mut written).await?;
    }
    Ok(Applied {
        statefulset,
        written,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::is_applied;

    #[test]
    fn is_applied_ignores_server_fields_and_empty_values() {
        let desired = json!({"metadata": {"name": "a", "labels": {}},
            "spec": {"readOnly": false, "ports": [{"port": 5432}], "size": "10Gi",
                     "templates": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim"}]}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "resourceVersion": "7"},
            "spec": {"ports": [{"port": 5432, "protocol": "TCP"}], "size": "10240Mi", "templates": [{}]},
            "status": {"ready": true}});
        assert!(is_applied(&desired, &live));
    }

    #[test]
    fn is_applied_sees_a_changed_or_missing_field() {
        let live = json!({"spec": {"image": "pg:17", "env": [{"name": "A", "value": "1"}]}});
        for desired in [
            json!({"spec": {"image": "pg:18"}}),
            json!({"spec": {"env": [{"name": "A", "value": "2"}]}}),
            json!({"spec": {"env": [{"name": "A", "value": "1"}, {"name": "B"}]}}),
            json!({"spec": {"replicas": 1}}),
            json!({"spec": {"paused": true}}),
        ] {
            assert!(!is_applied(&desired, &live), "{desired} should differ");
        }
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(is_applied(&json!({"cpu": "1000m"}), &json!({"cpu": "1"})));
        assert!(is_applied(
            &json!({"memory": "1Gi"}),
            &json!({"memory": "1024Mi"})
        ));
        assert!(!is_applied(
            &json!({"memory": "1G"}),
            &json!({"memory": "1Gi"})
        ));
        assert!(!is_applied(&json!({"v": "on"}), &json!({"v": "off"})));
    }
}
