//! Requests and limits as the kubelet reads them: QoS class, the pod's
//! effective requests (for admission), cgroup values for the pod and its
//! containers, and OOM score adjustments. Pure functions, table-tested.
//!
//! Figures saturate rather than wrap: a quantity is at most 2^63-1 units, a
//! sum of them stays at i64::MAX, and a limit the kernel cannot enforce (a CFS
//! quota above its maximum, a memory limit at the page counter's end) is no
//! limit. A huge request is then refused at admission (OutOfcpu,
//! OutOfmemory), never turned into a small or negative one.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde::{Deserialize, Serialize};

use crate::manifest::quantity::Quantity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub const ALL: [QosClass; 3] = [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// How cgroup v1 `cpu.shares` become cgroup v2 `cpu.weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum WeightFormula {
    /// `1 + (shares - 2) * 9999 / 262142`: the mapping of the kubelet and of
    /// runc up to 1.2. Maps the default 1024 shares to weight 39, not 100.
    #[default]
    Linear,
    /// The quadratic fit adopted by runc 1.3 and crun, which maps 2 -> 1,
    /// 1024 -> 100 (the v2 default) and 262144 -> 10000.
    Quadratic,
}

/// One container's CPU and memory figures, with the API server's defaulting
/// applied (a limit without a request makes the request equal the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContainerResources {
    pub cpu_request_milli: Option<i64>,
    pub cpu_limit_milli: Option<i64>,
    pub memory_request: Option<i64>,
    pub memory_limit: Option<i64>,
}

fn quantity(c: &Container, kind: &str, resource: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    let map = if kind == "limits" {
        r.limits.as_ref()?
    } else {
        r.requests.as_ref()?
    };
    Quantity::parse(&map.get(resource)?.0).ok()
}

impl ContainerResources {
    pub fn of(c: &Container) -> ContainerResources {
        let cpu_limit = quantity(c, "limits", "cpu").map(|q| q.milli_ceil());
        let mem_limit = quantity(c, "limits", "memory").map(|q| q.value_ceil());
        ContainerResources {
            cpu_request_milli: quantity(c, "requests", "cpu")
                .map(|q| q.milli_ceil())
                .or(cpu_limit),
            cpu_limit_milli: cpu_limit,
            memory_request: quantity(c, "requests", "memory")
                .map(|q| q.value_ceil())
                .or(mem_limit),
            memory_limit: mem_limit,
        }
    }
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

/// The pod's QoS class, as `GetPodQOS` computes it: BestEffort when no
/// container asks for CPU or memory; Guaranteed when every container has CPU
/// and memory limits and the pod's requests equal its limits; else
/// Burstable. Zero quantities count as unset.
pub fn qos_class(spec: &PodSpec) -> QosClass {
    let nz = |v: Option<i64>| v.filter(|v| *v != 0);
    let (mut req_cpu, mut req_mem, mut lim_cpu, mut lim_mem) =
        (None::<i64>, None::<i64>, None::<i64>, None::<i64>);
    let add = |acc: &mut Option<i64>, v: Option<i64>| {
        if let Some(v) = v {
            *acc = Some(acc.unwrap_or(0).saturating_add(v));
        }
    };
    let mut guaranteed = true;
    for c in all_containers(spec) {
        let r = ContainerResources::of(c);
        add(&mut req_cpu, nz(r.cpu_request_milli));
        add(&mut req_mem, nz(r.memory_request));
        add(&mut lim_cpu, nz(r.cpu_limit_milli));
        add(&mut lim_mem, nz(r.memory_limit));
        if nz(r.cpu_limit_milli).is_none() || nz(r.memory_limit).is_none() {
            guaranteed = false;
        }
    }
    if req_cpu.is_none() && req_mem.is_none() && lim_cpu.is_none() && lim_mem.is_none() {
        return QosClass::BestEffort;
    }
    if guaranteed && req_cpu == lim_cpu && req_mem == lim_mem {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// What the pod asks of the node: the larger of its app containers' sum and
/// its biggest init container (they run one at a time, before the apps).
pub fn pod_requests(spec: &PodSpec) -> (i64, i64) {
    let sum = |cs: &[Container]| {
        cs.iter()
            .map(ContainerResources::of)
            .fold((0i64, 0i64), |(c, m), r| {
                (
                    c.saturating_add(r.cpu_request_milli.unwrap_or(0)),
                    m.saturating_add(r.memory_request.unwrap_or(0)),
                )
            })
    };
    let (mut cpu, mut mem) = sum(&spec.containers);
    for c in spec.init_containers.iter().flatten() {
        let r = ContainerResources::of(c);
        cpu = cpu.max(r.cpu_request_milli.unwrap_or(0));
        mem = mem.max(r.memory_request.unwrap_or(0));
    }
    (cpu, mem)
}

/// Values for one cgroup. `None` leaves a knob at its default (unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupLimits {
    pub cpu_shares: Option<u64>,
    pub cpu_quota_us: Option<i64>,
    pub memory_max: Option<i64>,
    /// cgroup v2 `memory.min`, from memory requests when MemoryQoS is on.
    pub memory_min: Option<i64>,
    pub pids_max: Option<i64>,
    /// cgroup v2 `memory.oom.group`: an OOM kill takes every process of the
    /// cgroup, not only the largest. Containers only; never sent on v1.
    pub oom_group: bool,
}

pub const CPU_PERIOD_US: u64 = 100_000;
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;

/// The largest CFS quota the kernel takes, in µs: `max_cfs_runtime` of
/// kernel/sched/core.c, (2^44 - 1) µs ("more than 203 days"). A larger
/// `cpu.cfs_quota_us` or `cpu.max` is refused with EINVAL.
pub const MAX_CFS_QUOTA_US: i64 = (1 << 44) - 1;

/// The kernel's memory page counter stops at LONG_MAX / PAGE_SIZE pages: a
/// byte limit at or above LONG_MAX rounded down to a page (64 KiB, the
/// largest page size) reads back as unlimited, so it is no limit.
pub const MAX_MEMORY_LIMIT: i64 = i64::MAX & !0xffff;

/// CPU shares from a request (MilliCPUToShares: milli * 1024 / 1000, at
/// least 2, at most 262144).
pub fn cpu_shares(milli: i64) -> u64 {
    let shares = (i128::from(milli.max(0)) * 1024) / 1000;
    u64::try_from(shares)
        .unwrap_or(MAX_SHARES)
        .clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota for a CPU limit over a 100 ms period (MilliCPUToQuota: at least
/// 1 ms). `None` (no quota) when the limit is beyond what the kernel can
/// enforce: the kubelet computes this in an int64 that wraps, and the kernel
/// would refuse the quota anyway, so that the container never started.
pub fn cpu_quota(milli: i64) -> Option<i64> {
    let quota = (i128::from(milli) * i128::from(CPU_PERIOD_US)) / 1000;
    i64::try_from(quota.max(1000))
        .ok()
        .filter(|q| *q <= MAX_CFS_QUOTA_US)
}

/// A memory limit the kernel can hold, `None` for none (see MAX_MEMORY_LIMIT).
pub fn memory_limit(bytes: i64) -> Option<i64> {
    Some(bytes).filter(|b| *b > 0 && *b < MAX_MEMORY_LIMIT)
}

/// cgroup v2 `cpu.weight` for v1 shares.
pub fn cpu_weight(shares: u64, formula: WeightFormula) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    match formula {
        WeightFormula::Linear => 1 + ((shares - 2) * 9999) / 262_142,
        WeightFormula::Quadratic => {
            let l = f64::from(u32::try_from(shares).unwrap_or(u32::MAX)).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "shares are clamped to 2..=262144, so the weight is a positive number below 10001"
            )]
            let weight = 10f64.powf(exponent).ceil() as u64;
            weight.clamp(1, 10_000)
        }
    }
}

/// Knobs that are configuration rather than manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub memory_qos: bool,
    pub pids_limit: Option<i64>,
    /// The kubelet's `singleProcessOOMKill` (1.32): leave `memory.oom.group`
    /// at 0, so that the OOM killer takes one process, not the container.
    pub single_process_oom_kill: bool,
}

/// The pod cgroup (`pod<uid>`), as the kubelet's ResourceConfigForPod sets
/// it: shares from the summed CPU requests; a CPU quota and a memory limit
/// only when every container has one (their sum); BestEffort pods get the
/// minimum shares and no limits.
pub fn pod_limits(spec: &PodSpec, qos: QosClass, opts: Options) -> CgroupLimits {
    let mut out = CgroupLimits {
        pids_max: opts.pids_limit,
        ..Default::default()
    };
    if qos == QosClass::BestEffort {
        out.cpu_shares = Some(MIN_SHARES);
        return out;
    }
    let (cpu_req, mem_req) = pod_requests(spec);
    out.cpu_shares = Some(cpu_shares(cpu_req));
    let sum_if_all = |f: fn(&ContainerResources) -> Option<i64>| -> Option<i64> {
        let app = spec
            .containers
            .iter()
            .map(|c| f(&ContainerResources::of(c)))
            .try_fold(0i64, |s, v| v.map(|v| s.saturating_add(v)));
        let init_max = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| f(&ContainerResources::of(c)))
            .try_fold(0i64, |m, v| v.map(|v| m.max(v)));
        Some(app?.max(init_max?))
    };
    out.cpu_quota_us = sum_if_all(|r| r.cpu_limit_milli)
        .filter(|m| *m > 0)
        .and_then(cpu_quota);
    out.memory_max = sum_if_all(|r| r.memory_limit).and_then(memory_limit);
    if opts.memory_qos && mem_req > 0 {
        out.memory_min = Some(mem_req);
    }
    out
}

/// One container's cgroup values. Since 1.28 the kubelet asks for
/// `memory.oom.group = 1` on every container (cgroup v2), so that a shell
/// whose child was OOM-killed does not run on as if nothing happened.
pub fn container_limits(c: &Container, opts: Options) -> CgroupLimits {
    let r = ContainerResources::of(c);
    CgroupLimits {
        cpu_shares: Some(cpu_shares(r.cpu_request_milli.unwrap_or(0))),
        cpu_quota_us: r.cpu_limit_milli.filter(|m| *m > 0).and_then(cpu_quota),
        memory_max: r.memory_limit.and_then(memory_limit),
        memory_min: r.memory_request.filter(|m| opts.memory_qos && *m > 0),
        pids_max: None,
        oom_group: !opts.single_process_oom_kill,
    }
}

pub const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
pub const BESTEFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// The kubelet's GetContainerOOMScoreAdjust: -997 for Guaranteed, 1000 for
/// BestEffort, and for Burstable `1000 - 1000 * request / capacity`, kept
/// between 3 and 999 so that the classes never overlap.
pub fn oom_score_adj(qos: QosClass, c: &Container, memory_capacity: i64) -> i32 {
    match qos {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BESTEFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            let req = i128::from(ContainerResources::of(c).memory_request.unwrap_or(0));
            let adj = 1000 - 1000 * req / i128::from(memory_capacity.max(1));
            let adj = adj.max(i128::from(1000 + GUARANTEED_OOM_SCORE_ADJ));
            if adj >= i128::from(BESTEFFORT_OOM_SCORE_ADJ) {
                999
            } else {
                i32::try_from(adj).unwrap_or(999)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_file;
    use std::path::Path;

    /// A pod whose containers have the given `resources:` blocks (YAML flow
    /// maps, "" for none); the first `inits` of them are init containers.
    fn spec(inits: usize, resources: &[&str]) -> PodSpec {
        let mut text = String::from("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n");
        for (group, range) in [
            ("initContainers", 0..inits),
            ("containers", inits..resources.len()),
        ] {
            if range.is_empty() {
                continue;
            }
            text.push_str(&format!("  {group}:\n"));
            for i in range {
                text.push_str(&format!("  - name: c{i}\n    image: busybox\n"));
                if !resources[i].is_empty() {
                    text.push_str(&format!("    resources: {}\n", resources[i]));
                }
            }
        }
        let p = parse_file(Path::new("/p.yaml"), &text, "n");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.pods[0].spec().clone()
    }

    #[test]
    fn qos_classes() {
        use QosClass::*;
        for (inits, res, want) in [
            (0, vec![""], BestEffort),
            (0, vec!["", ""], BestEffort),
            (0, vec!["{limits: {cpu: 0, memory: 0}}"], BestEffort),
            (0, vec!["{limits: {cpu: 1, memory: 1Gi}}"], Guaranteed),
            (
                0,
                vec!["{limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 1000m, memory: 1024Mi}}"],
                Guaranteed,
            ),
            (
                0,
                vec!["{limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 500m}}"],
                Burstable,
            ),
            (0, vec!["{limits: {cpu: 1}}"], Burstable),
            (0, vec!["{requests: {memory: 1Mi}}"], Burstable),
            (0, vec!["{limits: {cpu: 1, memory: 1Gi}}", ""], Burstable),
            (1, vec!["", "{limits: {cpu: 1, memory: 1Gi}}"], Burstable),
            (
                1,
                vec![
                    "{limits: {cpu: 1, memory: 1Gi}}",
                    "{limits: {cpu: 2, memory: 1Gi}}",
                ],
                Guaranteed,
            ),
        ] {
            assert_eq!(qos_class(&spec(inits, &res)), want, "{res:?}");
        }
    }

    #[test]
    fn translations() {
        for (milli, shares) in [
            (0, 2),
            (1, 2),
            (2, 2),
            (100, 102),
            (250, 256),
            (1000, 1024),
            (1500, 1536),
            (300_000, 262_144),
        ] {
            assert_eq!(cpu_shares(milli), shares, "{milli}m");
        }
        for (milli, quota) in [
            (1, Some(1000)),
            (10, Some(1000)),
            (200, Some(20_000)),
            (1500, Some(150_000)),
            // The kernel's largest quota, and one millicore more.
            (175_921_860_444, Some(MAX_CFS_QUOTA_US - 15)),
            (175_921_860_445, None),
            // limits.cpu: "100000000000" overflowed the kubelet's int64 math.
            (100_000_000_000_000, None),
            (i64::MAX, None),
        ] {
            assert_eq!(cpu_quota(milli), quota, "{milli}m");
        }
        assert_eq!(cpu_shares(i64::MAX), MAX_SHARES);
        assert_eq!(cpu_shares(i64::MIN), MIN_SHARES);
        assert_eq!(memory_limit(64 << 20), Some(64 << 20));
        assert_eq!(memory_limit(0), None);
        assert_eq!(memory_limit(i64::MAX), None);
        for (shares, linear, quadratic) in [
            (2, 1, 1),
            (1024, 39, 100),
            (102, 4, 17),
            (262_144, 10_000, 10_000),
        ] {
            assert_eq!(
                cpu_weight(shares, WeightFormula::Linear),
                linear,
                "{shares}"
            );
            assert_eq!(
                cpu_weight(shares, WeightFormula::Quadratic),
                quadratic,
                "{shares}"
            );
        }
    }

    #[test]
    fn pod_cgroup_values() {
        let opts = Options {
            memory_qos: true,
            pids_limit: Some(1024),
            single_process_oom_kill: false,
        };
        let s = spec(
            0,
            &[
                "{limits: {cpu: 500m, memory: 64Mi}}",
                "{limits: {cpu: 1.5, memory: 2Gi}, requests: {cpu: 1, memory: 1Gi}}",
            ],
        );
        let l = pod_limits(&s, qos_class(&s), opts);
        assert_eq!(l.cpu_shares, Some(cpu_shares(1500)));
        assert_eq!(l.cpu_quota_us, Some(200_000));
        assert_eq!(l.memory_max, Some((64 << 20) + (2 << 30)));
        assert_eq!(l.memory_min, Some((64 << 20) + (1 << 30)));
        assert_eq!(l.pids_max, Some(1024));
        // One container without a limit: no pod-level limit.
        let s = spec(
            0,
            &[
                "{limits: {cpu: 500m, memory: 64Mi}}",
                "{requests: {cpu: 100m}}",
            ],
        );
        let l = pod_limits(&s, qos_class(&s), Options::default());
        assert_eq!(
            (l.cpu_quota_us, l.memory_max, l.cpu_shares),
            (None, None, Some(cpu_shares(600)))
        );
        // Init containers: the largest one counts when bigger than the apps.
        let s = spec(
            1,
            &[
                "{limits: {cpu: 2, memory: 128974848}}",
                "{limits: {cpu: 1, memory: 129M}}",
            ],
        );
        assert_eq!(pod_requests(&s), (2000, 129_000_000));
        let l = pod_limits(&s, qos_class(&s), Options::default());
        assert_eq!(
            (l.cpu_quota_us, l.memory_max),
            (Some(200_000), Some(129_000_000))
        );
        let s = spec(0, &[""]);
        assert_eq!(
            pod_limits(&s, QosClass::BestEffort, Options::default()).cpu_shares,
            Some(2)
        );
    }

    #[test]
    fn container_values_and_fractional_cores() {
        let s = spec(
            0,
            &["{limits: {cpu: '1.5', memory: 129M}, requests: {cpu: 1m}}"],
        );
        let l = container_limits(&s.containers[0], Options::default());
        assert!(l.oom_group);
        let single = Options {
            single_process_oom_kill: true,
            ..Options::default()
        };
        assert!(!container_limits(&s.containers[0], single).oom_group);
        assert!(!pod_limits(&s, qos_class(&s), Options::default()).oom_group);
        assert_eq!(l.cpu_shares, Some(2));
        assert_eq!(l.cpu_quota_us, Some(150_000));
        assert_eq!(l.memory_max, Some(129_000_000));
        assert_eq!(l.memory_min, None);
    }

    #[test]
    fn oom_scores() {
        let cap = 1000 << 20;
        let g = spec(0, &["{limits: {cpu: 1, memory: 100Mi}}"]);
        assert_eq!(
            oom_score_adj(QosClass::Guaranteed, &g.containers[0], cap),
            -997
        );
        let b = spec(
            0,
            &[
                "{requests: {memory: 100Mi}}",
                "{requests: {memory: 999Mi}}",
                "{requests: {cpu: 1}}",
            ],
        );
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &b.containers[0], cap),
            900
        );
        assert_eq!(oom_score_adj(QosClass::Burstable, &b.containers[1], cap), 3);
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &b.containers[2], cap),
            999
        );
        let e = spec(0, &[""]);
        assert_eq!(
            oom_score_adj(QosClass::BestEffort, &e.containers[0], cap),
            1000
        );
    }

    #[test]
    fn huge_quantities_saturate() {
        // 8Ei of memory and 8E CPUs: requests at the top of i64, never
        // wrapped to a negative number that admission would wave through.
        let s = spec(
            0,
            &[
                "{requests: {memory: 8Ei, cpu: 8E}}",
                "{requests: {memory: 8Ei, cpu: 8E}}",
            ],
        );
        assert_eq!(pod_requests(&s), (i64::MAX, i64::MAX));
        assert_eq!(qos_class(&s), QosClass::Burstable);
        let l = pod_limits(&s, qos_class(&s), Options::default());
        assert_eq!(l.cpu_shares, Some(MAX_SHARES));
        // Limits beyond the kernel's reach are no limits, for the pod too.
        let s = spec(
            0,
            &[
                "{limits: {cpu: '100000000000', memory: 8Ei}}",
                "{limits: {cpu: 8E, memory: 8Ei}}",
            ],
        );
        let l = pod_limits(&s, qos_class(&s), Options::default());
        assert_eq!((l.cpu_quota_us, l.memory_max), (None, None));
        for c in &s.containers {
            let l = container_limits(c, Options::default());
            assert_eq!((l.cpu_quota_us, l.memory_max), (None, None));
        }
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &s.containers[0], 1 << 30),
            3
        );
    }
}
