//! The pod an operation acts on: what the decisions see of it ([`PodView`]),
//! the replacement of a pod stuck on another image, and the deletion that
//! restarts a pod. The only module of `act` that deletes anything.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, Preconditions},
};

use super::{Inputs, Plan, PlanEvent};
use crate::{
    error::{Error, Result},
    exec::CONTAINER,
    image_state::TerminationMessage,
    observe::ObservedPod,
};

/// What `plan` sees of the pod, besides `pgsteward-status`.
#[derive(Clone, Debug, Default)]
pub struct PodView<'a> {
    pub uid: Option<&'a str>,
    /// The image the pod's postgres container was created with.
    pub image: Option<&'a str>,
    /// Its postgres container runs (it may not be Ready yet).
    pub running: bool,
    /// The pod is being deleted already.
    pub terminating: bool,
    /// `PGSTEWARD_UPGRADE_ID` on the live StatefulSet's pod template.
    pub template_upgrade_id: Option<&'a str>,
    /// The postgres container's last exit code while it is not running.
    pub container_exit: Option<i32>,
    /// The results in the postgres container's termination message (its
    /// current or last run).
    pub terminated: TerminationMessage,
}

impl<'a> PodView<'a> {
    /// The view of an observed pod. An exit code says something about an
    /// upgrade only when the pod runs the new image (`spec_image`).
    pub fn of(
        pod: Option<&'a ObservedPod>,
        statefulset: Option<&'a StatefulSet>,
        spec_image: &str,
    ) -> Self {
        let template_upgrade_id = statefulset
            .and_then(|sts| sts.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == "PGSTEWARD_UPGRADE_ID"))
            .and_then(|e| e.value.as_deref());
        let Some(observed) = pod else {
            return Self {
                template_upgrade_id,
                ..Default::default()
            };
        };
        let container = &observed.container;
        let live = observed.pod.as_ref();
        Self {
            uid: live.and_then(|p| p.metadata.uid.as_deref()),
            image: container.image.as_deref(),
            running: container.running,
            terminating: live.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
            template_upgrade_id,
            container_exit: container
                .exit
                .filter(|_| container.image.as_deref() == Some(spec_image)),
            terminated: container.terminated.clone(),
        }
    }
}

/// A StatefulSet does not replace a pod that is not Ready (Kubernetes'
/// "forced rollback" limitation): a pod whose container does not run, on
/// another image than the one decided here (an upgrade put back, or
/// resumed), would stay as it is. Delete it; the StatefulSet creates it
/// again from the template.
pub(super) fn replace_if_stuck(i: &Inputs, p: &mut Plan) {
    let pod = i.pod;
    if !p.restart_pod
        && !pod.running
        && !pod.terminating
        && pod.uid.is_some()
        && pod.image.is_some_and(|image| image != p.run.image)
    {
        p.restart_pod = true;
        p.events.push(PlanEvent {
            warning: false,
            reason: "PodReplaced",
            note: format!(
                "the pod's container does not run and has image {}, not {}: deleting it so that the StatefulSet creates it from the current template",
                pod.image.unwrap_or_default(),
                p.run.image
            ),
        });
    }
}

/// Delete the pod: the StatefulSet starts it again (a restart for settings
/// that need one, or a pod stuck on another image). Only the pod that was
/// observed (`uid`): one the StatefulSet created since is left alone.
pub async fn delete_pod(client: &Client, ns: &str, pod: &str, uid: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => Ok(()),
        // Gone, or already replaced by another pod of the same name.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(Error::Operate {
            what: format!("restart pod {pod}"),
            source,
        }),
    }
}
