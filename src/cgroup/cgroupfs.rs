//! The cgroupfs driver: the agent creates `kubepods`, its QoS children and
//! the pod cgroups itself and writes their values into the files; runc
//! creates each container's cgroup below its pod from a plain path.

use super::Error;
use super::layout::Layout;
use super::manager::{Hierarchy, Manager};
use super::qos::{self, CgroupLimits, QosClass};

#[derive(Debug)]
pub struct Cgroupfs {
    pub hierarchy: Hierarchy,
    pub layout: Layout,
}

/// The node-level cgroups with the kubelet's values, parents first:
/// `kubepods` with the allocatable CPU as shares and the allocatable memory
/// as limit, Burstable unlimited, BestEffort at the minimum shares.
pub fn node_cgroups(
    layout: &Layout,
    allocatable_cpu_milli: i64,
    allocatable_memory: i64,
) -> [(String, CgroupLimits); 3] {
    [
        (
            layout.kubepods(),
            CgroupLimits {
                cpu_shares: Some(qos::cpu_shares(allocatable_cpu_milli)),
                memory_max: Some(allocatable_memory).filter(|m| *m > 0),
                ..Default::default()
            },
        ),
        (
            layout.qos_parent(QosClass::Burstable),
            CgroupLimits::default(),
        ),
        (
            layout.qos_parent(QosClass::BestEffort),
            CgroupLimits {
                cpu_shares: Some(qos::MIN_SHARES),
                ..Default::default()
            },
        ),
    ]
}

impl Manager for Cgroupfs {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    fn setup(&self, allocatable_cpu_milli: i64, allocatable_memory: i64) -> Result<(), Error> {
        let h = &self.hierarchy;
        for (rel, limits) in node_cgroups(&self.layout, allocatable_cpu_milli, allocatable_memory) {
            h.mode.apply(&rel, &limits, h.formula)?;
        }
        Ok(())
    }

    fn apply_pod(&self, qos: QosClass, uid: &str, limits: &CgroupLimits) -> Result<(), Error> {
        let h = &self.hierarchy;
        h.mode.apply(&self.layout.pod(qos, uid), limits, h.formula)
    }

    fn remove_pod(&self, uid: &str) -> Vec<String> {
        QosClass::ALL
            .iter()
            .flat_map(|q| self.hierarchy.remove(&self.layout.pod(*q, uid)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fs::tests::temp;
    use crate::cgroup::layout::Driver;
    use crate::cgroup::mode::Mode;
    use crate::cgroup::qos::WeightFormula;

    fn manager(root: &std::path::Path) -> Cgroupfs {
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids").unwrap();
        Cgroupfs {
            hierarchy: Hierarchy {
                mode: Mode::V2(root.to_path_buf()),
                mounts: vec![root.to_path_buf()],
                formula: WeightFormula::Linear,
            },
            layout: Layout {
                driver: Driver::Cgroupfs,
                root: "/kl".into(),
            },
        }
    }

    #[test]
    fn node_values() {
        let l = Layout {
            driver: Driver::Cgroupfs,
            root: "/".into(),
        };
        let [top, burstable, besteffort] = node_cgroups(&l, 2000, 1 << 30);
        assert_eq!(top.0, "/kubepods");
        assert_eq!(
            (top.1.cpu_shares, top.1.memory_max),
            (Some(2048), Some(1 << 30))
        );
        assert_eq!(
            burstable,
            ("/kubepods/burstable".into(), CgroupLimits::default())
        );
        assert_eq!(besteffort.0, "/kubepods/besteffort");
        assert_eq!(besteffort.1.cpu_shares, Some(2));
        // No allocatable memory figure: no limit.
        assert_eq!(node_cgroups(&l, 2000, 0)[0].1.memory_max, None);
    }

    #[test]
    fn creates_applies_reads_and_removes() {
        let root = temp("cgroupfs");
        let m = manager(&root);
        m.setup(1000, 1 << 30).unwrap();
        let read = |rel: &str, f: &str| std::fs::read_to_string(root.join(rel).join(f)).unwrap();
        assert_eq!(read("kl/kubepods", "memory.max"), "1073741824");
        assert_eq!(read("kl/kubepods/besteffort", "cpu.weight"), "1");
        let limits = CgroupLimits {
            cpu_shares: Some(1024),
            memory_max: Some(64 << 20),
            ..Default::default()
        };
        m.apply_pod(QosClass::Burstable, "u1", &limits).unwrap();
        assert_eq!(
            read("kl/kubepods/burstable/podu1", "memory.max"),
            "67108864"
        );
        m.apply_pod(QosClass::Guaranteed, "u2", &limits).unwrap();
        assert_eq!(m.pod_uids(), ["u1", "u2"], "pods found by their cgroups");
        let pod2 = root.join("kl/kubepods/podu2");
        for f in ["cpu.weight", "cpu.max", "memory.max", "pids.max"] {
            std::fs::remove_file(pod2.join(f)).unwrap();
        }
        assert!(m.remove_pod("u2").is_empty());
        assert_eq!(
            m.container_path(QosClass::Burstable, "u1", "c1"),
            "/kl/kubepods/burstable/podu1/c1"
        );
        // A container cgroup, as runc would leave it, with an OOM kill.
        let c1 = root.join("kl/kubepods/burstable/podu1/c1");
        std::fs::create_dir_all(&c1).unwrap();
        std::fs::write(c1.join("memory.events"), "max 1\noom 1\noom_kill 1\n").unwrap();
        std::fs::write(c1.join("cpu.stat"), "usage_usec 5\n").unwrap();
        assert_eq!(
            m.container_oom_kills(QosClass::Burstable, "u1", "c1"),
            Some(1)
        );
        let rel = m.container_cgroup(QosClass::Burstable, "u1", "c1");
        let s = m.stats(&rel, None, crate::cgroup::Below::Unknown).unwrap();
        assert_eq!((s.cpu_usage_ns, s.oom_kills), (5000, 1));
        // Fake control files are plain files, which rmdir cannot remove.
        for f in ["memory.events", "cpu.stat"] {
            std::fs::remove_file(c1.join(f)).unwrap();
        }
        let pod = root.join("kl/kubepods/burstable/podu1");
        for f in ["cpu.weight", "cpu.max", "memory.max", "pids.max"] {
            std::fs::remove_file(pod.join(f)).unwrap();
        }
        assert!(m.remove_pod("u1").is_empty());
        assert!(!pod.exists());
        assert!(root.join("kl/kubepods/burstable").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
