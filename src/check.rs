//! `kubelet-lite check`: the manifest directory (or given files) read as the
//! agent reads them, reported per file for people, editors and CI.
//!
//! Stricter than the watcher in one way: what the agent would silently
//! skip (a file with no object, a document of a kind it does not act on)
//! is an error here, because a linter that passes such a file hides a
//! mistake (a misspelt `kind`, a manifest emptied by accident).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::manifest::{ManifestError, NO_OBJECT, Object, Parsed};
use crate::source::files;

/// Everything `check` found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// No file has an error and every file defines at least one object.
    pub ok: bool,
    pub files: Vec<FileReport>,
}

#[derive(Debug, Serialize)]
pub struct FileReport {
    pub file: PathBuf,
    pub objects: Vec<ObjectSummary>,
    pub errors: Vec<ErrorEntry>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ObjectSummary {
    pub kind: &'static str,
    /// None for cluster-scoped kinds (PersistentVolume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name in the manifest.
    pub name: String,
    /// A pod's name as it runs (`<name>-<node>`).
    #[serde(rename = "staticName", skip_serializing_if = "Option::is_none")]
    pub static_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<usize>,
    #[serde(rename = "initContainers", skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<usize>,
}

/// One error: the file, the 1-based document when the file holds several,
/// the field path when one is to blame, and what is wrong.
#[derive(Debug, Serialize)]
pub struct ErrorEntry {
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    /// The whole line as the agent logs it.
    pub text: String,
}

impl From<ManifestError> for ErrorEntry {
    fn from(e: ManifestError) -> ErrorEntry {
        ErrorEntry {
            text: e.to_string(),
            file: e.file,
            document: e.document,
            field: e.field,
            message: e.message,
        }
    }
}

/// Checks every manifest file of `dir`, as the watcher reads it.
pub fn check_dir(dir: &Path, node: &str) -> Report {
    match files::list(dir) {
        Ok(list) => check_files(&list, node),
        Err(e) => report(vec![FileReport {
            file: dir.to_path_buf(),
            objects: vec![],
            errors: vec![
                ManifestError {
                    file: dir.to_path_buf(),
                    document: None,
                    field: None,
                    message: format!("cannot read directory: {e}"),
                }
                .into(),
            ],
            warnings: vec![],
        }]),
    }
}

/// Checks the given files, in the given order (which decides, as name
/// order does in the directory, which definition of a pod comes first).
pub fn check_files(list: &[PathBuf], node: &str) -> Report {
    let mut loaded: Vec<(PathBuf, Parsed)> = Vec::new();
    let mut unreadable = Vec::new();
    for (i, file) in list.iter().enumerate() {
        match files::load(file, node) {
            Ok(parsed) => loaded.push((file.clone(), parsed)),
            Err(e) => unreadable.push((i, file.clone(), e.into_manifest_error(file))),
        }
    }
    files::refuse_duplicate_pods(&mut loaded);
    let mut out: Vec<FileReport> = loaded
        .into_iter()
        .map(|(file, parsed)| file_report(file, parsed, node))
        .collect();
    for (i, file, e) in unreadable {
        out.insert(
            i,
            FileReport {
                file,
                objects: vec![],
                errors: vec![e.into()],
                warnings: vec![],
            },
        );
    }
    report(out)
}

fn report(files: Vec<FileReport>) -> Report {
    Report {
        ok: files.iter().all(|f| f.errors.is_empty()),
        files,
    }
}

fn file_report(file: PathBuf, parsed: Parsed, node: &str) -> FileReport {
    let mut objects = Vec::new();
    for pod in &parsed.pods {
        let spec = pod.spec();
        let init = spec.init_containers.as_ref().map_or(0, Vec::len);
        objects.push(ObjectSummary {
            kind: "Pod",
            namespace: Some(pod.namespace.clone()),
            name: pod
                .name
                .strip_suffix(&format!("-{node}"))
                .unwrap_or(&pod.name)
                .to_string(),
            static_name: Some(pod.name.clone()),
            containers: Some(spec.containers.len()),
            init_containers: (init > 0).then_some(init),
        });
    }
    for o in &parsed.objects {
        let (kind, meta, namespaced) = match o {
            Object::ConfigMap(c) => ("ConfigMap", &c.metadata, true),
            Object::Secret(s) => ("Secret", &s.metadata, true),
            Object::PersistentVolume(p) => ("PersistentVolume", &p.metadata, false),
            Object::PersistentVolumeClaim(p) => ("PersistentVolumeClaim", &p.metadata, true),
        };
        objects.push(ObjectSummary {
            kind,
            namespace: namespaced
                .then(|| meta.namespace.clone().unwrap_or_else(|| "default".into())),
            name: meta.name.clone().unwrap_or_default(),
            static_name: None,
            containers: None,
            init_containers: None,
        });
    }
    let mut errors: Vec<ErrorEntry> = parsed.errors.into_iter().map(Into::into).collect();
    let at = |message: String, field: Option<&str>| ManifestError {
        file: file.clone(),
        document: None,
        field: field.map(str::to_string),
        message,
    };
    for kind in &parsed.ignored {
        errors.push(
            at(
                format!(
                    "{kind:?} is not a kind kubelet-lite acts on (Pod, ConfigMap, Secret, PersistentVolume, PersistentVolumeClaim): the agent ignores it"
                ),
                Some("kind"),
            )
            .into(),
        );
    }
    let mut warnings: Vec<String> = Vec::new();
    for w in parsed.warnings {
        if w == NO_OBJECT {
            errors.push(at(w, None).into());
        } else {
            warnings.push(w);
        }
    }
    for pod in &parsed.pods {
        warnings.extend(pod.warnings.iter().cloned());
    }
    FileReport {
        file,
        objects,
        errors,
        warnings,
    }
}

impl Report {
    /// The text form: per file, one line listing its objects, then its
    /// warnings and errors.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            if !f.objects.is_empty() {
                let objects: Vec<String> = f.objects.iter().map(ObjectSummary::describe).collect();
                out.push_str(&format!("{}: {}\n", f.file.display(), objects.join(", ")));
            }
            for w in &f.warnings {
                out.push_str(&format!("{}: warning: {w}\n", f.file.display()));
            }
            for e in &f.errors {
                out.push_str(&format!("error: {}\n", e.text));
            }
        }
        out
    }
}

impl ObjectSummary {
    fn describe(&self) -> String {
        let mut s = match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        };
        if let Some(n) = self.containers {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            s.push_str(&format!(" ({n} container{}", plural(n)));
            if let Some(i) = self.init_containers {
                s.push_str(&format!(", {i} init container{}", plural(i)));
            }
            s.push(')');
        }
        s
    }
}
