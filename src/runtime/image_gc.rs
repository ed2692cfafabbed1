//! Image garbage collection as the kubelet's image manager does it
//! (pkg/kubelet/images/image_gc_manager.go): when the filesystem that holds
//! the images is more than `imageGCHighThresholdPercent` full, unused images
//! are removed, least recently used first (never used ones before all),
//! until usage is down to `imageGCLowThresholdPercent`. Images first seen
//! less than `imageMinimumGCAge` ago and images a container uses are kept.
//! The choice is pure; the loop asks containerd.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::containerd::Containerd;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcPolicy {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
    pub period: Duration,
}

/// What the collector knows of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub size: u64,
    pub first_seen: SystemTime,
    /// Last time a container used it; `None` if never seen in use.
    pub last_used: Option<SystemTime>,
    pub in_use: bool,
}

/// The images to remove, in order, for a filesystem of `capacity` bytes
/// with `used` in use.
pub fn choose(
    candidates: &[Candidate],
    used: u64,
    capacity: u64,
    p: &GcPolicy,
    now: SystemTime,
) -> Vec<String> {
    if capacity == 0 || p.high_percent >= 100 {
        return vec![];
    }
    let percent = u128::from(used) * 100 / u128::from(capacity);
    if percent < u128::from(p.high_percent) {
        return vec![];
    }
    let target = u128::from(capacity) * u128::from(p.low_percent) / 100;
    let mut to_free = u128::from(used).saturating_sub(target);
    let mut order: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !c.in_use)
        .filter(|c| now.duration_since(c.first_seen).unwrap_or_default() >= p.min_age)
        .collect();
    // Never used (None) sorts first, then the oldest use.
    order.sort_by(|a, b| {
        a.last_used
            .cmp(&b.last_used)
            .then(a.first_seen.cmp(&b.first_seen))
    });
    let mut out = Vec::new();
    for c in order {
        if to_free == 0 {
            break;
        }
        to_free = to_free.saturating_sub(u128::from(c.size));
        out.push(c.name.clone());
    }
    out
}

/// (used, capacity) bytes of the filesystem holding `path`.
fn usage(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(path)?;
    let capacity = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    Ok((capacity.saturating_sub(free), capacity))
}

/// Runs the collector every `policy.period` until the agent stops.
pub async fn run(rt: Arc<Containerd>, policy: GcPolicy) {
    // name -> (first seen, last used)
    let mut seen: HashMap<String, (SystemTime, Option<SystemTime>)> = HashMap::new();
    let mut tick = tokio::time::interval(policy.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = once(&rt, &policy, &mut seen).await {
            warn!("image garbage collection: {e}");
        }
    }
}

async fn once(
    rt: &Containerd,
    policy: &GcPolicy,
    seen: &mut HashMap<String, (SystemTime, Option<SystemTime>)>,
) -> Result<(), String> {
    let now = SystemTime::now();
    let images = rt.images_with_sizes().await.map_err(|e| e.to_string())?;
    let in_use: HashSet<String> = rt.images_in_use().await.map_err(|e| e.to_string())?;
    let names: HashSet<&String> = images.iter().map(|(n, _)| n).collect();
    seen.retain(|n, _| names.contains(n));
    let mut candidates = Vec::new();
    for (name, size) in &images {
        let entry = seen.entry(name.clone()).or_insert((now, None));
        let used = in_use.contains(name);
        if used {
            entry.1 = Some(now);
        }
        candidates.push(Candidate {
            name: name.clone(),
            size: *size,
            first_seen: entry.0,
            last_used: entry.1,
            in_use: used,
        });
    }
    let Some(root) = rt.snapshotter_root().await.map_err(|e| e.to_string())? else {
        return Err("containerd does not say where its snapshotter keeps its data".into());
    };
    let (used, capacity) = usage(&root).map_err(|e| format!("statvfs {}: {e}", root.display()))?;
    for name in choose(&candidates, used, capacity, policy, now) {
        info!(image = %name, used, capacity, "removing unused image (disk over imageGCHighThresholdPercent)");
        rt.remove_image(&name).await.map_err(|e| e.to_string())?;
        seen.remove(&name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, size: u64, first: u64, last: Option<u64>, in_use: bool) -> Candidate {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        Candidate {
            name: name.into(),
            size,
            first_seen: t(first),
            last_used: last.map(t),
            in_use,
        }
    }

    #[test]
    fn unused_images_go_least_recently_used_first_down_to_the_low_mark() {
        let p = GcPolicy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let images = [
            c("used", 50, 0, Some(990), true),
            c("old", 4, 0, Some(100), false),
            c("older", 4, 0, Some(50), false),
            c("never", 3, 0, None, false),
            c("young", 40, 950, None, false),
        ];
        // Below the high mark: nothing.
        assert!(choose(&images, 84, 100, &p, now).is_empty());
        // 90 used of 100: free 10 (to 80): never (3), older (4), old (4).
        assert_eq!(choose(&images, 90, 100, &p, now), ["never", "older", "old"]);
        // 86 used: free 6: never, older.
        assert_eq!(choose(&images, 86, 100, &p, now), ["never", "older"]);
        // Whatever the need, an image in use or younger than the minimum
        // age stays.
        let all = choose(&images, 100, 100, &p, now);
        assert!(!all.contains(&"used".to_string()) && !all.contains(&"young".to_string()));
        // 100 % turns it off, as the kubelet's does.
        let off = GcPolicy {
            high_percent: 100,
            ..p
        };
        assert!(choose(&images, 100, 100, &off, now).is_empty());
    }
}
