//! The systemd driver: pods are slice units that systemd owns (it rewrites a
//! slice's files when it realizes the unit), so the agent gives the pod's
//! values to systemd as unit properties instead of writing them; runc
//! creates each container as a scope unit in its pod's slice, and systemd
//! creates `kubepods.slice` and the QoS slices on first use.

use super::Error;
use super::layout::Layout;
use super::manager::{Hierarchy, Manager};
use super::qos::{self, CgroupLimits, QosClass, WeightFormula};

#[derive(Debug)]
pub struct Systemd {
    pub hierarchy: Hierarchy,
    pub layout: Layout,
}

/// systemd unit properties for a pod slice's values. Every limit is set,
/// "none" included, so that a slice left from an earlier pod loses its old
/// values.
pub fn unit_properties(limits: &CgroupLimits, formula: WeightFormula) -> Vec<String> {
    let mut p = vec![];
    if let Some(s) = limits.cpu_shares {
        p.push(format!("CPUWeight={}", qos::cpu_weight(s, formula)));
    }
    // systemd takes the quota as a share of one CPU per 100 ms period.
    p.push(match limits.cpu_quota_us {
        Some(q) => format!(
            "CPUQuota={}%",
            (u64::try_from(q).unwrap_or(0) * 100).div_ceil(qos::CPU_PERIOD_US)
        ),
        None => "CPUQuota=".to_string(),
    });
    p.push(format!(
        "MemoryMax={}",
        limits
            .memory_max
            .map_or("infinity".to_string(), |m| m.to_string())
    ));
    if let Some(min) = limits.memory_min {
        p.push(format!("MemoryMin={min}"));
    }
    p.push(format!(
        "TasksMax={}",
        limits
            .pids_max
            .map_or("infinity".to_string(), |t| t.to_string())
    ));
    p
}

fn systemctl(args: &[&str]) -> Result<(), Error> {
    let out = std::process::Command::new("systemctl")
        .args(args)
        .output()
        .map_err(Error::SystemctlSpawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Systemctl {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Manager for Systemd {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// systemd owns the slices; runc creates them on first use.
    fn setup(&self, _: i64, _: i64) -> Result<(), Error> {
        Ok(())
    }

    fn apply_pod(&self, qos: QosClass, uid: &str, limits: &CgroupLimits) -> Result<(), Error> {
        let unit = self.layout.pod_unit(qos, uid);
        systemctl(&["start", &unit])?;
        let properties = unit_properties(limits, self.hierarchy.formula);
        let mut args = vec!["set-property", "--runtime", &unit];
        args.extend(properties.iter().map(String::as_str));
        systemctl(&args)
    }

    /// Stops the slice (systemd then removes its cgroup) and removes what
    /// is left in the hierarchies systemd does not manage.
    fn remove_pod(&self, uid: &str) -> Vec<String> {
        let mut problems = vec![];
        for q in QosClass::ALL {
            let rel = self.layout.pod(q, uid);
            if self.hierarchy.exists(&rel) {
                let _ = systemctl(&["stop", &self.layout.pod_unit(q, uid)]);
            }
            problems.extend(self.hierarchy.remove(&rel));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_property_values() {
        let l = CgroupLimits {
            cpu_shares: Some(204),
            cpu_quota_us: Some(20_000),
            memory_max: Some(64 << 20),
            memory_min: None,
            pids_max: None,
            oom_group: false,
        };
        assert_eq!(
            unit_properties(&l, WeightFormula::Linear),
            [
                "CPUWeight=8",
                "CPUQuota=20%",
                "MemoryMax=67108864",
                "TasksMax=infinity"
            ]
        );
        let none = CgroupLimits::default();
        assert_eq!(
            unit_properties(&none, WeightFormula::Linear),
            ["CPUQuota=", "MemoryMax=infinity", "TasksMax=infinity"]
        );
        let more = CgroupLimits {
            cpu_quota_us: Some(150),
            memory_min: Some(1 << 20),
            pids_max: Some(1024),
            ..Default::default()
        };
        assert_eq!(
            unit_properties(&more, WeightFormula::Quadratic),
            [
                "CPUQuota=1%",
                "MemoryMax=infinity",
                "MemoryMin=1048576",
                "TasksMax=1024"
            ]
        );
    }
}
