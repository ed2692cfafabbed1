//! Where pods and containers live: the names of the kubepods hierarchy for
//! each driver, relative to every hierarchy's mount point. Pure.
//!
//! cgroupfs driver: `<root>/kubepods/pod<uid>` (Guaranteed),
//! `<root>/kubepods/burstable/pod<uid>`, `<root>/kubepods/besteffort/pod<uid>`,
//! each container below its pod. systemd driver: `kubepods.slice`,
//! `kubepods-burstable.slice`, `kubepods-burstable-pod<uid>.slice`, containers
//! as `kubelet-lite-<id>.scope` units made by runc.

use serde::{Deserialize, Serialize};

use super::qos::QosClass;

/// The kubelet's `cgroupDriver`: who names and owns the pod cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Driver {
    #[default]
    Cgroupfs,
    Systemd,
}

/// Names of the cgroups, for one driver and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub driver: Driver,
    /// Parent of `kubepods` (cgroupfs driver); `/` puts it at the top, as the
    /// kubelet's default `cgroupRoot` does.
    pub root: String,
}

fn qos_dir(qos: QosClass) -> Option<&'static str> {
    match qos {
        QosClass::Guaranteed => None,
        QosClass::Burstable => Some("burstable"),
        QosClass::BestEffort => Some("besteffort"),
    }
}

impl Layout {
    fn base(&self) -> &str {
        self.root.trim_end_matches('/')
    }

    /// `kubepods`, relative to each hierarchy's mount point.
    pub fn kubepods(&self) -> String {
        match self.driver {
            Driver::Cgroupfs => [self.base(), "/kubepods"].concat(),
            Driver::Systemd => "/kubepods.slice".to_string(),
        }
    }

    /// The QoS cgroup a pod of class `qos` lives in.
    pub fn qos_parent(&self, qos: QosClass) -> String {
        match (self.driver, qos_dir(qos)) {
            (_, None) => self.kubepods(),
            (Driver::Cgroupfs, Some(q)) => [self.base(), "/kubepods/", q].concat(),
            (Driver::Systemd, Some(q)) => ["/kubepods.slice/kubepods-", q, ".slice"].concat(),
        }
    }

    /// The pod cgroup, relative to each hierarchy's mount point.
    pub fn pod(&self, qos: QosClass, uid: &str) -> String {
        self.pod_then(qos, uid, &[])
    }

    /// The pod cgroup's name followed by `rest`, in one allocation (these
    /// names are made for every cgroup of every scrape).
    fn pod_then(&self, qos: QosClass, uid: &str, rest: &[&str]) -> String {
        let head: [&str; 7] = match (self.driver, qos_dir(qos)) {
            (Driver::Cgroupfs, None) => [self.base(), "/kubepods/pod", uid, "", "", "", ""],
            (Driver::Cgroupfs, Some(q)) => [self.base(), "/kubepods/", q, "/pod", uid, "", ""],
            (Driver::Systemd, None) => [
                "/kubepods.slice/kubepods-pod",
                uid,
                ".slice",
                "",
                "",
                "",
                "",
            ],
            (Driver::Systemd, Some(q)) => [
                "/kubepods.slice/kubepods-",
                q,
                ".slice/kubepods-",
                q,
                "-pod",
                uid,
                ".slice",
            ],
        };
        let parts = || head.iter().chain(rest);
        let mut out = String::with_capacity(parts().map(|p| p.len()).sum());
        parts().for_each(|p| out.push_str(p));
        out
    }

    /// The pod's systemd slice unit (the last part of its cgroup's name).
    pub fn pod_unit(&self, qos: QosClass, uid: &str) -> String {
        let pod = self.pod(qos, uid);
        pod.rsplit('/').next().unwrap_or_default().to_string()
    }

    /// The container's `linux.cgroupsPath` for runc: a path with cgroupfs,
    /// `slice:prefix:name` with systemd.
    pub fn container_path(&self, qos: QosClass, uid: &str, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => self.pod_then(qos, uid, &["/", id]),
            Driver::Systemd => format!("{}:kubelet-lite:{id}", self.pod_unit(qos, uid)),
        }
    }

    /// The container's cgroup directory, relative to the mount points.
    pub fn container_dir(&self, qos: QosClass, uid: &str, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => self.container_path(qos, uid, id),
            Driver::Systemd => self.pod_then(qos, uid, &["/kubelet-lite-", id, ".scope"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_names() {
        let l = Layout {
            driver: Driver::Cgroupfs,
            root: "/".into(),
        };
        assert_eq!(l.kubepods(), "/kubepods");
        assert_eq!(l.qos_parent(QosClass::Guaranteed), "/kubepods");
        assert_eq!(l.qos_parent(QosClass::Burstable), "/kubepods/burstable");
        assert_eq!(l.pod(QosClass::Guaranteed, "u1"), "/kubepods/podu1");
        assert_eq!(
            l.pod(QosClass::Burstable, "u1"),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(
            l.container_path(QosClass::BestEffort, "u1", "c1"),
            "/kubepods/besteffort/podu1/c1"
        );
        assert_eq!(
            l.container_dir(QosClass::BestEffort, "u1", "c1"),
            "/kubepods/besteffort/podu1/c1"
        );
        let l = Layout {
            driver: Driver::Cgroupfs,
            root: "/test/".into(),
        };
        assert_eq!(l.pod(QosClass::Guaranteed, "u1"), "/test/kubepods/podu1");
        assert_eq!(
            l.container_dir(QosClass::Burstable, "u1", "c1"),
            "/test/kubepods/burstable/podu1/c1"
        );
    }

    #[test]
    fn systemd_names() {
        let l = Layout {
            driver: Driver::Systemd,
            root: "/".into(),
        };
        assert_eq!(l.kubepods(), "/kubepods.slice");
        assert_eq!(
            l.qos_parent(QosClass::BestEffort),
            "/kubepods.slice/kubepods-besteffort.slice"
        );
        assert_eq!(
            l.pod(QosClass::Burstable, "u1"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podu1.slice"
        );
        assert_eq!(
            l.pod(QosClass::Guaranteed, "u1"),
            "/kubepods.slice/kubepods-podu1.slice"
        );
        assert_eq!(
            l.pod_unit(QosClass::Guaranteed, "u1"),
            "kubepods-podu1.slice"
        );
        assert_eq!(
            l.container_path(QosClass::Burstable, "u1", "c1"),
            "kubepods-burstable-podu1.slice:kubelet-lite:c1"
        );
        assert_eq!(
            l.container_dir(QosClass::BestEffort, "u1", "c1"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu1.slice/kubelet-lite-c1.scope"
        );
    }
}
