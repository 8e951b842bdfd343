//! Leaf: the names of the objects an instance owns, and the field manager of
//! every write. Every step may use it; it uses nothing of the operator.

use pgsteward_api::PgInstance;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "pgsteward";
/// The name of the volume claim template (the claim is `data-<name>-0`).
pub const DATA_VOLUME: &str = "data";

pub fn config_map(instance: &str) -> String {
    format!("{instance}-config")
}
pub fn superuser_secret(instance: &str) -> String {
    format!("{instance}-superuser")
}
pub fn service(instance: &str) -> String {
    instance.to_string()
}
pub fn headless_service(instance: &str) -> String {
    format!("{instance}-hl")
}
pub fn statefulset(instance: &str) -> String {
    instance.to_string()
}
/// The StatefulSet's pod of `ordinal`.
pub fn pod(instance: &str, ordinal: u32) -> String {
    format!("{instance}-{ordinal}")
}
/// The claim of the pod of `ordinal` (from the claim template).
pub fn data_claim(instance: &str, ordinal: u32) -> String {
    format!("{DATA_VOLUME}-{instance}-{ordinal}")
}

/// The ordinals of an instance's pods: one pod, ordinal 0, until the spec
/// asks for replicas. `observe` reads these pods and `build` sizes the
/// StatefulSet by them.
pub fn ordinals(_instance: &PgInstance) -> std::ops::Range<u32> {
    0..1
}
