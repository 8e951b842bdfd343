//! Leaf: the names of the objects an instance owns, and the field manager of
//! every write. Every step may use it; it uses nothing of the operator.

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
pub fn pod(instance: &str) -> String {
    format!("{instance}-0")
}
pub fn data_claim(instance: &str) -> String {
    format!("{DATA_VOLUME}-{instance}-0")
}
