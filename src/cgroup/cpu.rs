//! The cpu controller (with v1's cpuacct): CPU weight and CFS quota written,
//! CPU time and throttling read.
//!
//! Limits: v1 `cpu.shares` (2..262144) is v2 `cpu.weight` (1..10000, see
//! [`cpu_weight`] for the mapping); v1 `cpu.cfs_quota_us` (-1 for none) +
//! `cpu.cfs_period_us` are v2 `cpu.max` ("quota period" or "max period").
//!
//! Usage: v1 `cpuacct.usage` (ns) and `cpuacct.stat` (user/system in USER_HZ
//! ticks) in the cpuacct hierarchy, `cpu.stat` (`nr_periods`,
//! `nr_throttled`, `throttled_time` in ns) in the cpu one; v2 `cpu.stat`
//! alone (`usage_usec`, `user_usec`, `system_usec`, `nr_periods`,
//! `nr_throttled`, `throttled_usec`).

use super::fs::{Source, keyed_values};
use super::qos::{CPU_PERIOD_US, CgroupLimits, WeightFormula, cpu_weight};
use super::version::Version;

pub const CONTROLLER: &str = "cpu";
/// v1's CPU accounting controller, often co-mounted with cpu.
pub const ACCOUNTING: &str = "cpuacct";

/// Clock ticks per second of `cpuacct.stat` (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// The files and values for `limits`: a weight only when shares are set,
/// the quota always (none is written as such, so a changed cgroup loses an
/// old quota).
pub fn writes(
    limits: &CgroupLimits,
    version: Version,
    formula: WeightFormula,
) -> Vec<(&'static str, String)> {
    let mut out = vec![];
    match version {
        Version::V2 => {
            if let Some(s) = limits.cpu_shares {
                out.push(("cpu.weight", cpu_weight(s, formula).to_string()));
            }
            let quota = limits
                .cpu_quota_us
                .map_or("max".to_string(), |q| q.to_string());
            out.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
        }
        Version::V1 => {
            if let Some(s) = limits.cpu_shares {
                out.push(("cpu.shares", s.to_string()));
            }
            out.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
            out.push((
                "cpu.cfs_quota_us",
                limits.cpu_quota_us.unwrap_or(-1).to_string(),
            ));
        }
    }
    out
}

/// CPU time and CFS throttling, in nanoseconds and periods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

/// Reads the usage; `cpuacct` is v1's accounting directory (the cpu one
/// when co-mounted, unused on v2). Without a `quota` the throttling
/// counters cannot move: v1 does not read them (v2 has them in the one
/// file it reads anyway). `None` on v2 when `cpu.stat` cannot be read: the
/// cgroup is gone.
///
/// On a hybrid host, `unified` is the cgroup's v2 directory (the container
/// runtime places each process in both trees, see [`super::mode::UNIFIED`]).
/// Its `cpu.stat` has the kernel's own CPU accounting of every v2 cgroup,
/// whatever controllers it has: usage and its user/system split in one
/// file, in microseconds. v1 reads it instead of `cpuacct.usage` and
/// `cpuacct.stat` (two reads, and a split in clock ticks), and falls back
/// to them where it has no usage line.
pub fn usage<S: Source>(
    version: Version,
    cpu: &S,
    cpuacct: &S,
    unified: Option<&S>,
    quota: bool,
) -> Option<Usage> {
    match version {
        Version::V2 => {
            let [usage, user, system, periods, throttled, throttled_us] =
                cpu.counter("cpu.stat", |t| {
                    keyed_values(
                        t,
                        [
                            "usage_usec",
                            "user_usec",
                            "system_usec",
                            "nr_periods",
                            "nr_throttled",
                            "throttled_usec",
                        ],
                    )
                })?;
            Some(Usage {
                usage_ns: usage.saturating_mul(1000),
                user_ns: user.saturating_mul(1000),
                system_ns: system.saturating_mul(1000),
                periods,
                throttled_periods: throttled,
                throttled_ns: throttled_us.saturating_mul(1000),
            })
        }
        Version::V1 => {
            let base = unified.and_then(|u| {
                u.counter("cpu.stat", |t| {
                    t.contains("usage_usec ")
                        .then(|| keyed_values(t, ["usage_usec", "user_usec", "system_usec"]))
                })
                .flatten()
            });
            let [usage_ns, user, system] = match base {
                Some(usec) => usec.map(|u| u.saturating_mul(1000)),
                None => {
                    let [user, system] = cpuacct
                        .counter("cpuacct.stat", |t| keyed_values(t, ["user", "system"]))
                        .unwrap_or_default()
                        .map(|t| t.saturating_mul(1_000_000_000 / USER_HZ));
                    let usage = cpuacct.counter_num("cpuacct.usage").unwrap_or(0);
                    [usage, user, system]
                }
            };
            let [periods, throttled, throttled_ns] = if quota {
                cpu.counter("cpu.stat", |t| {
                    keyed_values(t, ["nr_periods", "nr_throttled", "throttled_time"])
                })
                .unwrap_or_default()
            } else {
                [0; 3]
            };
            Some(Usage {
                usage_ns,
                user_ns: user,
                system_ns: system,
                periods,
                throttled_periods: throttled,
                throttled_ns,
            })
        }
    }
}

/// The configured values as cAdvisor reports them: shares (v1 units, also
/// on v2), quota (-1 for none) and period in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spec {
    pub shares: u64,
    pub quota_us: i64,
    pub period_us: u64,
}

/// Reads the configured values. Unreadable files read as cAdvisor leaves
/// them: no shares (0); on v1 no quota (-1) over the default period; on v2
/// without `cpu.max` (no cpu controller) quota and period 0.
pub fn spec(version: Version, cpu: &impl Source) -> Spec {
    match version {
        Version::V2 => {
            let (quota_us, period_us) = cpu.read("cpu.max").map_or((0, 0), |max| {
                let mut parts = max.split_whitespace();
                (
                    parts.next().and_then(|q| q.parse().ok()).unwrap_or(-1),
                    parts
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(CPU_PERIOD_US),
                )
            });
            Spec {
                shares: cpu.num("cpu.weight").map_or(0, shares_from_weight),
                quota_us,
                period_us,
            }
        }
        Version::V1 => Spec {
            shares: cpu.num("cpu.shares").unwrap_or(0),
            quota_us: cpu
                .read("cpu.cfs_quota_us")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(-1),
            period_us: cpu.num("cpu.cfs_period_us").unwrap_or(CPU_PERIOD_US),
        },
    }
}

/// v1 `cpu.shares` from a v2 `cpu.weight` (cAdvisor's inverse of the
/// linear mapping).
pub fn shares_from_weight(weight: u64) -> u64 {
    if weight == 0 {
        0
    } else {
        2 + ((weight - 1) * 262_142) / 9999
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fs::tests::files;

    #[test]
    fn writes_for_each_version() {
        let limited = CgroupLimits {
            cpu_shares: Some(1024),
            cpu_quota_us: Some(20_000),
            ..Default::default()
        };
        let none = CgroupLimits::default();
        for (limits, version, formula, want) in [
            (
                limited,
                Version::V2,
                WeightFormula::Quadratic,
                vec![("cpu.weight", "100"), ("cpu.max", "20000 100000")],
            ),
            (
                limited,
                Version::V2,
                WeightFormula::Linear,
                vec![("cpu.weight", "39"), ("cpu.max", "20000 100000")],
            ),
            (
                none,
                Version::V2,
                WeightFormula::Linear,
                vec![("cpu.max", "max 100000")],
            ),
            (
                limited,
                Version::V1,
                WeightFormula::Quadratic,
                vec![
                    ("cpu.shares", "1024"),
                    ("cpu.cfs_period_us", "100000"),
                    ("cpu.cfs_quota_us", "20000"),
                ],
            ),
            (
                none,
                Version::V1,
                WeightFormula::Linear,
                vec![("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1")],
            ),
        ] {
            let got = writes(&limits, version, formula);
            let got: Vec<(&str, &str)> = got.iter().map(|(f, v)| (*f, v.as_str())).collect();
            assert_eq!(got, want, "{limits:?} {version:?} {formula:?}");
        }
    }

    #[test]
    fn usage_v2() {
        let cpu = files(&[(
            "cpu.stat",
            "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 30\nthrottled_usec 250000\n",
        )]);
        assert_eq!(
            usage(Version::V2, &cpu, &cpu, None, true),
            Some(Usage {
                usage_ns: 2_000_000_000,
                user_ns: 1_500_000_000,
                system_ns: 500_000_000,
                periods: 40,
                throttled_periods: 30,
                throttled_ns: 250_000_000,
            })
        );
        // The root cgroup's cpu.stat has no throttling lines.
        let root = files(&[("cpu.stat", "usage_usec 7\nuser_usec 5\nsystem_usec 2\n")]);
        let u = usage(Version::V2, &root, &root, None, false).unwrap();
        assert_eq!((u.usage_ns, u.periods), (7000, 0));
        assert_eq!(
            usage(Version::V2, &files(&[]), &files(&[]), None, true),
            None
        );
    }

    #[test]
    fn usage_v1() {
        let cpu = files(&[(
            "cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 123\n",
        )]);
        let acct = files(&[
            ("cpuacct.usage", "3000000000\n"),
            ("cpuacct.stat", "user 250\nsystem 50\n"),
        ]);
        let with_quota = Usage {
            usage_ns: 3_000_000_000,
            user_ns: 2_500_000_000,
            system_ns: 500_000_000,
            periods: 10,
            throttled_periods: 4,
            throttled_ns: 123,
        };
        assert_eq!(
            usage(Version::V1, &cpu, &acct, None, true),
            Some(with_quota)
        );
        // Without a quota, cpu.stat is not read.
        assert_eq!(
            usage(Version::V1, &cpu, &acct, None, false),
            Some(Usage {
                periods: 0,
                throttled_periods: 0,
                throttled_ns: 0,
                ..with_quota
            })
        );
        // Nothing readable: zeros, not a missing cgroup (v1 decides that
        // by the directories).
        assert_eq!(
            usage(Version::V1, &files(&[]), &files(&[]), None, true),
            Some(Usage::default())
        );
        // Hybrid: the v2 tree's accounting, in microseconds.
        let unified = files(&[(
            "cpu.stat",
            "usage_usec 3000001\nuser_usec 2400000\nsystem_usec 600001\nnice_usec 0\n",
        )]);
        assert_eq!(
            usage(Version::V1, &cpu, &acct, Some(&unified), true),
            Some(Usage {
                usage_ns: 3_000_001_000,
                user_ns: 2_400_000_000,
                system_ns: 600_001_000,
                ..with_quota
            })
        );
        // ... where it has it: else cpuacct.
        for no_usage in [files(&[]), files(&[("cpu.stat", "nr_periods 1\n")])] {
            assert_eq!(
                usage(Version::V1, &cpu, &acct, Some(&no_usage), true),
                Some(with_quota)
            );
        }
    }

    #[test]
    fn specs() {
        for (version, pairs, want) in [
            (
                Version::V2,
                vec![("cpu.weight", "100\n"), ("cpu.max", "20000 100000\n")],
                (shares_from_weight(100), 20_000, 100_000),
            ),
            (
                Version::V2,
                vec![("cpu.weight", "1\n"), ("cpu.max", "max 100000\n")],
                (2, -1, 100_000),
            ),
            (Version::V2, vec![], (0, 0, 0)),
            (
                Version::V1,
                vec![
                    ("cpu.shares", "204\n"),
                    ("cpu.cfs_quota_us", "-1\n"),
                    ("cpu.cfs_period_us", "100000\n"),
                ],
                (204, -1, 100_000),
            ),
            (
                Version::V1,
                vec![("cpu.cfs_quota_us", "50000\n")],
                (0, 50_000, 100_000),
            ),
            (Version::V1, vec![], (0, -1, 100_000)),
        ] {
            let s = spec(version, &files(&pairs));
            assert_eq!((s.shares, s.quota_us, s.period_us), want, "{pairs:?}");
        }
    }

    #[test]
    fn weight_back_to_shares() {
        for (weight, shares) in [(0, 0), (1, 2), (39, 998), (100, 2597), (10_000, 262_144)] {
            assert_eq!(shares_from_weight(weight), shares, "{weight}");
        }
    }
}
