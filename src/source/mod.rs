//! The static pod directory -> the desired set of pods.
//!
//! inotify says when to look; every look reads the whole directory, so a
//! missed event, an editor's rename dance, or a file removed while the agent
//! was down all end in the same answer. A periodic resync covers what inotify
//! cannot (the directory itself replaced, events dropped on overflow).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use crate::manifest::{self, ManifestError, StaticPod};

/// Everything the directory says, at one moment.
#[derive(Debug, Default, Clone)]
pub struct Desired {
    pub pods: Vec<StaticPod>,
    pub errors: Vec<ManifestError>,
}

impl Desired {
    fn same_as(&self, other: &Desired) -> bool {
        let uids = |d: &Desired| d.pods.iter().map(|p| p.uid.clone()).collect::<Vec<_>>();
        uids(self) == uids(other) && self.errors == other.errors
    }
}

/// Files an editor or package manager leaves behind, and hidden files, are
/// not manifests.
pub fn is_manifest_name(name: &str) -> bool {
    !(name.starts_with('.')
        || name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || [
            ".swp",
            ".swx",
            ".swo",
            ".tmp",
            ".bak",
            ".orig",
            ".rej",
            ".dpkg-new",
            ".dpkg-old",
            ".dpkg-dist",
        ]
        .iter()
        .any(|s| name.ends_with(s)))
}

/// Reads every manifest file in `dir` (not its subdirectories).
pub fn scan(dir: &Path, node: &str) -> Desired {
    let mut out = Desired::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                out.errors.push(ManifestError {
                    file: dir.to_path_buf(),
                    document: None,
                    field: None,
                    message: format!("cannot read directory: {e}"),
                });
            }
            return out;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_manifest_name))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut seen: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for file in files {
        let text = match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    out.errors.push(file_error(&file, "not UTF-8 text".into()));
                    continue;
                }
            },
            // Removed between listing and reading: the next look sees it gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.errors
                    .push(file_error(&file, format!("cannot read: {e}")));
                continue;
            }
        };
        let parsed = manifest::parse_file(&file, &text, node);
        out.errors.extend(parsed.errors);
        for pod in parsed.pods {
            let key = (pod.namespace.clone(), pod.name.clone());
            if let Some(first) = seen.get(&key) {
                out.errors.push(ManifestError {
                    file: file.clone(),
                    document: None,
                    field: Some("metadata.name".into()),
                    message: format!(
                        "pod {}/{} is already defined in {}",
                        key.0,
                        key.1,
                        first.display()
                    ),
                });
                continue;
            }
            seen.insert(key, file.clone());
            out.pods.push(pod);
        }
        for kind in parsed.ignored {
            debug!(file = %file.display(), kind, "ignoring object of a kind this agent does not run");
        }
    }
    out
}

fn file_error(file: &Path, message: String) -> ManifestError {
    ManifestError {
        file: file.to_path_buf(),
        document: None,
        field: None,
        message,
    }
}

/// Watches `dir` and publishes the desired set each time it changes.
pub struct Source {
    dir: PathBuf,
    node: String,
    resync: Duration,
}

impl Source {
    pub fn new(dir: PathBuf, node: String, resync: Duration) -> Source {
        Source { dir, node, resync }
    }

    /// Scans once, then keeps `tx` up to date until `tx` has no receivers.
    pub async fn run(self, tx: watch::Sender<Arc<Desired>>) {
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            error!(dir = %self.dir.display(), "cannot create static pod directory: {e}");
        }
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
        let mut watcher: Option<notify::RecommendedWatcher> = None;
        let mut reported = BTreeSet::new();
        let mut warned = BTreeSet::new();
        let mut last = Desired::default();
        let mut first = true;
        loop {
            if watcher.is_none() {
                watcher = self.watch(ev_tx.clone());
            }
            let dir = self.dir.clone();
            let node = self.node.clone();
            let desired = tokio::task::spawn_blocking(move || scan(&dir, &node))
                .await
                .unwrap_or_default();
            report(&desired, &mut reported, &mut warned);
            if first || !desired.same_as(&last) {
                first = false;
                last = desired.clone();
                if tx.send(Arc::new(desired)).is_err() {
                    return;
                }
            }
            tokio::select! {
                got = ev_rx.recv() => {
                    if got.is_none() { return; }
                    // Coalesce a burst (an editor's write + rename) into one look.
                    while ev_rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(self.resync) => {}
                _ = tx.closed() => return,
            }
        }
    }

    fn watch(&self, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
        let handler = move |res: notify::Result<notify::Event>| {
            let relevant = match res {
                // Content is complete on close-after-write; renames and
                // removals change the set. Plain modify events are partial
                // writes: waiting for the close avoids parsing half a file.
                Ok(ev) => {
                    matches!(
                        ev.kind,
                        EventKind::Access(notify::event::AccessKind::Close(
                            notify::event::AccessMode::Write
                        )) | EventKind::Modify(notify::event::ModifyKind::Name(_))
                            | EventKind::Remove(_)
                            | EventKind::Create(notify::event::CreateKind::Folder)
                            | EventKind::Other
                    ) || ev.need_rescan()
                }
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        };
        let mut w = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                warn!("inotify unavailable, relying on periodic resync: {e}");
                return None;
            }
        };
        match w.watch(&self.dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                warn!(dir = %self.dir.display(), "cannot watch, relying on periodic resync: {e}");
                None
            }
        }
    }
}

/// Logs each manifest error and warning once, when it first appears.
fn report(desired: &Desired, reported: &mut BTreeSet<String>, warned: &mut BTreeSet<String>) {
    let now: BTreeSet<String> = desired.errors.iter().map(|e| e.to_string()).collect();
    for e in now.difference(reported) {
        error!("manifest rejected: {e}");
    }
    *reported = now;
    let mut now_warned = BTreeSet::new();
    for pod in &desired.pods {
        for w in &pod.warnings {
            let key = format!("{}: {}", pod.source.display(), w);
            if !warned.contains(&key) {
                warn!(pod = %pod.key(), "{key}");
            }
            now_warned.insert(key);
        }
    }
    *warned = now_warned;
    debug!(
        pods = desired.pods.len(),
        errors = desired.errors.len(),
        "static pod directory read"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_and_hidden_files_are_skipped() {
        for name in ["web.yaml", "web.yml", "web", "db.json"] {
            assert!(is_manifest_name(name), "{name}");
        }
        for name in [
            ".web.yaml",
            "web.yaml~",
            ".web.yaml.swp",
            "web.yaml.swp",
            "#web.yaml#",
            "web.yaml.dpkg-new",
            "web.yaml.bak",
        ] {
            assert!(!is_manifest_name(name), "{name}");
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kl-source-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec:\n  containers: [{name: c, image: busybox}]\n";

    #[test]
    fn scan_reads_files_skips_subdirs_and_reports_duplicates() {
        let d = tempdir("scan");
        std::fs::write(d.join("a.yaml"), POD.replace("NAME", "web")).unwrap();
        std::fs::write(d.join("b.yaml"), POD.replace("NAME", "web")).unwrap();
        std::fs::write(d.join("c.yaml"), "apiVersion: v1\nkind: Pod\n").unwrap();
        std::fs::write(d.join(".hidden.yaml"), POD.replace("NAME", "hidden")).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/x.yaml"), POD.replace("NAME", "sub")).unwrap();
        let got = scan(&d, "n1");
        assert_eq!(got.pods.len(), 1);
        assert_eq!(got.pods[0].name, "web-n1");
        let errs: Vec<String> = got.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("b.yaml") && e.contains("already defined"))
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("c.yaml") && e.contains("spec"))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn watch_publishes_changes() {
        let d = tempdir("watch");
        let (tx, mut rx) = watch::channel(Arc::new(Desired::default()));
        let src = Source::new(d.clone(), "n1".into(), Duration::from_secs(3600));
        let task = tokio::spawn(src.run(tx));
        rx.changed().await.unwrap();
        assert!(rx.borrow_and_update().pods.is_empty());
        std::fs::write(d.join("a.yaml"), POD.replace("NAME", "web")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow_and_update().pods.len(), 1);
        std::fs::remove_file(d.join("a.yaml")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(rx.borrow_and_update().pods.is_empty());
        task.abort();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
