//! The kubelet's image manager (pkg/kubelet/images/image_manager.go) in
//! small: the pull policy decides between the image on the node and a
//! pull, and every decision becomes the kubelet's event (`Pulling`,
//! `Pulled`, `Failed`, `ErrImageNeverPull`, `InspectFailed`).

use std::time::{Duration, Instant};

use super::{Image, PullPolicy, Runtime, RuntimeError};
use crate::pod::PodError;
use crate::pod::error::{event, reason};

/// What to do about an image before a container starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullAction {
    /// The image on the node is used.
    UsePresent,
    Pull,
    /// `Never`, and the image is not on the node: ErrImageNeverPull.
    RefuseNeverPull,
}

/// The kubelet's `shouldPullImage`: `Always` pulls every time (a pull of
/// an unchanged image moves no layer), `IfNotPresent` only when missing,
/// `Never` never.
pub fn pull_action(policy: PullPolicy, present: bool) -> PullAction {
    match (policy, present) {
        (PullPolicy::Always, _) => PullAction::Pull,
        (_, true) => PullAction::UsePresent,
        (PullPolicy::IfNotPresent, false) => PullAction::Pull,
        (PullPolicy::Never, false) => PullAction::RefuseNeverPull,
    }
}

/// The default policy of a container, and the one its manifest names
/// (validated: `Always`, `IfNotPresent` or `Never`).
pub fn policy_of(image: &str, named: Option<&str>) -> PullPolicy {
    match named.unwrap_or_else(|| super::image_ref::default_pull_policy(image)) {
        "Never" => PullPolicy::Never,
        "IfNotPresent" => PullPolicy::IfNotPresent,
        _ => PullPolicy::Always,
    }
}

/// An event for the pod, in the kubelet's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEvent {
    pub kind: &'static str,
    pub reason: &'static str,
    pub message: String,
}

fn ev(kind: &'static str, reason: &'static str, message: String) -> ImageEvent {
    ImageEvent {
        kind,
        reason,
        message,
    }
}

/// A duration as Go prints one (`1.234s`, `850ms`), rounded to the
/// millisecond, as the kubelet's pull events show it.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Makes `image` available under `policy`, recording the events of each
/// step into `events`. The only place that emits the pull events.
pub async fn ensure(
    rt: &dyn Runtime,
    image: &str,
    policy: PullPolicy,
    events: &mut Vec<ImageEvent>,
) -> Result<Image, PodError> {
    let name = match super::image_ref::normalize(image) {
        Ok(n) => n,
        Err(e) => {
            let msg = format!("Failed to apply default image tag {image:?}: {e}");
            events.push(ev(event::WARNING, reason::INSPECT_FAILED, msg.clone()));
            return Err(PodError::InvalidImageName(msg));
        }
    };
    let present = if policy == PullPolicy::Always {
        None
    } else {
        rt.image_status(&name)
            .await
            .map_err(|e| PodError::ImagePull(e.to_string()))?
    };
    match pull_action(policy, present.is_some()) {
        PullAction::UsePresent => {
            events.push(ev(
                event::NORMAL,
                reason::PULLED,
                format!("Container image {image:?} already present on machine"),
            ));
            // pull_action uses what is present only when there is one.
            present.ok_or_else(|| PodError::ImagePull(format!("image {image:?} is gone")))
        }
        PullAction::RefuseNeverPull => {
            let msg = format!("Container image {image:?} is not present with pull policy of Never");
            events.push(ev(
                event::WARNING,
                reason::ERR_IMAGE_NEVER_PULL,
                msg.clone(),
            ));
            Err(PodError::ImageNeverPull(msg))
        }
        PullAction::Pull => {
            events.push(ev(
                event::NORMAL,
                reason::PULLING,
                format!("Pulling image {image:?}"),
            ));
            let started = Instant::now();
            match rt.pull_image(&name).await {
                Ok(p) => {
                    let took = go_duration(p.took);
                    let waited = go_duration(started.elapsed());
                    events.push(ev(
                        event::NORMAL,
                        reason::PULLED,
                        format!(
                            "Successfully pulled image {image:?} in {took} ({waited} including waiting). Image size: {} bytes.",
                            p.size
                        ),
                    ));
                    Ok(p.image)
                }
                Err(e) => {
                    let msg = match &e {
                        RuntimeError::Pull(m) | RuntimeError::ImageNotFound(m) => m.clone(),
                        other => other.to_string(),
                    };
                    events.push(ev(
                        event::WARNING,
                        reason::FAILED,
                        format!("Failed to pull image {image:?}: {msg}"),
                    ));
                    Err(PodError::ImagePull(msg))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_action_table() {
        use PullAction::*;
        use PullPolicy::*;
        for (policy, present, want) in [
            (Always, true, Pull),
            (Always, false, Pull),
            (IfNotPresent, true, UsePresent),
            (IfNotPresent, false, Pull),
            (Never, true, UsePresent),
            (Never, false, RefuseNeverPull),
        ] {
            assert_eq!(pull_action(policy, present), want, "{policy:?} {present}");
        }
    }

    #[test]
    fn default_policies_follow_the_tag() {
        assert_eq!(policy_of("mongo:4.4", None), PullPolicy::IfNotPresent);
        assert_eq!(policy_of("mongo", None), PullPolicy::Always);
        assert_eq!(policy_of("mongo:latest", None), PullPolicy::Always);
        assert_eq!(policy_of("mongo:latest", Some("Never")), PullPolicy::Never);
        assert_eq!(policy_of("mongo:4.4", Some("Always")), PullPolicy::Always);
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(go_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(go_duration(Duration::from_millis(1234)), "1.234s");
        assert_eq!(go_duration(Duration::from_secs(3)), "3s");
    }
}
