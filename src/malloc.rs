//! glibc's malloc, tuned for a long-lived agent whose memory follows its
//! pods: few arenas, fixed thresholds ([`tune`]), and the free memory
//! handed back once pods went ([`trim_after_deletions`]). Elsewhere (musl)
//! both do nothing.

use std::time::Duration;

use crate::pod::Store;

/// glibc gives each thread that allocates its own arena (up to 8 per core)
/// and keeps what is freed in it. Threads of the blocking pool come and go
/// with pod work, so freed memory piled up across arenas: with 100 pods
/// created and deleted three times, RSS went 38 -> 42 MiB, against 33 ->
/// 34 MiB with two arenas (benches/scale.rs, same machine and run).
///
/// glibc also raises its mmap threshold to the size of each large block
/// freed (up to 32 MiB), and its trim threshold to twice that: after the
/// first large response (a scrape is about 800 KB) such blocks come from
/// the arenas, and the arenas' free tops stay mapped. Fixed at glibc's
/// initial 128 KiB, blocks of 128 KiB and more are mapped and unmapped on
/// their own, and a free top above 128 KiB goes back to the kernel. In
/// benches/memory.rs (110 two-container pods, deleted at once, three more
/// cycles) RSS went 28.3 / 28.4 / 31.3 MiB (at 110 pods / after deleting
/// them / after the cycles) -> 26.7 / 26.9 / 29.6 MiB, and with no pods
/// 22.3 -> 16.5 MiB. The same run with mimalloc 2.0 (34.4 / 34.1 / 33.7)
/// and jemalloc 5.3 (33.3 / 32.8 / 33.7) in place of glibc was worse.
///
/// glibc's own settings in the environment (`GLIBC_TUNABLES`,
/// `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`)
/// win over these.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    {
        let tunables = std::env::var_os("GLIBC_TUNABLES").is_some();
        let settings = [
            (libc::M_ARENA_MAX, "MALLOC_ARENA_MAX", 2),
            (libc::M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 128 * 1024),
            (libc::M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 128 * 1024),
        ];
        for (param, var, value) in settings {
            if tunables || std::env::var_os(var).is_some() {
                continue;
            }
            // SAFETY: mallopt only sets a tunable of the allocator; it is
            // called before the runtime starts any thread.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

/// How long the pods must stay unchanged after some went before the
/// allocator's free memory is handed back.
pub const TRIM_QUIET: Duration = Duration::from_secs(1);

/// Returns the allocator's free memory to the kernel (`malloc_trim`:
/// glibc returns by itself only the top of its main heap).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator's own
    // arenas to the kernel; it takes the arenas' locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls `trim` once pods went and the pod store has then been unchanged
/// for `quiet`: once per wave of deletions, off the runtime's threads.
/// What a deleted pod's tasks freed stays in glibc's arenas otherwise, and
/// RSS after a mass deletion stayed near its peak (benches/scale.rs: 26.7
/// MiB after two create/delete cycles of 110 pods without, 22.4 MiB with).
pub async fn trim_after_deletions(store: Store, quiet: Duration, trim: fn()) {
    let mut changes = store.changes();
    let mut most = store.read().len();
    while changes.changed().await.is_ok() {
        let now = store.read().len();
        if now >= most {
            most = now;
            continue;
        }
        loop {
            match tokio::time::timeout(quiet, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
        let _ = tokio::task::spawn_blocking(trim).await;
        most = store.read().len();
        tracing::debug!(
            pods = most,
            "allocator's free memory handed back after pods went"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        TRIMS.fetch_add(1, Ordering::SeqCst);
    }

    #[tokio::test(start_paused = true)]
    async fn trims_once_per_wave_of_deletions_after_a_quiet_second() {
        let store = Store::default();
        let pods: Vec<_> = (0..3)
            .map(|i| {
                let text = format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  containers:\n  - {{name: c, image: busybox}}\n"
                );
                let file = format!("/m/p{i}.yaml");
                let parsed = crate::manifest::parse_file(std::path::Path::new(&file), &text, "n1");
                std::sync::Arc::new(parsed.pods.into_iter().next().unwrap())
            })
            .collect();
        for p in &pods {
            store.publish(crate::pod::PodEntry {
                pod: std::sync::Arc::clone(p),
                status: crate::pod::PodStatus::new(),
            });
        }
        tokio::spawn(trim_after_deletions(store.clone(), TRIM_QUIET, count));
        let settle = || tokio::time::sleep(Duration::from_millis(10));
        settle().await;
        // Pods added and changed: nothing to hand back.
        store.publish(store.get(&pods[0].uid).unwrap());
        tokio::time::sleep(3 * TRIM_QUIET).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0);
        // Two deletions in a row: one trim, a quiet second after the last.
        store.remove(&pods[0].uid);
        tokio::time::sleep(TRIM_QUIET / 2).await;
        store.remove(&pods[1].uid);
        tokio::time::sleep(TRIM_QUIET / 2).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0);
        tokio::time::sleep(TRIM_QUIET).await;
        settle().await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1);
        tokio::time::sleep(3 * TRIM_QUIET).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1);
        // The next deletion is the next wave.
        store.remove(&pods[2].uid);
        tokio::time::sleep(2 * TRIM_QUIET).await;
        settle().await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 2);
    }
}
