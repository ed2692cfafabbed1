//! The OCI runtime spec of one container of a pod. Pure: everything it needs
//! is passed in.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use oci_spec::runtime::{
    Capability, LinuxCpu, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxResources, Mount,
    Spec, User,
};

use crate::cgroup::qos::{self, CgroupLimits, WeightFormula};
use crate::manifest::StaticPod;
use crate::runtime::ImageConfig;
use crate::volume::ContainerEnv;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

/// The namespaces and files a pod's containers share.
#[derive(Debug, Clone, PartialEq)]
pub struct PodContext {
    /// Pinned network namespace; `None` is the host's (`hostNetwork`).
    pub net: Option<PathBuf>,
    /// Pinned UTS namespace; `None` with `hostNetwork`.
    pub uts: Option<PathBuf>,
    /// Pinned IPC namespace; `None` with `hostIPC`.
    pub ipc: Option<PathBuf>,
    pub hosts_file: PathBuf,
    pub hostname_file: PathBuf,
    pub resolv_conf: PathBuf,
    /// Pod-wide /dev/shm (a tmpfs), shared like the IPC namespace.
    pub shm: Option<PathBuf>,
    pub hostname: String,
    /// Whether to give containers their own cgroup namespace (cgroup v2).
    pub cgroupns: bool,
    /// The pod's addresses (`status.podIPs`): from CNI, the node's with
    /// `hostNetwork`, 127.0.0.1 when pods have loopback only.
    pub pod_ips: Vec<std::net::IpAddr>,
    /// The node's address (`status.hostIP`).
    pub host_ip: std::net::IpAddr,
    /// Warning events of making the sandbox (the kubelet's DNS fallbacks).
    pub warnings: Vec<crate::network::dns::Warning>,
}

/// A volume bind-mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub destination: String,
    pub source: PathBuf,
    pub read_only: bool,
}

/// One container to describe.
pub struct ContainerInput<'a> {
    pub pod: &'a StaticPod,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    pub ctx: &'a PodContext,
    pub cgroups_path: String,
    pub limits: CgroupLimits,
    /// `Some(formula)` on cgroup v2.
    pub cgroup_v2: Option<WeightFormula>,
    pub oom_score_adj: i32,
    /// Volume mounts, sources already set up on the host.
    pub mounts: Vec<VolumeMount>,
    /// Values from configMaps and secrets (`envFrom`, key references).
    pub env: Option<&'a ContainerEnv>,
    /// Host file bind-mounted at `terminationMessagePath`.
    pub termination_log: Option<PathBuf>,
}

/// A container's Linux resources from its cgroup values. On cgroup v2 the
/// CPU weight is set directly (`unified`), so that the configured
/// shares-to-weight formula applies rather than runc's own.
pub fn resources(limits: &CgroupLimits, v2: Option<WeightFormula>) -> LinuxResources {
    let mut res = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    let mut unified = HashMap::new();
    match (v2, limits.cpu_shares) {
        (Some(formula), Some(shares)) => {
            let weight = qos::cpu_weight(shares, formula).to_string();
            unified.insert("cpu.weight".to_string(), weight);
        }
        (None, shares) => {
            cpu.set_shares(shares);
        }
        (Some(_), None) => {}
    }
    if let Some(q) = limits.cpu_quota_us {
        cpu.set_quota(Some(q));
        cpu.set_period(Some(qos::CPU_PERIOD_US));
    }
    res.set_cpu(Some(cpu));
    if let Some(m) = limits.memory_max {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(m));
        res.set_memory(Some(mem));
    }
    if let (Some(_), Some(min)) = (v2, limits.memory_min) {
        unified.insert("memory.min".to_string(), min.to_string());
    }
    // As containerd's CRI does with the kubelet's request: the v2-only key
    // goes through `unified`. On v1 it must stay out: runc refuses unified
    // keys on a v1 host and the container would not start.
    if v2.is_some() && limits.oom_group {
        unified.insert("memory.oom.group".to_string(), "1".to_string());
    }
    if !unified.is_empty() {
        res.set_unified(Some(unified));
    }
    res.set_devices(Some(vec![]));
    res
}

/// Expands `$(VAR)` references as the kubelet does: known variables are
/// replaced, `$$` is a literal `$`, anything else is left as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(v) = vars.get(&inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether a container's environment holds the pod's address (a
/// `fieldRef` to `status.podIP` or `status.podIPs`), which is known only
/// once the pod network is attached.
pub fn needs_pod_ip(c: &Container) -> bool {
    c.env.iter().flatten().any(|e| {
        e.value_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
            .is_some_and(|r| r.field_path.starts_with("status.podIP"))
    })
}

fn field_value(path: &str, pod: &StaticPod, ctx: &PodContext) -> String {
    match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "spec.nodeName" => pod.spec().node_name.clone().unwrap_or_default(),
        "status.hostIP" => ctx.host_ip.to_string(),
        "status.podIP" => ctx
            .pod_ips
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// The environment: image defaults, overridden by the container's `env` in
/// order (each value may refer to earlier ones with `$(NAME)`).
pub fn environment(input: &ContainerInput) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let set =
        |k: String, v: String, order: &mut Vec<String>, vars: &mut BTreeMap<String, String>| {
            if !vars.contains_key(&k) {
                order.push(k.clone());
            }
            vars.insert(k, v);
        };
    for kv in &input.image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k.to_string(), v.to_string(), &mut order, &mut vars);
    }
    if let Some(extra) = input.env {
        for (k, v) in &extra.from {
            set(k.clone(), v.clone(), &mut order, &mut vars);
        }
    }
    set(
        "HOSTNAME".into(),
        input.ctx.hostname.clone(),
        &mut order,
        &mut vars,
    );
    for e in input.container.env.iter().flatten() {
        if let Some(v) = input.env.and_then(|x| x.refs.get(&e.name)) {
            set(e.name.clone(), v.clone(), &mut order, &mut vars);
            continue;
        }
        let value = match (
            &e.value,
            e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()),
        ) {
            (_, Some(r)) => field_value(&r.field_path, input.pod, input.ctx),
            (Some(v), None) => expand(v, &vars),
            (None, None) => String::new(),
        };
        set(e.name.clone(), value, &mut order, &mut vars);
    }
    order
        .into_iter()
        .map(|k| {
            let v = vars[&k].clone();
            (k, v)
        })
        .collect()
}

/// `command`/`args` over the image's `Entrypoint`/`Cmd`, as Kubernetes
/// defines it: a command replaces both; args alone replace only `Cmd`.
pub fn argv(c: &Container, image: &ImageConfig, env: &BTreeMap<String, String>) -> Vec<String> {
    let expand_all = |v: &Vec<String>| v.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => {
            let mut out = expand_all(cmd);
            out.extend(args.as_ref().map(expand_all).unwrap_or_default());
            out
        }
        (_, Some(args)) if !args.is_empty() => {
            let mut out = image.entrypoint.clone();
            out.extend(expand_all(args));
            out
        }
        _ => {
            let mut out = image.entrypoint.clone();
            out.extend(image.cmd.iter().cloned());
            out
        }
    }
}

fn user(input: &ContainerInput) -> Result<User, SpecError> {
    let spec: &PodSpec = input.pod.spec();
    let csc = input.container.security_context.as_ref();
    let psc = spec.security_context.as_ref();
    let mut uid = csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user));
    let mut gid = csc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group));
    if uid.is_none() && !input.image.user.is_empty() {
        let (u, g) = match input.image.user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (input.image.user.as_str(), None),
        };
        let parse = |s: &str| {
            if s == "root" {
                Some(0)
            } else {
                s.parse::<i64>().ok()
            }
        };
        uid = Some(parse(u).ok_or_else(|| SpecError::Field {
            field: "image config User".into(),
            message: format!(
                "{:?} is not numeric; user names inside images are not resolved: set securityContext.runAsUser",
                input.image.user
            ),
        })?);
        if gid.is_none() {
            gid = g.and_then(parse);
        }
    }
    // IDs are 32-bit in the kernel: one outside that range is refused
    // rather than truncated into somebody else's ID.
    let id = |field: &str, v: i64| {
        u32::try_from(v).map_err(|_| SpecError::Field {
            field: field.into(),
            message: format!("{v} is not a valid user or group ID"),
        })
    };
    let mut user = User::default();
    user.set_uid(id("runAsUser", uid.unwrap_or(0))?);
    user.set_gid(id("runAsGroup", gid.unwrap_or(0))?);
    if let Some(groups) = psc.and_then(|s| s.supplemental_groups.as_ref()) {
        let gids = groups
            .iter()
            .map(|g| id("securityContext.supplementalGroups", *g))
            .collect::<Result<_, _>>()?;
        user.set_additional_gids(Some(gids));
    }
    Ok(user)
}

fn bind(destination: &str, source: &Path, readonly: bool) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source.to_path_buf()));
    let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
    opts.push(if readonly { "ro" } else { "rw" }.to_string());
    m.set_options(Some(opts));
    m
}

pub fn build(input: &ContainerInput) -> Result<Spec, SpecError> {
    let c = input.container;
    let field_err = |field: &str, message: String| SpecError::Field {
        field: field.to_string(),
        message,
    };
    let env = environment(input);
    let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
    let args = argv(c, input.image, &env_map);
    if args.is_empty() {
        return Err(field_err(
            "command",
            "neither the container nor its image says what to run".into(),
        ));
    }

    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()));
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(input.image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(user(input)?);
    // Kubernetes' default is allowPrivilegeEscalation: true.
    let sc = c.security_context.as_ref();
    process.set_no_new_privileges(Some(
        sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
    ));
    // Inherit the shim's limits (containerd's LimitNOFILE), as CRI does.
    process.set_rlimits(None);
    process.set_oom_score_adj(Some(input.oom_score_adj));
    if let Some(caps) = sc.and_then(|s| s.capabilities.as_ref()) {
        let mut set = process.capabilities().clone().unwrap_or_default();
        let mut bounding = set.bounding().clone().unwrap_or_default();
        for name in caps.add.iter().flatten() {
            let cap = Capability::from_str(&format!("CAP_{}", name.trim_start_matches("CAP_")))
                .map_err(|_| {
                    field_err(
                        "securityContext.capabilities.add",
                        format!("unknown capability {name:?}"),
                    )
                })?;
            bounding.insert(cap);
        }
        for name in caps.drop.iter().flatten() {
            if name == "ALL" {
                bounding.clear();
                continue;
            }
            let cap = Capability::from_str(&format!("CAP_{}", name.trim_start_matches("CAP_")))
                .map_err(|_| {
                    field_err(
                        "securityContext.capabilities.drop",
                        format!("unknown capability {name:?}"),
                    )
                })?;
            bounding.remove(&cap);
        }
        set.set_bounding(Some(bounding.clone()));
        set.set_effective(Some(bounding.clone()));
        set.set_permitted(Some(bounding));
        process.set_capabilities(Some(set));
    }
    spec.set_process(Some(process));

    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(
        sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
    ));
    spec.set_root(Some(root));
    let ctx = input.ctx;
    spec.set_hostname(ctx.uts.as_ref().map(|_| ctx.hostname.clone()));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if let Some(shm) = &ctx.shm {
        mounts.retain(|m| m.destination() != &PathBuf::from("/dev/shm"));
        mounts.push(bind("/dev/shm", shm, false));
    }
    mounts.push(bind("/etc/hosts", &ctx.hosts_file, false));
    mounts.push(bind("/etc/hostname", &ctx.hostname_file, false));
    mounts.push(bind("/etc/resolv.conf", &ctx.resolv_conf, false));
    for m in &input.mounts {
        mounts.push(bind(&m.destination, &m.source, m.read_only));
    }
    if let Some(log) = &input.termination_log {
        let dest = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        mounts.push(bind(&dest, log, false));
    }
    spec.set_mounts(Some(mounts));

    let spec_pod = input.pod.spec();
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = vec![LinuxNamespace::default()];
    namespaces[0].set_typ(LinuxNamespaceType::Mount);
    if spec_pod.host_pid != Some(true) {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Pid);
        namespaces.push(ns);
    }
    for (typ, path) in [
        (LinuxNamespaceType::Network, &ctx.net),
        (LinuxNamespaceType::Uts, &ctx.uts),
        (LinuxNamespaceType::Ipc, &ctx.ipc),
    ] {
        if let Some(p) = path {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            ns.set_path(Some(p.clone()));
            namespaces.push(ns);
        }
    }
    if ctx.cgroupns {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Cgroup);
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)));
    linux.set_resources(Some(resources(&input.limits, input.cgroup_v2)));
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_file;
    use std::path::Path;

    fn pod(extra: &str) -> StaticPod {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n{extra}"
        );
        let p = parse_file(Path::new("/m/w.yaml"), &text, "n1");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.pods.into_iter().next().unwrap()
    }

    fn ctx() -> PodContext {
        PodContext {
            net: Some("/r/ns/net".into()),
            uts: Some("/r/ns/uts".into()),
            ipc: Some("/r/ns/ipc".into()),
            hosts_file: "/r/hosts".into(),
            hostname_file: "/r/hostname".into(),
            resolv_conf: "/r/resolv.conf".into(),
            shm: Some("/r/shm".into()),
            hostname: "web-n1".into(),
            cgroupns: false,
            pod_ips: vec!["10.1.0.7".parse().unwrap()],
            host_ip: "192.168.1.2".parse().unwrap(),
            warnings: vec![],
        }
    }

    fn build_for(p: &StaticPod, image: &ImageConfig) -> Result<Spec, SpecError> {
        let ctx = ctx();
        build(&ContainerInput {
            pod: p,
            container: &p.spec().containers[0],
            image,
            ctx: &ctx,
            cgroups_path: "/kl/podX/c1".into(),
            limits: qos::container_limits(&p.spec().containers[0], Default::default()),
            cgroup_v2: None,
            oom_score_adj: 1000,
            mounts: vec![],
            env: None,
            termination_log: None,
        })
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: "/srv".into(),
            user: "".into(),
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image();
        let args = |extra: &str| {
            build_for(&pod(extra), &img)
                .unwrap()
                .process()
                .as_ref()
                .unwrap()
                .args()
                .clone()
                .unwrap()
        };
        assert_eq!(args(""), ["/entry", "serve"]);
        assert_eq!(args("    args: [run]\n"), ["/entry", "run"]);
        assert_eq!(args("    command: [sh]\n"), ["sh"]);
        assert_eq!(
            args("    command: [sh]\n    args: [-c, 'echo $(MODE) $$(MODE) $(NOPE)']\n"),
            ["sh", "-c", "echo image $(MODE) $(NOPE)"]
        );
        let none = ImageConfig::default();
        assert!(build_for(&pod(""), &none).is_err());
    }

    #[test]
    fn env_overrides_image_and_expands() {
        let p = pod(
            "    env:\n    - {name: MODE, value: pod}\n    - {name: URL, value: 'http://$(MODE)'}\n    - name: ME\n      valueFrom: {fieldRef: {fieldPath: metadata.name}}\n",
        );
        let s = build_for(&p, &image()).unwrap();
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "MODE=pod",
                "HOSTNAME=web-n1",
                "URL=http://pod",
                "ME=web-n1"
            ]
        );
        // The downward API gives the addresses of the pod's context.
        let p = pod(
            "    env:\n    - name: IP\n      valueFrom: {fieldRef: {fieldPath: status.podIP}}\n    - name: HOST\n      valueFrom: {fieldRef: {fieldPath: status.hostIP}}\n",
        );
        let s = build_for(&p, &image()).unwrap();
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"IP=10.1.0.7".to_string()), "{env:?}");
        assert!(env.contains(&"HOST=192.168.1.2".to_string()), "{env:?}");
    }

    #[test]
    fn namespaces_join_the_pod_and_host_network_drops_them() {
        let s = build_for(&pod(""), &image()).unwrap();
        let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/r/ns/net")));
        assert_eq!(s.hostname().as_deref(), Some("web-n1"));
        let mut c = ctx();
        c.net = None;
        c.uts = None;
        let p = pod("");
        let s = build(&ContainerInput {
            pod: &p,
            container: &p.spec().containers[0],
            image: &image(),
            ctx: &c,
            cgroups_path: "/x".into(),
            limits: CgroupLimits::default(),
            cgroup_v2: None,
            oom_score_adj: 0,
            mounts: vec![],
            env: None,
            termination_log: None,
        })
        .unwrap();
        let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(
            ns.iter()
                .all(|n| n.typ() != LinuxNamespaceType::Network
                    && n.typ() != LinuxNamespaceType::Uts)
        );
        assert_eq!(s.hostname(), &None);
    }

    #[test]
    fn resources_translate() {
        let p = pod("    resources:\n      limits: {cpu: 250m, memory: 64Mi}\n");
        let limits = qos::container_limits(&p.spec().containers[0], Default::default());
        let r = resources(&limits, None);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(256));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(25_000));
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        let r = resources(&limits, Some(WeightFormula::Quadratic));
        assert_eq!(r.cpu().as_ref().unwrap().shares(), None);
        assert_eq!(
            r.unified().as_ref().unwrap()["cpu.weight"],
            qos::cpu_weight(256, WeightFormula::Quadratic).to_string()
        );
        let s = build_for(&p, &image()).unwrap();
        assert_eq!(s.process().as_ref().unwrap().oom_score_adj(), Some(1000));
    }

    #[test]
    fn users() {
        let mut img = image();
        img.user = "1000:2000".into();
        let s = build_for(&pod(""), &img).unwrap();
        let u = s.process().as_ref().unwrap().user().clone();
        assert_eq!((u.uid(), u.gid()), (1000, 2000));
        let s = build_for(&pod("    securityContext: {runAsUser: 7}\n"), &img).unwrap();
        assert_eq!(s.process().as_ref().unwrap().user().uid(), 7);
        img.user = "nobody".into();
        let e = build_for(&pod(""), &img).unwrap_err();
        assert!(e.to_string().contains("runAsUser"), "{e}");
        // IDs beyond 32 bits are refused, not truncated to another user.
        img.user = "4294967296".into();
        let e = build_for(&pod(""), &img).unwrap_err();
        assert!(e.to_string().contains("4294967296"), "{e}");
        // A negative runAsGroup never gets here: validation refuses it.
    }

    #[test]
    fn oom_group_only_on_cgroup_v2() {
        let p = pod("    resources:\n      limits: {memory: 64Mi}\n");
        let c = &p.spec().containers[0];
        let limits = qos::container_limits(c, Default::default());
        let v2 = resources(&limits, Some(WeightFormula::Linear));
        assert_eq!(v2.unified().as_ref().unwrap()["memory.oom.group"], "1");
        // runc refuses unified keys on a v1 host.
        let v1 = resources(&limits, None);
        assert!(
            v1.unified()
                .as_ref()
                .is_none_or(|u| !u.contains_key("memory.oom.group")),
            "{v1:?}"
        );
        let single = qos::Options {
            single_process_oom_kill: true,
            ..Default::default()
        };
        let r = resources(
            &qos::container_limits(c, single),
            Some(WeightFormula::Linear),
        );
        assert!(
            r.unified()
                .as_ref()
                .is_none_or(|u| !u.contains_key("memory.oom.group"))
        );
    }
}
