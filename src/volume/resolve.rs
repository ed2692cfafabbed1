//! Looks up what a pod refers to — claims, volumes, configMaps, secrets —
//! among the objects of the manifest directory. Pure: the result becomes
//! part of the desired pod (and of its UID, so that a changed configMap or a
//! newly bound volume replaces the pod).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Secret,
};

use super::bind::ClaimKey;
use super::{ContainerEnv, File, Resolved, Source, Volume};
use crate::manifest::quantity::Quantity;
use crate::manifest::{Object, StaticPod};
use crate::pod::PodError;

/// The objects of the directory, by namespace and name.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub config_maps: BTreeMap<(String, String), ConfigMap>,
    pub secrets: BTreeMap<(String, String), Secret>,
    pub pvs: BTreeMap<String, PersistentVolume>,
    pub pvcs: BTreeMap<ClaimKey, PersistentVolumeClaim>,
    /// Claim -> volume name.
    pub bindings: BTreeMap<ClaimKey, String>,
}

impl Objects {
    pub fn add(&mut self, o: Object) {
        let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (
                m.namespace.clone().unwrap_or_else(|| "default".into()),
                m.name.clone().unwrap_or_default(),
            )
        };
        match o {
            Object::ConfigMap(c) => {
                self.config_maps.insert(key(&c.metadata), c);
            }
            Object::Secret(s) => {
                self.secrets.insert(key(&s.metadata), s);
            }
            Object::PersistentVolume(p) => {
                self.pvs
                    .insert(p.metadata.name.clone().unwrap_or_default(), *p);
            }
            Object::PersistentVolumeClaim(p) => {
                self.pvcs.insert(key(&p.metadata), *p);
            }
        }
    }
}

fn config_map_data(c: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in c.data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in c.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    // stringData is write-only convenience: it overrides data.
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// Files of a configMap/secret volume: every key, or the listed `items`.
fn files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<Vec<File>, String> {
    let mode = default_mode.unwrap_or(0o644).cast_unsigned();
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| File {
                path: k.clone(),
                data: v.clone(),
                mode,
            })
            .collect()),
        Some(items) => items
            .iter()
            .map(|i| match data.get(&i.key) {
                Some(v) => Ok(File {
                    path: i.path.clone(),
                    data: v.clone(),
                    mode: i.mode.map_or(mode, i32::cast_unsigned),
                }),
                None => Err(format!("{what} has no key {:?}", i.key)),
            })
            .collect(),
    }
}

fn unavailable(message: String) -> Source {
    Source::Unavailable(PodError::Mount(message))
}

/// Resolves every volume and env reference of `pod`.
pub fn resolve(pod: &StaticPod, objs: &Objects) -> Resolved {
    let ns = pod.namespace.clone();
    let spec = pod.spec();
    let mut out = Resolved::default();
    for v in spec.volumes.iter().flatten() {
        let mut read_only = false;
        let source = if let Some(d) = &v.empty_dir {
            Source::EmptyDir {
                memory: d.medium.as_deref() == Some("Memory"),
                size_limit: d
                    .size_limit
                    .as_ref()
                    .and_then(|q| Quantity::parse(&q.0).ok())
                    .map(|q| q.value_ceil())
                    .filter(|v| *v > 0),
            }
        } else if let Some(h) = &v.host_path {
            Source::HostPath {
                path: PathBuf::from(&h.path),
                kind: h.type_.clone().unwrap_or_default(),
            }
        } else if let Some(n) = &v.nfs {
            read_only = n.read_only == Some(true);
            Source::Nfs {
                server: n.server.clone(),
                path: n.path.clone(),
                read_only,
                options: vec![],
                pv: None,
            }
        } else if let Some(c) = &v.config_map {
            let optional = c.optional == Some(true);
            match objs.config_maps.get(&(ns.clone(), c.name.clone())) {
                Some(cm) => {
                    let what = format!("configmap {:?}", c.name);
                    match files(
                        &config_map_data(cm),
                        c.items.as_ref(),
                        c.default_mode,
                        &what,
                    ) {
                        Ok(files) => Source::Files {
                            secret: false,
                            files,
                        },
                        Err(m) if optional => {
                            let _ = m;
                            Source::Files {
                                secret: false,
                                files: vec![],
                            }
                        }
                        Err(m) => unavailable(format!("volume {:?}: {m}", v.name)),
                    }
                }
                None if optional => Source::Files {
                    secret: false,
                    files: vec![],
                },
                None => unavailable(format!(
                    "MountVolume.SetUp failed for volume {:?}: configmap {:?} not found",
                    v.name, c.name
                )),
            }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let optional = s.optional == Some(true);
            match objs.secrets.get(&(ns.clone(), name.clone())) {
                Some(sec) => match files(
                    &secret_data(sec),
                    s.items.as_ref(),
                    s.default_mode,
                    &format!("secret {name:?}"),
                ) {
                    Ok(files) => Source::Files {
                        secret: true,
                        files,
                    },
                    Err(_) if optional => Source::Files {
                        secret: true,
                        files: vec![],
                    },
                    Err(m) => unavailable(format!("volume {:?}: {m}", v.name)),
                },
                None if optional => Source::Files {
                    secret: true,
                    files: vec![],
                },
                None => unavailable(format!(
                    "MountVolume.SetUp failed for volume {:?}: secret {name:?} not found",
                    v.name
                )),
            }
        } else if let Some(c) = &v.persistent_volume_claim {
            read_only = c.read_only == Some(true);
            let key = (ns.clone(), c.claim_name.clone());
            match (
                objs.pvcs.get(&key),
                objs.bindings.get(&key).and_then(|n| objs.pvs.get(n)),
            ) {
                (None, _) => unavailable(format!(
                    "persistentvolumeclaim {:?} not found",
                    c.claim_name
                )),
                (Some(_), None) => unavailable(format!(
                    "persistentvolumeclaim {:?} is not bound: no PersistentVolume matches its storage class, access modes and size",
                    c.claim_name
                )),
                (Some(_), Some(pv)) => {
                    let pv_name = pv.metadata.name.clone().unwrap_or_default();
                    let spec = pv.spec.clone().unwrap_or_default();
                    if let Some(n) = &spec.nfs {
                        read_only |= n.read_only == Some(true);
                        Source::Nfs {
                            server: n.server.clone(),
                            path: n.path.clone(),
                            read_only,
                            options: spec.mount_options.clone().unwrap_or_default(),
                            pv: Some(pv_name),
                        }
                    } else if let Some(h) = &spec.host_path {
                        Source::HostPath {
                            path: PathBuf::from(&h.path),
                            kind: h.type_.clone().unwrap_or_default(),
                        }
                    } else if let Some(l) = &spec.local {
                        Source::Local {
                            path: PathBuf::from(&l.path),
                            pv: pv_name,
                        }
                    } else {
                        unavailable(format!(
                            "persistentvolume {pv_name:?} has no supported source"
                        ))
                    }
                }
            }
        } else {
            unavailable(format!("volume {:?} has no supported source", v.name))
        };
        if let Source::Unavailable(e) = &source
            && out.problem.is_none()
        {
            out.problem = Some(e.clone());
        }
        out.volumes.push(Volume {
            name: v.name.clone(),
            source,
            read_only,
        });
    }

    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        let mut env = ContainerEnv::default();
        let mut fail = |m: String| {
            if out.problem.is_none() {
                out.problem = Some(PodError::CreateContainerConfig(m));
            }
        };
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(r) = &from.config_map_ref {
                match objs.config_maps.get(&(ns.clone(), r.name.clone())) {
                    Some(cm) => env
                        .from
                        .extend(config_map_data(cm).into_iter().map(|(k, v)| {
                            (
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v).into_owned(),
                            )
                        })),
                    None if r.optional == Some(true) => {}
                    None => fail(format!("configmap {:?} not found", r.name)),
                }
            }
            if let Some(r) = &from.secret_ref {
                match objs.secrets.get(&(ns.clone(), r.name.clone())) {
                    Some(s) => env.from.extend(secret_data(s).into_iter().map(|(k, v)| {
                        (
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })),
                    None if r.optional == Some(true) => {}
                    None => fail(format!("secret {:?} not found", r.name)),
                }
            }
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            // (kind, object name, key, optional, the object's data if found)
            let reference = if let Some(r) = &from.config_map_key_ref {
                let data = objs
                    .config_maps
                    .get(&(ns.clone(), r.name.clone()))
                    .map(config_map_data);
                Some(("configmap", &r.name, &r.key, r.optional, data))
            } else if let Some(r) = &from.secret_key_ref {
                let data = objs
                    .secrets
                    .get(&(ns.clone(), r.name.clone()))
                    .map(secret_data);
                Some(("secret", &r.name, &r.key, r.optional, data))
            } else {
                None
            };
            let Some((kind, name, key, optional, data)) = reference else {
                continue;
            };
            match data.and_then(|mut d| d.remove(key)) {
                Some(v) => {
                    env.refs
                        .insert(var.name.clone(), String::from_utf8_lossy(&v).into_owned());
                }
                None if optional == Some(true) => {}
                None => fail(format!("couldn't find key {key} in {kind} {ns}/{name}")),
            }
        }
        if env != ContainerEnv::default() {
            out.env.insert(c.name.clone(), env);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_file;
    use std::path::Path;

    fn parse(text: &str) -> (Vec<StaticPod>, Objects) {
        let p = parse_file(Path::new("/m/all.yaml"), text, "n1");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let mut objs = Objects::default();
        for o in p.objects {
            objs.add(o);
        }
        (p.pods, objs)
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {url: 'http://x', mode: fast}\n---\n";
    const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {password: aHVudGVyMg==}\nstringData: {user: admin}\n---\n";

    #[test]
    fn config_map_and_secret_volumes_and_env() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - {name: c, configMap: {name: cfg, items: [{key: url, path: conf/url.txt, mode: 0600}]}}\n  - {name: s, secret: {secretName: s, defaultMode: 0400}}\n  containers:\n  - name: a\n    image: busybox\n    envFrom: [{configMapRef: {name: cfg}, prefix: CFG_}]\n    env:\n    - name: PASSWORD\n      valueFrom: {secretKeyRef: {name: s, key: password}}\n";
        let (pods, objs) = parse(&format!("{CM}{SECRET}{pod}"));
        let r = resolve(&pods[0], &objs);
        assert_eq!(r.problem, None);
        assert_eq!(
            r.volumes[0].source,
            Source::Files {
                secret: false,
                files: vec![File {
                    path: "conf/url.txt".into(),
                    data: b"http://x".to_vec(),
                    mode: 0o600
                }]
            }
        );
        let Source::Files {
            secret: true,
            files,
        } = &r.volumes[1].source
        else {
            panic!()
        };
        assert_eq!(files.len(), 2);
        assert!(files.iter().all(|f| f.mode == 0o400));
        assert_eq!(
            files.iter().find(|f| f.path == "password").unwrap().data,
            b"hunter2"
        );
        let env = &r.env["a"];
        assert_eq!(
            env.from,
            [
                ("CFG_mode".to_string(), "fast".to_string()),
                ("CFG_url".to_string(), "http://x".to_string())
            ]
        );
        assert_eq!(env.refs["PASSWORD"], "hunter2");
    }

    #[test]
    fn missing_objects_are_problems_unless_optional() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - {name: c, configMap: {name: nope}}\n  containers: [{name: a, image: busybox}]\n";
        let (pods, objs) = parse(pod);
        let r = resolve(&pods[0], &objs);
        let problem = r.problem.unwrap();
        assert_eq!(problem.reason(), "FailedMount");
        assert!(problem.to_string().contains("configmap \"nope\" not found"));
        let (pods, objs) = parse(&pod.replace("name: nope}", "name: nope, optional: true}"));
        assert_eq!(resolve(&pods[0], &objs).problem, None);
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: busybox\n    env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: nokey}}}]\n";
        let (pods, objs) = parse(&format!("{CM}{pod}"));
        let r = resolve(&pods[0], &objs);
        assert_eq!(
            r.problem.unwrap(),
            PodError::CreateContainerConfig(
                "couldn't find key nokey in configmap default/cfg".to_string()
            )
        );
    }

    #[test]
    fn claims_resolve_through_bindings() {
        let text = "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: nfs-pv}\nspec:\n  capacity: {storage: 10Gi}\n  accessModes: [ReadWriteMany]\n  storageClassName: nfs\n  mountOptions: [nfsvers=4.2]\n  nfs: {server: 192.168.100.10, path: /exports}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: nfs-pvc}\nspec:\n  accessModes: [ReadWriteMany]\n  resources: {requests: {storage: 10Gi}}\n  storageClassName: nfs\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: mongo}\nspec:\n  volumes: [{name: data, persistentVolumeClaim: {claimName: nfs-pvc}}]\n  containers: [{name: m, image: busybox, volumeMounts: [{name: data, mountPath: /data/db}]}]\n";
        let (pods, mut objs) = parse(text);
        let r = resolve(&pods[0], &objs);
        assert!(r.problem.unwrap().to_string().contains("is not bound"));
        let pvs: Vec<_> = objs.pvs.values().cloned().collect();
        let pvcs: Vec<_> = objs.pvcs.values().cloned().collect();
        objs.bindings =
            crate::volume::bind::bind(&pvs, &pvcs, &Default::default(), &Default::default());
        let r = resolve(&pods[0], &objs);
        assert_eq!(r.problem, None);
        assert_eq!(
            r.volumes[0].source,
            Source::Nfs {
                server: "192.168.100.10".into(),
                path: "/exports".into(),
                read_only: false,
                options: vec!["nfsvers=4.2".into()],
                pv: Some("nfs-pv".into())
            }
        );
    }
}
