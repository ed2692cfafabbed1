//! Cgroup housekeeping. runc creates each container's cgroup (and its
//! missing parents) under `<cgroupRoot>/pod<uid>/` in every mounted
//! hierarchy, and removes only the container's own directory: the pod's
//! directories are ours to remove.

use std::path::{Path, PathBuf};

/// Mount points of the cgroup hierarchies (v1 controllers and/or the v2
/// unified tree), read from a mountinfo text.
pub fn hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mount_point = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// The pod's cgroup directory relative to a hierarchy's mount point.
pub fn pod_cgroup(cgroup_root: &str, uid: &str) -> String {
    format!("{}/pod{}", cgroup_root.trim_end_matches('/'), uid)
}

/// The container's `cgroupsPath` for runc (cgroupfs driver).
pub fn container_cgroup(cgroup_root: &str, uid: &str, container_id: &str) -> String {
    format!("{}/{}", pod_cgroup(cgroup_root, uid), container_id)
}

/// Removes the pod's (empty) cgroup directories below every hierarchy
/// mounted under `mount_root`. Only rmdir is used: a cgroup that still
/// holds a process is left alone and reported.
pub fn remove_pod_cgroups(mounts: &[PathBuf], cgroup_root: &str, uid: &str) -> Vec<String> {
    let rel = pod_cgroup(cgroup_root, uid);
    let mut problems = Vec::new();
    for m in mounts {
        let dir = m.join(rel.trim_start_matches('/'));
        if let Err(e) = remove_tree(&dir) {
            problems.push(format!("{}: {e}", dir.display()));
        }
    }
    problems
}

/// rmdir of a cgroup tree, children first. Cgroup directories cannot be
/// removed with remove_dir_all: their control files cannot be unlinked.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_and_v2_mounts() {
        let info = "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                    31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                    32 1 8:1 / / rw - ext4 /dev/vda rw\n";
        assert_eq!(
            hierarchies(info),
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            container_cgroup("/kubelet-lite/", "u1", "c1"),
            "/kubelet-lite/podu1/c1"
        );
    }

    #[test]
    fn removes_nested_empty_dirs_only() {
        let m = std::env::temp_dir().join(format!("kl-cg-{}", std::process::id()));
        let pod = m.join("kl/podu1");
        std::fs::create_dir_all(pod.join("c1")).unwrap();
        assert!(remove_pod_cgroups(std::slice::from_ref(&m), "/kl", "u1").is_empty());
        assert!(!pod.exists());
        assert!(m.join("kl").exists());
        std::fs::remove_dir_all(&m).unwrap();
    }
}
