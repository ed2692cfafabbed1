//! Manifest files -> typed, validated static pods. Pure: the caller reads the
//! file, this module only looks at its text.

mod container;
mod field;
pub mod quantity;
pub mod strict;
pub mod syntax;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use validate::FieldError;

/// `env[].valueFrom.fieldRef.fieldPath` values we can fill without an API server.
pub const FIELD_REFS: [&str; 6] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "status.hostIP",
    "status.podIP",
];

/// A pod as the agent will run it.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticPod {
    /// Derived from node name, file path and content: an edit gives a new UID.
    pub uid: String,
    /// `<metadata.name>-<node>`, as the kubelet names mirror pods.
    pub name: String,
    pub namespace: String,
    pub source: PathBuf,
    /// The manifest, with metadata name/namespace/uid set and spec.nodeName
    /// filled in.
    pub pod: Pod,
    /// Fields that are valid Kubernetes but that this agent ignores.
    pub warnings: Vec<String>,
    /// Volumes and env references looked up among the directory's objects.
    pub resolved: crate::volume::Resolved,
}

impl StaticPod {
    /// Attaches what the pod's references resolved to. The UID then also
    /// covers it: a changed configMap, or a claim bound to a volume, makes a
    /// new pod (and replaces the old one), as an edit of the pod would.
    pub fn with_resolved(mut self, resolved: crate::volume::Resolved) -> StaticPod {
        if resolved != Default::default() {
            let mut h = Sha256::new();
            h.update(self.uid.as_bytes());
            h.update(serde_json::to_vec(&resolved).expect("resolved volumes serialize"));
            self.uid = hex::encode(&h.finalize()[..16]);
            self.pod.metadata.uid = Some(self.uid.clone());
            if let Some(a) = self.pod.metadata.annotations.as_mut() {
                a.insert("kubernetes.io/config.hash".into(), self.uid.clone());
            }
        }
        self.resolved = resolved;
        self
    }

    pub fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.as_ref().expect("validated pods have a spec")
    }

    /// `<namespace>/<name>`, for logs.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why a file (or one document in it) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based document number, when the file holds several.
    pub document: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(d) = self.document {
            write!(f, " (document {d})")?;
        }
        match &self.field {
            Some(field) => write!(f, ": {}: {}", field, self.message),
            None => write!(f, ": {}", self.message),
        }
    }
}

/// Objects that pods refer to, placed beside them in the directory.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    ConfigMap(ConfigMap),
    Secret(Secret),
    PersistentVolume(Box<PersistentVolume>),
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
}

/// What one file yields: the pods and objects it defines, and what was
/// wrong with it. A file with any error defines nothing (not even its valid
/// documents): the kubelet validates a manifest as a whole before it runs
/// anything, and half a file taking effect would surprise whoever wrote it.
#[derive(Debug, Default)]
pub struct Parsed {
    pub pods: Vec<StaticPod>,
    pub objects: Vec<Object>,
    pub errors: Vec<ManifestError>,
    /// Documents of kinds this agent does not act on (`apiVersion kind`).
    pub ignored: Vec<String>,
    /// About the file as a whole (e.g. it holds no object at all).
    pub warnings: Vec<String>,
}

/// The warning of a file that holds no document: empty, only comments or
/// only `---` separators.
pub const NO_OBJECT: &str = "no Kubernetes object in this file (empty, or only comments)";

/// Decodes a manifest file's bytes to text. YAML streams are UTF-8, or
/// UTF-16/UTF-32 announced by a byte order mark (YAML 1.2, 5.2); a UTF-8
/// BOM is dropped.
pub fn decode_text(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, String> {
    use std::borrow::Cow;
    let units = |width: usize, big: bool| {
        bytes[width..].chunks(width).map(move |c| {
            if c.len() < width {
                return None;
            }
            Some(match (width, big) {
                (2, true) => u32::from(u16::from_be_bytes([c[0], c[1]])),
                (2, false) => u32::from(u16::from_le_bytes([c[0], c[1]])),
                (_, true) => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                (_, false) => u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            })
        })
    };
    let utf16 = |big: bool| -> Result<Cow<'_, str>, String> {
        let u: Option<Vec<u16>> = units(2, big)
            .map(|u| u.and_then(|v| u16::try_from(v).ok()))
            .collect();
        let u = u.ok_or("invalid UTF-16: odd number of bytes")?;
        char::decode_utf16(u)
            .collect::<Result<String, _>>()
            .map(Cow::Owned)
            .map_err(|e| format!("invalid UTF-16: {e}"))
    };
    let utf32 = |big: bool| -> Result<Cow<'_, str>, String> {
        units(4, big)
            .map(|u| {
                u.and_then(char::from_u32)
                    .ok_or_else(|| "invalid UTF-32".to_string())
            })
            .collect::<Result<String, _>>()
            .map(Cow::Owned)
    };
    // UTF-32LE's BOM begins like UTF-16LE's: test it first.
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => std::str::from_utf8(rest)
            .map(Cow::Borrowed)
            .map_err(|e| format!("invalid UTF-8: {e}")),
        [0x00, 0x00, 0xFE, 0xFF, ..] => utf32(true),
        [0xFF, 0xFE, 0x00, 0x00, ..] => utf32(false),
        [0xFE, 0xFF, ..] => utf16(true),
        [0xFF, 0xFE, ..] => utf16(false),
        // A NUL among the first two bytes is how YAML recognizes UTF-16/32
        // without a mark (5.2): valid UTF-8 bytes, but not YAML text.
        [0, ..] | [_, 0, ..] => {
            Err("not UTF-8 text (UTF-16 and UTF-32 need a byte order mark)".to_string())
        }
        _ => std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|e| format!("invalid UTF-8: {e}")),
    }
}

/// Parses a manifest file's content: what the directory watcher and `check`
/// both call with the bytes they read.
pub fn parse_bytes(file: &Path, bytes: &[u8], node: &str) -> Parsed {
    match decode_text(bytes) {
        Ok(text) => parse_file(file, &text, node),
        Err(message) => Parsed {
            errors: vec![ManifestError {
                file: file.to_path_buf(),
                document: None,
                field: None,
                message,
            }],
            ..Default::default()
        },
    }
}

/// Parses every YAML document of `text` (the content of `file`).
pub fn parse_file(file: &Path, text: &str, node: &str) -> Parsed {
    let mut out = parse_documents(file, text, node);
    if !out.errors.is_empty() {
        out.pods.clear();
        out.objects.clear();
    }
    out
}

fn parse_documents(file: &Path, text: &str, node: &str) -> Parsed {
    use serde::de::DeserializeSeed;
    let mut out = Parsed::default();
    let mut docs = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        let duplicates = strict::Duplicates::default();
        let seed = strict::Strict {
            path: String::new(),
            duplicates: &duplicates,
        };
        match seed.deserialize(de) {
            Ok(Value::Null) => {} // empty document, e.g. a trailing `---`
            Ok(v) => docs.push(v),
            Err(e) => {
                let field = duplicates.take();
                out.errors.push(ManifestError {
                    file: file.to_path_buf(),
                    // The message says the line: a syntax error ends the
                    // reading, so documents cannot be numbered.
                    document: None,
                    message: match &field {
                        Some(_) => format!(
                            "duplicate key (Kubernetes refuses a key twice in one mapping): {e}"
                        ),
                        None => format!("invalid YAML: {e}"),
                    },
                    field,
                });
                return out;
            }
        }
    }
    if docs.is_empty() {
        out.warnings.push(NO_OBJECT.to_string());
        return out;
    }
    let numbered = docs.len() > 1;
    let mut names: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let document = numbered.then_some(i + 1);
        let err = |field: Option<String>, message: String| ManifestError {
            file: file.to_path_buf(),
            document,
            field,
            message,
        };
        let Value::Object(map) = &doc else {
            out.errors.push(err(
                None,
                "a document must be a mapping (a Kubernetes object)".into(),
            ));
            continue;
        };
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        match (api_version, kind) {
            ("v1", "Pod") => match parse_pod(file, doc.clone(), node) {
                Ok(pod) => {
                    let key = (pod.namespace.clone(), pod.name.clone());
                    if let Some(first) = names.insert(key, i + 1) {
                        out.errors.push(err(
                            Some("metadata.name".into()),
                            format!(
                                "Duplicate value: pod {} is already defined in document {first} of this file",
                                pod.key()
                            ),
                        ));
                    } else {
                        out.pods.push(pod);
                    }
                }
                Err(errors) => out
                    .errors
                    .extend(errors.into_iter().map(|f| err(Some(f.field), f.message))),
            },
            (_, "") => out
                .errors
                .push(err(Some("kind".into()), "Required value".into())),
            ("", _) => out
                .errors
                .push(err(Some("apiVersion".into()), "Required value".into())),
            (_, "Pod") => out.errors.push(err(
                Some("apiVersion".into()),
                format!("Unsupported value: {api_version:?}: Pod is \"v1\""),
            )),
            (
                "v1",
                kind @ ("ConfigMap" | "Secret" | "PersistentVolume" | "PersistentVolumeClaim"),
            ) => match parse_object(kind, &doc) {
                Ok(o) => out.objects.push(o),
                Err(errors) => out
                    .errors
                    .extend(errors.into_iter().map(|f| err(Some(f.field), f.message))),
            },
            (v, k) => out.ignored.push(format!("{v} {k}")),
        }
    }
    out
}

/// Deserializes a document into a Kubernetes type, naming the field of a
/// type error, and refusing fields the type does not have (k8s-openapi
/// skips them; a typo must not vanish).
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
) -> Result<T, Vec<FieldError>> {
    let value: T = serde_path_to_error::deserialize(doc.clone()).map_err(|e| {
        let path = e.path().to_string();
        vec![FieldError {
            field: if path == "." { "(root)".into() } else { path },
            message: e.inner().to_string(),
        }]
    })?;
    let round_trip = serde_json::to_value(&value).expect("API objects serialize");
    let mut unknown = Vec::new();
    find_unknown(doc, &round_trip, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(unknown
            .into_iter()
            .map(|f| FieldError {
                field: f,
                message: "unknown field".into(),
            })
            .collect());
    }
    Ok(value)
}

fn parse_object(kind: &str, doc: &Value) -> Result<Object, Vec<FieldError>> {
    let mut doc = doc.clone();
    normalize_storage(&mut doc);
    let object = match kind {
        "ConfigMap" => Object::ConfigMap(typed(&doc)?),
        "Secret" => Object::Secret(typed(&doc)?),
        "PersistentVolume" => Object::PersistentVolume(Box::new(typed(&doc)?)),
        _ => Object::PersistentVolumeClaim(Box::new(typed(&doc)?)),
    };
    let errors = validate::validate_object(&object);
    if errors.is_empty() {
        Ok(object)
    } else {
        Err(errors)
    }
}

/// `storage: 10` (a YAML number) is a valid quantity.
fn normalize_storage(doc: &mut Value) {
    for path in [["spec", "capacity"], ["spec", "resources"]] {
        let Some(mut v) = doc.get_mut(path[0]).and_then(|s| s.get_mut(path[1])) else {
            continue;
        };
        if path[1] == "resources" {
            match v.get_mut("requests") {
                Some(r) => v = r,
                None => continue,
            }
        }
        if let Value::Object(m) = v {
            for q in m.values_mut() {
                if let Value::Number(n) = q {
                    *q = Value::String(n.to_string());
                }
            }
        }
    }
}

/// File modes written the YAML 1.1 way (`defaultMode: 0644`, octal, as
/// kubectl reads them) arrive here as strings: make them numbers.
fn normalize_modes(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "defaultMode" || k == "mode" {
                    if let Value::String(s) = child
                        && s.len() > 1
                        && s.starts_with('0')
                        && let Ok(n) = i64::from_str_radix(&s[1..], 8)
                    {
                        *child = Value::from(n);
                    }
                } else {
                    normalize_modes(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_modes),
        _ => {}
    }
}

fn parse_pod(file: &Path, mut doc: Value, node: &str) -> Result<StaticPod, Vec<FieldError>> {
    normalize_quantities(&mut doc);
    normalize_modes(&mut doc);
    let pod: Pod = typed(&doc)?;
    let errors = validate::validate_pod(&pod, node);
    if !errors.is_empty() {
        return Err(errors);
    }
    let warnings = find_unsupported(&doc);

    let uid = static_pod_uid(node, file, &doc);
    let name = format!(
        "{}-{}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        node
    );
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut pod = pod;
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = Some(namespace.clone());
    pod.metadata.uid = Some(uid.clone());
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert("kubernetes.io/config.source".into(), "file".into());
    annotations.insert("kubernetes.io/config.hash".into(), uid.clone());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_string());
    }
    Ok(StaticPod {
        uid,
        name,
        namespace,
        source: file.to_path_buf(),
        pod,
        warnings,
        resolved: Default::default(),
    })
}

/// The kubelet hashes the pod, node name and source into a static pod's UID;
/// we do the same with SHA-256 over the canonical JSON of the document, so
/// reformatting or commenting the YAML keeps the pod.
pub fn static_pod_uid(node: &str, file: &Path, doc: &Value) -> String {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0]);
    h.update(file.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(doc).expect("a JSON value serializes"));
    hex::encode(&h.finalize()[..16])
}

/// Kubernetes accepts `cpu: 1` and `memory: 128974848` (YAML numbers) where the
/// Rust types want strings.
fn normalize_quantities(doc: &mut Value) {
    let Some(spec) = doc.get_mut("spec") else {
        return;
    };
    for group in ["containers", "initContainers"] {
        let Some(Value::Array(containers)) = spec.get_mut(group) else {
            continue;
        };
        for c in containers {
            let Some(res) = c.get_mut("resources") else {
                continue;
            };
            for kind in ["limits", "requests"] {
                if let Some(Value::Object(m)) = res.get_mut(kind) {
                    for v in m.values_mut() {
                        if let Value::Number(n) = v {
                            *v = Value::String(n.to_string());
                        }
                    }
                }
            }
        }
    }
}

/// Paths in `orig` that the typed round trip dropped.
fn find_unknown(orig: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    Some(tv) => find_unknown(v, tv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                find_unknown(ov, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Field paths this agent acts on; `*` is any array index. A set field
/// outside these is valid Kubernetes that we ignore, with a warning.
const SUPPORTED_POD: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.labels",
    "metadata.annotations",
    "spec.restartPolicy",
    "spec.terminationGracePeriodSeconds",
    "spec.hostNetwork",
    "spec.hostIPC",
    "spec.hostPID",
    "spec.hostname",
    "spec.subdomain",
    "spec.setHostnameAsFQDN",
    "spec.hostAliases",
    "spec.dnsPolicy",
    "spec.dnsConfig",
    "spec.nodeName",
    "spec.securityContext.runAsUser",
    "spec.securityContext.runAsGroup",
    "spec.securityContext.supplementalGroups",
    "spec.volumes",
];

/// The same for each entry of `containers` and `initContainers`.
const SUPPORTED_CONTAINER: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "workingDir",
    "env",
    "envFrom",
    "ports",
    "volumeMounts.*.name",
    "volumeMounts.*.mountPath",
    "volumeMounts.*.readOnly",
    "volumeMounts.*.subPath",
    "resources.limits.cpu",
    "resources.limits.memory",
    "resources.requests.cpu",
    "resources.requests.memory",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "securityContext.runAsUser",
    "securityContext.runAsGroup",
    "securityContext.allowPrivilegeEscalation",
    "securityContext.readOnlyRootFilesystem",
    "securityContext.capabilities",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
];

fn supported_patterns() -> Vec<Vec<String>> {
    let split = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
    let mut out: Vec<Vec<String>> = SUPPORTED_POD.iter().map(|s| split(s)).collect();
    for group in ["containers", "initContainers"] {
        for f in SUPPORTED_CONTAINER {
            out.push(split(&format!("spec.{group}.*.{f}")));
        }
    }
    out
}

fn find_unsupported(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, path: &mut Vec<String>, patterns: &[Vec<String>], out: &mut Vec<String>) {
        let matches = |p: &[String], full: bool| {
            patterns.iter().any(|s| {
                (if full {
                    p.len() >= s.len()
                } else {
                    p.len() < s.len()
                }) && s.iter().zip(p).all(|(a, b)| a == "*" || a == b)
            })
        };
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, c)| (k.clone(), c)).collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c))
                .collect(),
            _ => return,
        };
        for (k, child) in children {
            if child.is_null() {
                continue;
            }
            path.push(k);
            if matches(path, false) {
                walk(child, path, patterns, out);
            } else if !matches(path, true) {
                out.push(format!(
                    "{}: not supported by kubelet-lite, ignored",
                    path.join(".")
                ));
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut Vec::new(), &supported_patterns(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        parse_file(Path::new("/m/web.yaml"), text, "node1")
    }

    const GOOD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: a\n    image: busybox\n    command: [sleep, '3600']\n    resources:\n      limits: {cpu: 1, memory: 64Mi}\n";

    #[test]
    fn good_pod_gets_static_name_uid_and_node() {
        let p = parse(GOOD);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let pod = &p.pods[0];
        assert_eq!(pod.name, "web-node1");
        assert_eq!(pod.namespace, "default");
        assert_eq!(pod.uid.len(), 32);
        assert_eq!(pod.spec().node_name.as_deref(), Some("node1"));
        assert!(pod.warnings.is_empty(), "{:?}", pod.warnings);
    }

    #[test]
    fn uid_follows_content_not_formatting() {
        let a = parse(GOOD).pods[0].uid.clone();
        let reformatted = format!(
            "# a comment\n{}",
            GOOD.replace("[sleep, '3600']", "\n    - sleep\n    - \"3600\"")
        );
        assert_eq!(parse(&reformatted).pods[0].uid, a);
        let edited = GOOD.replace("3600", "3601");
        assert_ne!(parse(&edited).pods[0].uid, a);
        let other_node = parse_file(Path::new("/m/web.yaml"), GOOD, "node2");
        assert_ne!(other_node.pods[0].uid, a);
    }

    #[test]
    fn negative_quantity_names_file_and_field() {
        let text = GOOD.replace("memory: 64Mi", "memory: -1Mi");
        let p = parse(&text);
        assert!(p.pods.is_empty());
        assert_eq!(
            p.errors[0].to_string(),
            "/m/web.yaml: spec.containers[0].resources.limits.memory: \"-1Mi\" is negative"
        );
    }

    #[test]
    fn several_errors_are_all_reported() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Web\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - name: a\n    image: busybox\n  - name: a\n    volumeMounts: [{name: data, mountPath: /d}]\n";
        let p = parse(text);
        let msgs: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
        let all = msgs.join("\n");
        for want in [
            "metadata.name",
            "spec.containers[1].name: Duplicate value",
            "spec.containers[1].image: Required value",
            "spec.containers[1].volumeMounts[0].name: Not found: \"data\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\"",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }

    #[test]
    fn unknown_and_mistyped_fields_are_errors() {
        let p = parse(&GOOD.replace("    command:", "    comand:"));
        assert_eq!(
            p.errors[0].field.as_deref(),
            Some("spec.containers[0].comand")
        );
        assert_eq!(p.errors[0].message, "unknown field");
        let p = parse(&GOOD.replace("[sleep, '3600']", "{a: b}"));
        assert_eq!(
            p.errors[0].field.as_deref(),
            Some("spec.containers[0].command")
        );
    }

    #[test]
    fn multi_document_files() {
        let text = format!(
            "{GOOD}---\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\n",
            GOOD.replace("name: web", "name: api")
        );
        let p = parse(&text);
        assert_eq!(p.pods.len(), 2);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.ignored, vec!["apps/v1 Deployment".to_string()]);
        // One bad document: the file defines nothing, not even its good pod.
        let bad = format!(
            "{GOOD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n{}",
            GOOD.replace("image: busybox", "image: ''")
        );
        let p = parse(&bad);
        assert!(p.pods.is_empty() && p.objects.is_empty());
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        assert_eq!(p.errors[0].document, Some(3));
        assert!(
            p.errors[0]
                .to_string()
                .starts_with("/m/web.yaml (document 3): spec.containers[0].image")
        );
    }

    #[test]
    fn unsupported_fields_warn() {
        let text = GOOD.replace(
            "    command:",
            "    lifecycle: {preStop: {exec: {command: [/bin/true]}}}\n    livenessProbe: {exec: {command: [/bin/true]}}\n    command:",
        );
        let p = parse(&text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(
            p.pods[0].warnings,
            vec!["spec.containers.0.lifecycle: not supported by kubelet-lite, ignored".to_string()]
        );
    }

    #[test]
    fn the_pod_names_and_dns_fields_are_acted_on() {
        let text = GOOD.replace(
            "spec:\n",
            "spec:\n  hostname: h\n  subdomain: s\n  setHostnameAsFQDN: true\n  hostAliases: [{ip: 10.0.0.1, hostnames: [db]}]\n  dnsPolicy: None\n  dnsConfig: {nameservers: [10.0.0.53]}\n",
        );
        let p = parse(&text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(p.pods[0].warnings.is_empty(), "{:?}", p.pods[0].warnings);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "{",
            "- a\n- b\n",
            "kind: Pod\n",
            "apiVersion: v2\nkind: Pod\n",
            "apiVersion: v1\nkind: Pod\nspec: 3\n",
        ] {
            let p = parse(text);
            assert!(p.pods.is_empty());
            assert!(!p.errors.is_empty(), "{text:?}");
        }
        for empty in ["", "# only a comment\n", "---\n---\n"] {
            let p = parse(empty);
            assert!(p.errors.is_empty() && p.pods.is_empty(), "{empty:?}");
            assert_eq!(p.warnings, vec![NO_OBJECT.to_string()], "{empty:?}");
        }
    }

    #[test]
    fn duplicate_keys_are_errors_naming_the_field() {
        let p = parse(&GOOD.replace(
            "    image: busybox\n",
            "    image: busybox\n    image: nginx\n",
        ));
        assert!(p.pods.is_empty());
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        assert_eq!(
            p.errors[0].field.as_deref(),
            Some("spec.containers[0].image")
        );
        assert!(
            p.errors[0].message.contains("duplicate key"),
            "{}",
            p.errors[0]
        );
    }

    #[test]
    fn the_same_pod_twice_in_one_file_is_an_error() {
        let p = parse(&format!("{GOOD}---\n{GOOD}"));
        assert!(p.pods.is_empty());
        assert_eq!(p.errors[0].document, Some(2));
        assert!(
            p.errors[0]
                .message
                .contains("already defined in document 1"),
            "{}",
            p.errors[0]
        );
    }

    #[test]
    fn encodings() {
        let f = Path::new("/m/web.yaml");
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(GOOD.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let utf16be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(GOOD.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        let utf32le: Vec<u8> = [0xFF, 0xFE, 0, 0]
            .into_iter()
            .chain(GOOD.chars().flat_map(|c| u32::from(c).to_le_bytes()))
            .collect();
        let utf8bom: Vec<u8> = [0xEF, 0xBB, 0xBF].into_iter().chain(GOOD.bytes()).collect();
        for bytes in [utf16le.clone(), utf16be, utf32le, utf8bom] {
            let p = parse_bytes(f, &bytes, "node1");
            assert!(p.errors.is_empty(), "{:?}", p.errors);
            assert_eq!(p.pods.len(), 1);
        }
        let p = parse_bytes(f, &utf16le[2..], "node1");
        assert!(
            p.errors[0].message.contains("byte order mark"),
            "{}",
            p.errors[0]
        );
        let p = parse_bytes(f, b"kind: Pod\xff\n", "node1");
        assert!(
            p.errors[0].message.starts_with("invalid UTF-8"),
            "{}",
            p.errors[0]
        );
        let p = parse_bytes(f, &utf16le[..utf16le.len() - 1], "node1");
        assert!(p.errors[0].message.contains("UTF-16"), "{}", p.errors[0]);
    }
}

#[cfg(test)]
mod rules_tests;
