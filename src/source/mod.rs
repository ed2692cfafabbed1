//! The static pod directory -> the desired set of pods.
//!
//! inotify says when to look; every look reads the whole directory, so a
//! missed event, an editor's rename dance, or a file removed while the agent
//! was down all end in the same answer. A periodic resync covers what inotify
//! cannot (the directory itself replaced, events dropped on overflow).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

pub mod files;

use crate::manifest::{ManifestError, StaticPod};
use crate::volume::bind::{self, ClaimKey};
use crate::volume::resolve::{self, Objects};

/// Everything the directory says, at one moment.
#[derive(Debug, Default, Clone)]
pub struct Desired {
    /// Shared with the pod workers and the pod store: one copy of each pod.
    pub pods: Vec<Arc<StaticPod>>,
    pub errors: Vec<ManifestError>,
    /// ConfigMaps, Secrets, PersistentVolumes and claims, with bindings.
    pub objects: Objects,
    /// Claims bound before this scan that it did not find, with their
    /// volume: deleted, or in a file that could not be read this time.
    pub released: Vec<(ClaimKey, String)>,
    /// Documents of kinds this agent does not run (file: kind).
    pub ignored: Vec<String>,
    /// About whole files (file: warning), e.g. one that holds no object.
    pub warnings: Vec<String>,
}

impl Desired {
    /// The same set, with the pods that `previous` already holds (same UID:
    /// the same file, content and resolved references) taken from it, so
    /// that the workers, the pod store and the desired set share one copy
    /// of each pod however often the directory is read.
    fn sharing_pods_of(mut self, previous: &Desired) -> Desired {
        let known: HashMap<&str, &Arc<StaticPod>> =
            previous.pods.iter().map(|p| (p.uid.as_str(), p)).collect();
        for pod in &mut self.pods {
            if let Some(old) = known.get(pod.uid.as_str()) {
                *pod = Arc::clone(old);
            }
        }
        self
    }

    fn same_as(&self, other: &Desired) -> bool {
        let uids = |d: &Desired| d.pods.iter().map(|p| p.uid.clone()).collect::<Vec<_>>();
        uids(self) == uids(other)
            && self.errors == other.errors
            && self.objects.bindings == other.objects.bindings
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

/// Reads every manifest file in `dir` (not its subdirectories), binding
/// claims from scratch.
pub fn scan(dir: &Path, node: &str) -> std::io::Result<Desired> {
    scan_with(dir, node, &BTreeMap::new(), &BTreeSet::new())
}

/// Reads the directory, keeping the claim bindings of `previous` that still
/// hold, and resolves every pod's references. Volumes in `reserved` (their
/// claim is gone and their reclaim pending) are bound to no other claim.
pub fn scan_with(
    dir: &Path,
    node: &str,
    previous: &BTreeMap<ClaimKey, String>,
    reserved: &BTreeSet<String>,
) -> std::io::Result<Desired> {
    let (mut out, pods) = read_dir(dir, node)?;
    let pvs: Vec<_> = out.objects.pvs.values().cloned().collect();
    let pvcs: Vec<_> = out.objects.pvcs.values().cloned().collect();
    out.objects.bindings = bind::bind(&pvs, &pvcs, previous, reserved);
    out.released = previous
        .iter()
        .filter(|(claim, pv)| {
            !out.objects.pvcs.contains_key(*claim) && out.objects.pvs.contains_key(*pv)
        })
        .map(|(claim, pv)| (claim.clone(), pv.clone()))
        .collect();
    out.pods = pods
        .into_iter()
        .map(|p| {
            let r = resolve::resolve(&p, &out.objects);
            Arc::new(p.with_resolved(r))
        })
        .collect();
    Ok(out)
}

/// Reads the directory's files: what they say, and their pods (before
/// their references are resolved). A directory that is not there holds no
/// pods; one that cannot be read is an error (its pods are not known to
/// be gone).
fn read_dir(dir: &Path, node: &str) -> std::io::Result<(Desired, Vec<StaticPod>)> {
    let mut out = Desired::default();
    let files = match files::list(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((out, vec![])),
        Err(e) => return Err(e),
    };
    let mut loaded = Vec::new();
    let mut pods = Vec::new();
    for file in files {
        match files::load(&file, node) {
            Ok(parsed) => loaded.push((file, parsed)),
            Err(files::ReadError::NotFound) => {}
            Err(e) => out.errors.push(e.into_manifest_error(&file)),
        }
    }
    files::refuse_duplicate_pods(&mut loaded);
    for (file, parsed) in loaded {
        out.errors.extend(parsed.errors);
        pods.extend(parsed.pods);
        for o in parsed.objects {
            out.objects.add(o);
        }
        for kind in parsed.ignored {
            out.ignored.push(format!("{}: {kind}", file.display()));
        }
        for w in parsed.warnings {
            out.warnings.push(format!("{}: {w}", file.display()));
        }
    }
    Ok((out, pods))
}

/// A hostPath or local PersistentVolume to empty: its claim was deleted
/// and its reclaim policy is Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaim {
    pub volume: String,
    pub path: PathBuf,
}

/// The directory a Delete reclaim would empty, for volumes that have one.
fn reclaim_path(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> Option<PathBuf> {
    let spec = pv.spec.as_ref()?;
    if spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete") {
        return None;
    }
    spec.host_path
        .as_ref()
        .map(|h| h.path.clone())
        .or(spec.local.as_ref().map(|l| l.path.clone()))
        .map(PathBuf::from)
}

/// Claims whose volume waits to be reclaimed (Kubernetes' `Released`).
///
/// A claim that disappears from a scan may be deleted, or only unreadable
/// for now (a typo, a half-written file, a permission): emptying its volume
/// at once would turn a typo into data loss. So a Delete reclaim happens
/// only once the claim has stayed absent for the grace period and the
/// directory read without any error (a file that fails to parse may be the
/// one that holds the claim). Meanwhile the volume is bound to no other
/// claim, and the claim coming back takes it again, data intact.
#[derive(Debug, Default)]
struct Releases {
    pending: BTreeMap<ClaimKey, (String, Instant)>,
    /// Due reclaims already reported as deferred by manifest errors.
    deferred: BTreeSet<ClaimKey>,
}

impl Releases {
    fn reserved(&self) -> BTreeSet<String> {
        self.pending.values().map(|(pv, _)| pv.clone()).collect()
    }

    /// Takes in a scan; returns the reclaims that are due.
    fn update(&mut self, desired: &Desired, grace: Duration, now: Instant) -> Vec<Reclaim> {
        let objects = &desired.objects;
        for (claim, pv) in &desired.released {
            if !self.pending.contains_key(claim)
                && objects.pvs.get(pv).and_then(reclaim_path).is_some()
            {
                info!(claim = %format!("{}/{}", claim.0, claim.1), volume = %pv,
                    "claim gone: the volume (reclaim policy Delete) is emptied if it stays gone for {}",
                    humantime::format_duration(grace));
                self.pending.insert(claim.clone(), (pv.clone(), now));
            }
        }
        // Back again, or its volume gone or no longer Delete: nothing to do.
        self.pending.retain(|claim, (pv, _)| {
            let keep = !objects.pvcs.contains_key(claim)
                && objects.pvs.get(pv).and_then(reclaim_path).is_some();
            if !keep && objects.pvcs.contains_key(claim) {
                info!(claim = %format!("{}/{}", claim.0, claim.1), volume = %pv, "claim back: volume not reclaimed");
            }
            keep
        });
        self.deferred.retain(|c| self.pending.contains_key(c));
        let due: Vec<ClaimKey> = self
            .pending
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) >= grace)
            .map(|(c, _)| c.clone())
            .collect();
        if !desired.errors.is_empty() {
            for claim in due {
                if self.deferred.insert(claim.clone()) {
                    warn!(claim = %format!("{}/{}", claim.0, claim.1),
                        "volume reclaim deferred: the manifest directory has errors, and one of them may hide the claim");
                }
            }
            return vec![];
        }
        due.iter()
            .filter_map(|claim| {
                let (volume, _) = self.pending.remove(claim)?;
                let path = objects.pvs.get(&volume).and_then(reclaim_path)?;
                Some(Reclaim { volume, path })
            })
            .collect()
    }

    /// When the next pending reclaim falls due.
    fn next_due(&self, grace: Duration) -> Option<Instant> {
        self.pending.values().map(|(_, since)| *since + grace).min()
    }
}

/// Watches `dir` and publishes the desired set each time it changes.
pub struct Source {
    dir: PathBuf,
    node: String,
    resync: Duration,
    /// Where claim bindings are kept across restarts (the API server's job
    /// on a cluster).
    bindings_file: Option<PathBuf>,
    /// hostPath/local volumes to empty (claim deleted, policy Delete).
    reclaims: Option<mpsc::UnboundedSender<Reclaim>>,
    /// How long a deleted claim stays deleted before its volume is emptied.
    reclaim_grace: Duration,
    pings: Option<Pings>,
}

/// Where a loop receives liveness pings, each answered on its channel.
pub type Pings = mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>;

fn load_bindings(path: &Path) -> BTreeMap<ClaimKey, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    let list: Vec<(String, String, String)> = serde_json::from_str(&text).unwrap_or_else(|e| {
        warn!(file = %path.display(), "ignoring unreadable claim bindings: {e}");
        vec![]
    });
    list.into_iter()
        .map(|(ns, name, pv)| ((ns, name), pv))
        .collect()
}

fn save_bindings(path: &Path, b: &BTreeMap<ClaimKey, String>) {
    let list: Vec<(&String, &String, &String)> =
        b.iter().map(|((ns, n), pv)| (ns, n, pv)).collect();
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, serde_json::to_vec(&list).expect("bindings serialize"))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        warn!(file = %path.display(), "saving claim bindings: {e}");
    }
}

impl Source {
    pub fn new(dir: PathBuf, node: String, resync: Duration) -> Source {
        Source {
            dir,
            node,
            resync,
            bindings_file: None,
            reclaims: None,
            reclaim_grace: Duration::ZERO,
            pings: None,
        }
    }

    /// Keeps claim bindings in `file` and sends volumes to reclaim to `tx`,
    /// once their claim has been gone for `grace`.
    pub fn with_volumes(
        mut self,
        file: PathBuf,
        tx: mpsc::UnboundedSender<Reclaim>,
        grace: Duration,
    ) -> Source {
        self.bindings_file = Some(file);
        self.reclaims = Some(tx);
        self.reclaim_grace = grace;
        self
    }

    /// Answers each ping sent on `pings` while its loop turns (the
    /// systemd watchdog's question).
    pub fn with_pings(mut self, pings: Pings) -> Source {
        self.pings = Some(pings);
        self
    }

    /// Scans once, then keeps `tx` up to date until `tx` has no receivers.
    pub async fn run(mut self, tx: watch::Sender<Arc<Desired>>) {
        let mut pings = self
            .pings
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut bindings = self
            .bindings_file
            .as_deref()
            .map(load_bindings)
            .unwrap_or_default();
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            error!(dir = %self.dir.display(), "cannot create static pod directory: {e}");
        }
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
        let mut watcher: Option<notify::RecommendedWatcher> = None;
        let mut reported = BTreeSet::new();
        let mut warned = BTreeSet::new();
        let mut last = Arc::new(Desired::default());
        let mut first = true;
        let mut releases = Releases::default();
        loop {
            if watcher.is_none() {
                watcher = self.watch(ev_tx.clone());
            }
            let dir = self.dir.clone();
            let node = self.node.clone();
            let previous = bindings.clone();
            let reserved = releases.reserved();
            let desired = match tokio::task::spawn_blocking(move || {
                scan_with(&dir, &node, &previous, &reserved)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            {
                Ok(d) => d,
                Err(e) => {
                    // Fail closed: an unreadable directory (or a scan
                    // that panicked) says nothing about which pods are
                    // gone; the pods of the last good scan stay.
                    error!(dir = %self.dir.display(),
                        "reading the static pod directory failed: {e}; keeping the last desired set");
                    tokio::time::sleep(self.resync.min(Duration::from_secs(5))).await;
                    continue;
                }
            };
            report(&desired, &mut reported, &mut warned);
            let due = releases.update(&desired, self.reclaim_grace, Instant::now());
            let mut kept = desired.objects.bindings.clone();
            for (claim, (pv, _)) in &releases.pending {
                kept.insert(claim.clone(), pv.clone());
            }
            if kept != bindings {
                for (claim, pv) in &kept {
                    if bindings.get(claim) != Some(pv) {
                        info!(claim = %format!("{}/{}", claim.0, claim.1), volume = %pv, "claim bound");
                    }
                }
                for (claim, pv) in &bindings {
                    if !kept.contains_key(claim) {
                        info!(claim = %format!("{}/{}", claim.0, claim.1), volume = %pv, "claim released");
                    }
                }
                bindings = kept;
                if let Some(f) = &self.bindings_file {
                    save_bindings(f, &bindings);
                }
            }
            if let Some(r) = &self.reclaims {
                for reclaim in due {
                    let _ = r.send(reclaim);
                }
            }
            if first || !desired.same_as(&last) {
                first = false;
                let desired = Arc::new(desired.sharing_pods_of(&last));
                last = Arc::clone(&desired);
                if tx.send(desired).is_err() {
                    return;
                }
            }
            let resync = tokio::time::sleep(self.resync);
            tokio::pin!(resync);
            loop {
                tokio::select! {
                    got = ev_rx.recv() => {
                        if got.is_none() { return; }
                        // Coalesce a burst (an editor's write + rename) into one look.
                        while ev_rx.try_recv().is_ok() {}
                    }
                    _ = &mut resync => {}
                    _ = sleep_until(releases.next_due(self.reclaim_grace)) => {}
                    Some(reply) = pings.recv() => {
                        let _ = reply.send(());
                        continue;
                    }
                    _ = tx.closed() => return,
                }
                break;
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
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
    for ignored in &desired.ignored {
        let key = format!(
            "{ignored}: not a kind kubelet-lite runs (Pod, ConfigMap, Secret, PersistentVolume, PersistentVolumeClaim); ignored"
        );
        if !warned.contains(&key) {
            warn!("{key}");
        }
        now_warned.insert(key);
    }
    for w in &desired.warnings {
        if !warned.contains(w) {
            warn!("{w}");
        }
        now_warned.insert(w.clone());
    }
    for claim in desired.objects.pvcs.keys() {
        if !desired.objects.bindings.contains_key(claim) {
            let key = format!(
                "claim {}/{} is pending: no PersistentVolume matches",
                claim.0, claim.1
            );
            if !warned.contains(&key) {
                warn!("{key}");
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
    use crate::manifest;

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

    pub(super) fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kl-source-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub(super) const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec:\n  containers: [{name: c, image: busybox}]\n";

    #[test]
    fn scan_reads_files_skips_subdirs_and_reports_duplicates() {
        let d = tempdir("scan");
        std::fs::write(d.join("a.yaml"), POD.replace("NAME", "web")).unwrap();
        std::fs::write(d.join("b.yaml"), POD.replace("NAME", "web")).unwrap();
        std::fs::write(d.join("c.yaml"), "apiVersion: v1\nkind: Pod\n").unwrap();
        std::fs::write(d.join(".hidden.yaml"), POD.replace("NAME", "hidden")).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/x.yaml"), POD.replace("NAME", "sub")).unwrap();
        let got = scan(&d, "n1").unwrap();
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

    fn volume(policy: &str) -> k8s_openapi::api::core::v1::PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": policy, "hostPath": {"path": "/srv/pv"}}
        }))
        .unwrap()
    }

    /// A scan after claim default/data, bound to the Delete volume "pv",
    /// went away.
    fn claim_gone() -> (ClaimKey, Desired) {
        let claim: ClaimKey = ("default".into(), "data".into());
        let mut gone = Desired::default();
        gone.objects.pvs.insert("pv".into(), volume("Delete"));
        gone.released = vec![(claim.clone(), "pv".into())];
        (claim, gone)
    }

    #[test]
    fn delete_reclaims_wait_for_the_grace_period_and_a_clean_directory() {
        let (_, mut gone) = claim_gone();
        let (grace, t0) = (Duration::from_secs(60), Instant::now());
        let mut r = Releases::default();
        assert!(r.update(&gone, grace, t0).is_empty());
        assert_eq!(r.reserved(), BTreeSet::from(["pv".to_string()]));
        assert_eq!(r.next_due(grace), Some(t0 + grace));
        // Later scans no longer list it as released: it stays pending.
        gone.released.clear();
        assert!(r.update(&gone, grace, t0 + grace / 2).is_empty());
        // Due, but a file of the directory fails to parse: deferred.
        let mut broken = gone.clone();
        broken.errors.push(ManifestError {
            file: PathBuf::from("/m/claim.yaml"),
            document: None,
            field: None,
            message: "bad".into(),
        });
        assert!(r.update(&broken, grace, t0 + grace).is_empty());
        assert_eq!(
            r.update(&gone, grace, t0 + grace),
            vec![Reclaim {
                volume: "pv".into(),
                path: PathBuf::from("/srv/pv")
            }]
        );
        assert!(r.pending.is_empty());
    }

    #[test]
    fn a_claim_that_comes_back_or_a_retained_volume_is_not_reclaimed() {
        let (claim, gone) = claim_gone();
        let (grace, t0) = (Duration::from_secs(60), Instant::now());
        let mut r = Releases::default();
        r.update(&gone, grace, t0);
        let mut back = gone.clone();
        back.released.clear();
        back.objects.pvcs.insert(claim.clone(), Default::default());
        assert!(r.update(&back, grace, t0 + grace * 2).is_empty());
        assert!(r.pending.is_empty());
        let mut retained = gone.clone();
        retained.objects.pvs.insert("pv".into(), volume("Retain"));
        assert!(r.update(&retained, grace, t0).is_empty());
        assert!(r.pending.is_empty());
    }

    #[test]
    fn scan_refuses_special_files_and_warns_of_empty_ones() {
        let d = tempdir("special");
        std::fs::write(d.join("a.yaml"), POD.replace("NAME", "web")).unwrap();
        nix::unistd::mkfifo(
            &d.join("fifo.yaml"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join("zero.yaml")).unwrap();
        std::fs::write(d.join("empty.yaml"), "# nothing yet\n").unwrap();
        let start = std::time::Instant::now();
        let got = scan(&d, "n1").unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(got.pods.len(), 1);
        let errs: Vec<String> = got.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].ends_with("fifo.yaml: is a FIFO, not a regular file: refused"));
        assert!(errs[1].contains("zero.yaml: is a character device"));
        assert_eq!(
            got.warnings,
            vec![format!(
                "{}: {}",
                d.join("empty.yaml").display(),
                manifest::NO_OBJECT
            )]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn an_unreadable_directory_keeps_the_pods_it_had() {
        let d = tempdir("unreadable");
        std::fs::write(d.join("a.yaml"), POD.replace("NAME", "web")).unwrap();
        assert!(scan(&d.join("missing"), "n1").unwrap().pods.is_empty());
        let (tx, mut rx) = watch::channel(Arc::new(Desired::default()));
        let src = Source::new(d.clone(), "n1".into(), Duration::from_millis(100));
        let task = tokio::spawn(src.run(tx));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().pods.len(), 1);
        // The directory is replaced by a file: it cannot be listed.
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::write(&d, b"not a directory").unwrap();
        assert!(scan(&d, "n1").is_err());
        let changed = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
        assert!(changed.is_err(), "published {:?}", rx.borrow().pods.len());
        task.abort();
        std::fs::remove_file(&d).unwrap();
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
