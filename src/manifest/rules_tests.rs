//! One case per enforced rule of docs/validation.md: a valid pod, one
//! change, the field path and message expected.

use std::path::Path;

use serde_json::{Value, json};

use super::parse_file;

/// The changes (JSON pointer, value), the field and a part of the message.
type Case = (Vec<(&'static str, Value)>, &'static str, &'static str);

fn base() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "a",
            "image": "busybox",
            "ports": [{"name": "http", "containerPort": 80}]
        }]}
    })
}

/// Sets `value` at a JSON pointer, creating objects on the way
/// (`~1` is '/').
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut cur = doc;
    for p in &parts[..parts.len() - 1] {
        cur = match cur {
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            v => v
                .as_object_mut()
                .unwrap()
                .entry(p.clone())
                .or_insert_with(|| json!({})),
        };
    }
    let last = parts.last().unwrap();
    match cur {
        Value::Array(a) => {
            let i = last.parse::<usize>().unwrap();
            if i == a.len() {
                a.push(value);
            } else {
                a[i] = value;
            }
        }
        v => {
            v.as_object_mut().unwrap().insert(last.clone(), value);
        }
    }
}

fn errors_of(changes: &[(&str, Value)]) -> Vec<super::ManifestError> {
    let mut doc = base();
    for (p, v) in changes {
        set(&mut doc, p, v.clone());
    }
    let text = serde_json::to_string(&doc).unwrap();
    let parsed = parse_file(Path::new("/m/t.yaml"), &text, "node1");
    if parsed.errors.is_empty() {
        assert_eq!(parsed.pods.len(), 1);
    }
    parsed.errors
}

#[test]
fn the_base_pod_and_the_allowed_variants_are_valid() {
    for changes in [
        vec![],
        vec![("/metadata/labels/example.com~1Tier", json!(""))],
        vec![("/metadata/annotations", json!({"Example.com/Note": "x"}))],
        // A sidecar (restartable init container) may have probes.
        vec![(
            "/spec/initContainers",
            json!([{"name": "side", "image": "busybox", "restartPolicy": "Always",
                    "ports": [{"name": "m", "containerPort": 9}],
                    "readinessProbe": {"tcpSocket": {"port": "m"}}}]),
        )],
        vec![(
            "/spec/containers/0/livenessProbe",
            json!({"httpGet": {"port": "http", "scheme": "HTTPS"}, "successThreshold": 1,
                   "periodSeconds": 0, "terminationGracePeriodSeconds": 5}),
        )],
        vec![(
            "/spec/containers/0/readinessProbe",
            json!({"grpc": {"port": 9090}, "successThreshold": 3}),
        )],
        vec![(
            "/spec/containers/0/resources",
            json!({"limits": {"example.com/gpu": 2, "hugepages-2Mi": "4Mi", "memory": "1Gi",
                              "ephemeral-storage": "1Gi"},
                   "requests": {"example.com/gpu": 2, "cpu": "100m"}}),
        )],
        vec![("/spec/containers/0/ports/0/hostPort", json!(0))],
        vec![(
            "/spec/containers/0/env",
            json!([{"name": "my.var-1 x", "value": "1"}]),
        )],
        vec![(
            "/spec/volumes",
            json!([{"name": "n", "nfs": {"server": "[fd00::1]", "path": "/e"}},
                   {"name": "m", "nfs": {"server": "NAS.example.com", "path": "/e"}}]),
        )],
        vec![
            ("/spec/dnsPolicy", json!("None")),
            ("/spec/dnsConfig", json!({"nameservers": ["1.1.1.1"]})),
        ],
        vec![("/spec/activeDeadlineSeconds", json!(1))],
        vec![(
            "/spec/containers/0/lifecycle",
            json!({"preStop": {"sleep": {"seconds": 30}}}),
        )],
    ] {
        let errors = errors_of(&changes);
        assert!(errors.is_empty(), "{changes:?}: {errors:?}");
    }
}

#[test]
fn each_rule_names_the_field() {
    let long = "x".repeat(64);
    let cases: Vec<Case> = vec![
        // metadata (ValidateObjectMeta)
        (
            vec![("/metadata/name", json!("Web"))],
            "metadata.name",
            "lower case",
        ),
        (
            vec![("/metadata/namespace", json!("Kube_System"))],
            "metadata.namespace",
            "lower case",
        ),
        (
            vec![("/metadata/labels/-x", json!("v"))],
            "metadata.labels",
            "name part must consist",
        ),
        (
            vec![("/metadata/labels/a~1b~1c", json!("v"))],
            "metadata.labels",
            "qualified name",
        ),
        (
            vec![("/metadata/labels/Bad_~1x", json!("v"))],
            "metadata.labels",
            "prefix part",
        ),
        (
            vec![("/metadata/labels/app", json!("-v"))],
            "metadata.labels[app]",
            "a valid label",
        ),
        (
            vec![("/metadata/labels/app", json!(long))],
            "metadata.labels[app]",
            "no more than 63",
        ),
        (
            vec![("/metadata/annotations", json!({"bad key": "v"}))],
            "metadata.annotations",
            "name part",
        ),
        (
            vec![(
                "/metadata/annotations",
                json!({"a": "x".repeat(256 * 1024)}),
            )],
            "metadata.annotations",
            "Too long: may not be more than 262144 bytes",
        ),
        // pod spec (ValidatePodSpec)
        (
            vec![("/spec/containers", json!([]))],
            "spec.containers",
            "Required value",
        ),
        (
            vec![("/spec/restartPolicy", json!("Sometimes"))],
            "spec.restartPolicy",
            "Unsupported value: \"Sometimes\"",
        ),
        (
            vec![("/spec/dnsPolicy", json!("Bogus"))],
            "spec.dnsPolicy",
            "Unsupported value: \"Bogus\"",
        ),
        (
            vec![("/spec/dnsPolicy", json!("None"))],
            "spec.dnsConfig.nameservers",
            "Required value",
        ),
        (
            vec![("/spec/terminationGracePeriodSeconds", json!(-1))],
            "spec.terminationGracePeriodSeconds",
            ">= 0",
        ),
        (
            vec![("/spec/activeDeadlineSeconds", json!(0))],
            "spec.activeDeadlineSeconds",
            "between 1 and 2147483647",
        ),
        (
            vec![("/spec/hostname", json!("Web"))],
            "spec.hostname",
            "lower case",
        ),
        (
            vec![("/spec/subdomain", json!("a.b"))],
            "spec.subdomain",
            "lower case",
        ),
        (
            vec![("/spec/nodeName", json!("Node_1"))],
            "spec.nodeName",
            "lower case",
        ),
        (
            vec![("/spec/securityContext", json!({"runAsUser": -1}))],
            "spec.securityContext.runAsUser",
            "between 0 and 2147483647",
        ),
        (
            vec![(
                "/spec/securityContext",
                json!({"runAsGroup": 2147483648i64}),
            )],
            "spec.securityContext.runAsGroup",
            "between 0 and 2147483647",
        ),
        (
            vec![("/spec/securityContext", json!({"supplementalGroups": [-1]}))],
            "spec.securityContext.supplementalGroups[0]",
            "between 0",
        ),
        // volumes (ValidateVolumes, validateVolumeSource)
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "emptyDir": {}}, {"name": "d", "emptyDir": {}}]),
            )],
            "spec.volumes[1].name",
            "Duplicate value: \"d\"",
        ),
        (
            vec![("/spec/volumes", json!([{"name": "Data", "emptyDir": {}}]))],
            "spec.volumes[0].name",
            "lower case",
        ),
        (
            vec![("/spec/volumes", json!([{"name": "d"}]))],
            "spec.volumes[0]",
            "exactly one volume source",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "emptyDir": {}, "hostPath": {"path": "/x"}}]),
            )],
            "spec.volumes[0]",
            "exactly one volume source",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "gitRepo": {"repository": "x"}}]),
            )],
            "spec.volumes[0].gitRepo",
            "not supported",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "nfs": {"server": "-o", "path": "/e"}}]),
            )],
            "spec.volumes[0].nfs.server",
            "host name",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "nfs": {"server": "fe80::1", "path": "/e"}}]),
            )],
            "spec.volumes[0].nfs.server",
            "brackets",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "nfs": {"server": "a b", "path": "/e"}}]),
            )],
            "spec.volumes[0].nfs.server",
            "host name",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "nfs": {"server": "nas", "path": "e"}}]),
            )],
            "spec.volumes[0].nfs.path",
            "absolute",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "hostPath": {"path": "/a/../b"}}]),
            )],
            "spec.volumes[0].hostPath.path",
            "'..'",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "hostPath": {"path": "/a", "type": "Dir"}}]),
            )],
            "spec.volumes[0].hostPath.type",
            "Unsupported value",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "emptyDir": {"medium": "Disk"}}]),
            )],
            "spec.volumes[0].emptyDir.medium",
            "Unsupported value",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "emptyDir": {"sizeLimit": "-1Mi"}}]),
            )],
            "spec.volumes[0].emptyDir.sizeLimit",
            "negative",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "configMap": {"name": ""}}]),
            )],
            "spec.volumes[0].configMap.name",
            "Required value",
        ),
        (
            vec![("/spec/volumes", json!([{"name": "d", "secret": {}}]))],
            "spec.volumes[0].secret.secretName",
            "Required value",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "secret": {"secretName": "s", "defaultMode": 512}}]),
            )],
            "spec.volumes[0].secret.defaultMode",
            "file mode",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "configMap": {"name": "c", "items": [{"key": "k", "path": "../x"}]}}]),
            )],
            "spec.volumes[0].items[0].path",
            "relative path",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "configMap": {"name": "c", "items": [{"key": "", "path": "x"}]}}]),
            )],
            "spec.volumes[0].items[0].key",
            "Required value",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "configMap": {"name": "c", "items": [{"key": "k", "path": "x", "mode": 1000}]}}]),
            )],
            "spec.volumes[0].items[0].mode",
            "file mode",
        ),
        (
            vec![(
                "/spec/volumes",
                json!([{"name": "d", "persistentVolumeClaim": {"claimName": "Bad_Name"}}]),
            )],
            "spec.volumes[0].persistentVolumeClaim.claimName",
            "not a valid name",
        ),
        // containers (validateContainerCommon and the lists)
        (
            vec![("/spec/containers/0/name", json!("Web"))],
            "spec.containers[0].name",
            "lower case",
        ),
        (
            vec![(
                "/spec/containers/1",
                json!({"name": "a", "image": "busybox"}),
            )],
            "spec.containers[1].name",
            "Duplicate value: \"a\"",
        ),
        (
            vec![(
                "/spec/initContainers",
                json!([{"name": "a", "image": "busybox"}]),
            )],
            "spec.initContainers[0].name",
            "Duplicate value: \"a\"",
        ),
        (
            vec![("/spec/containers/0/image", json!(""))],
            "spec.containers[0].image",
            "Required value",
        ),
        (
            vec![("/spec/containers/0/image", json!(" busybox"))],
            "spec.containers[0].image",
            "spaces",
        ),
        (
            vec![("/spec/containers/0/imagePullPolicy", json!("Sometimes"))],
            "spec.containers[0].imagePullPolicy",
            "Unsupported value: \"Sometimes\"",
        ),
        (
            vec![(
                "/spec/containers/0/terminationMessagePolicy",
                json!("Bogus"),
            )],
            "spec.containers[0].terminationMessagePolicy",
            "Unsupported value: \"Bogus\"",
        ),
        (
            vec![("/spec/containers/0/restartPolicy", json!("Always"))],
            "spec.containers[0].restartPolicy",
            "Forbidden: may not be set for non-init containers",
        ),
        (
            vec![(
                "/spec/initContainers",
                json!([{"name": "i", "image": "busybox", "restartPolicy": "Never"}]),
            )],
            "spec.initContainers[0].restartPolicy",
            "Unsupported value: \"Never\"",
        ),
        (
            vec![(
                "/spec/initContainers",
                json!([{"name": "i", "image": "busybox", "livenessProbe": {"exec": {"command": ["true"]}}}]),
            )],
            "spec.initContainers[0].livenessProbe",
            "Forbidden: may not be set for init containers",
        ),
        (
            vec![(
                "/spec/initContainers",
                json!([{"name": "i", "image": "busybox", "lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}]),
            )],
            "spec.initContainers[0].lifecycle",
            "Forbidden",
        ),
        // ports (validateContainerPorts, validatePodHostNetworkDeps, host port conflicts)
        (
            vec![("/spec/containers/0/ports/0/containerPort", json!(0))],
            "spec.containers[0].ports[0].containerPort",
            "Required value",
        ),
        (
            vec![("/spec/containers/0/ports/0/containerPort", json!(70000))],
            "spec.containers[0].ports[0].containerPort",
            "between 1 and 65535",
        ),
        (
            vec![("/spec/containers/0/ports/0/hostPort", json!(70000))],
            "spec.containers[0].ports[0].hostPort",
            "between 1 and 65535",
        ),
        (
            vec![
                ("/spec/containers/0/ports/0/hostPort", json!(8080)),
                ("/spec/hostNetwork", json!(true)),
            ],
            "spec.containers[0].ports[0].hostPort",
            "must match `containerPort`",
        ),
        (
            vec![("/spec/containers/0/ports/0/protocol", json!("ICMP"))],
            "spec.containers[0].ports[0].protocol",
            "Unsupported value: \"ICMP\"",
        ),
        (
            vec![("/spec/containers/0/ports/0/name", json!("HTTP"))],
            "spec.containers[0].ports[0].name",
            "alpha-numeric",
        ),
        (
            vec![("/spec/containers/0/ports/0/name", json!("8080"))],
            "spec.containers[0].ports[0].name",
            "at least one letter",
        ),
        (
            vec![("/spec/containers/0/ports/0/name", json!("a--b"))],
            "spec.containers[0].ports[0].name",
            "consecutive hyphens",
        ),
        (
            vec![(
                "/spec/containers/0/ports/1",
                json!({"name": "http", "containerPort": 81}),
            )],
            "spec.containers[0].ports[1].name",
            "Duplicate value: \"http\"",
        ),
        (
            vec![
                ("/spec/containers/0/ports/0/hostPort", json!(8080)),
                (
                    "/spec/containers/1",
                    json!({"name": "b", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}]}),
                ),
            ],
            "spec.containers[1].ports[0].hostPort",
            "Duplicate value: \"TCP//8080\"",
        ),
        // env (ValidateEnv, ValidateEnvFrom)
        (
            vec![("/spec/containers/0/env", json!([{"name": "A=B"}]))],
            "spec.containers[0].env[0].name",
            "printable ASCII characters other than '='",
        ),
        (
            vec![("/spec/containers/0/env", json!([{"name": "tab\there"}]))],
            "spec.containers[0].env[0].name",
            "printable",
        ),
        (
            vec![("/spec/containers/0/env", json!([{"name": ""}]))],
            "spec.containers[0].env[0].name",
            "Required value",
        ),
        (
            vec![(
                "/spec/containers/0/env",
                json!([{"name": "A", "valueFrom": {}}]),
            )],
            "spec.containers[0].env[0].valueFrom",
            "must specify one of",
        ),
        (
            vec![(
                "/spec/containers/0/env",
                json!([{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
            )],
            "spec.containers[0].env[0].valueFrom",
            "may not be specified when `value` is not empty",
        ),
        (
            vec![(
                "/spec/containers/0/env",
                json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]),
            )],
            "spec.containers[0].env[0].valueFrom",
            "more than one field",
        ),
        (
            vec![(
                "/spec/containers/0/env",
                json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeNme"}}}]),
            )],
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            "Unsupported value",
        ),
        (
            vec![(
                "/spec/containers/0/env",
                json!([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": ""}}}]),
            )],
            "spec.containers[0].env[0].valueFrom.configMapKeyRef.key",
            "Required value",
        ),
        (
            vec![(
                "/spec/containers/0/env",
                json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "S", "key": "k"}}}]),
            )],
            "spec.containers[0].env[0].valueFrom.secretKeyRef.name",
            "not a valid name",
        ),
        (
            vec![(
                "/spec/containers/0/envFrom",
                json!([{"prefix": "A=", "configMapRef": {"name": "c"}}]),
            )],
            "spec.containers[0].envFrom[0].prefix",
            "other than '='",
        ),
        (
            vec![("/spec/containers/0/envFrom", json!([{}]))],
            "spec.containers[0].envFrom[0]",
            "must specify one of",
        ),
        // volume mounts (ValidateVolumeMounts)
        (
            vec![(
                "/spec/containers/0/volumeMounts",
                json!([{"name": "nope", "mountPath": "/d"}]),
            )],
            "spec.containers[0].volumeMounts[0].name",
            "Not found: \"nope\"",
        ),
        (
            vec![
                (
                    "/spec/volumes",
                    json!([{"name": "d", "emptyDir": {}}, {"name": "e", "emptyDir": {}}]),
                ),
                (
                    "/spec/containers/0/volumeMounts",
                    json!([{"name": "d", "mountPath": "/d"}, {"name": "e", "mountPath": "/d"}]),
                ),
            ],
            "spec.containers[0].volumeMounts[1].mountPath",
            "must be unique",
        ),
        (
            vec![
                ("/spec/volumes", json!([{"name": "d", "emptyDir": {}}])),
                (
                    "/spec/containers/0/volumeMounts",
                    json!([{"name": "d", "mountPath": "d"}]),
                ),
            ],
            "spec.containers[0].volumeMounts[0].mountPath",
            "absolute path",
        ),
        (
            vec![
                ("/spec/volumes", json!([{"name": "d", "emptyDir": {}}])),
                (
                    "/spec/containers/0/volumeMounts",
                    json!([{"name": "d", "mountPath": "/d", "subPath": "../x"}]),
                ),
            ],
            "spec.containers[0].volumeMounts[0].subPath",
            "without '..'",
        ),
        // resources (ValidateContainerResourceRequirements)
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"limits": {"bananas": 1}}),
            )],
            "spec.containers[0].resources.limits.bananas",
            "must be a standard resource for containers",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"limits": {"example.com/a/b": 1}}),
            )],
            "spec.containers[0].resources.limits.example.com/a/b",
            "qualified name",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"limits": {"example.com/gpu": "1.5"}}),
            )],
            "spec.containers[0].resources.limits.example.com/gpu",
            "must be an integer",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"requests": {"example.com/gpu": 1}}),
            )],
            "spec.containers[0].resources.limits",
            "Limit must be set for non overcommitable resources",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"requests": {"example.com/gpu": 1}, "limits": {"example.com/gpu": 2}}),
            )],
            "spec.containers[0].resources.requests.example.com/gpu",
            "must be equal to example.com/gpu limit of 2",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"requests": {"cpu": 2}, "limits": {"cpu": 1}}),
            )],
            "spec.containers[0].resources.requests.cpu",
            "must be less than or equal to cpu limit of 1",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"limits": {"memory": "-1Mi"}}),
            )],
            "spec.containers[0].resources.limits.memory",
            "negative",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"limits": {"memory": "1MB"}}),
            )],
            "spec.containers[0].resources.limits.memory",
            "not a valid quantity",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"limits": {"hugepages-2Mi": "3Mi", "memory": "1Gi"}}),
            )],
            "spec.containers[0].resources.limits.hugepages-2Mi",
            "not positive integer multiple",
        ),
        (
            vec![(
                "/spec/containers/0/resources",
                json!({"limits": {"hugepages-2Mi": "2Mi"}}),
            )],
            "spec.containers[0].resources",
            "HugePages require cpu or memory",
        ),
        // probes (validateProbe, validateHandler)
        (
            vec![("/spec/containers/0/livenessProbe", json!({}))],
            "spec.containers[0].livenessProbe",
            "must specify a handler type",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"exec": {"command": ["true"]}, "httpGet": {"port": 80}}),
            )],
            "spec.containers[0].livenessProbe.httpGet",
            "more than 1 handler type",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"exec": {"command": []}}),
            )],
            "spec.containers[0].livenessProbe.exec.command",
            "Required value",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"httpGet": {"port": 0}}),
            )],
            "spec.containers[0].livenessProbe.httpGet.port",
            "between 1 and 65535",
        ),
        (
            vec![(
                "/spec/containers/0/readinessProbe",
                json!({"httpGet": {"port": 70000}}),
            )],
            "spec.containers[0].readinessProbe.httpGet.port",
            "between 1 and 65535",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"httpGet": {"port": "metrics"}}),
            )],
            "spec.containers[0].livenessProbe.httpGet.port",
            "Not found: \"metrics\"",
        ),
        (
            vec![(
                "/spec/containers/0/startupProbe",
                json!({"tcpSocket": {"port": "HTTP"}}),
            )],
            "spec.containers[0].startupProbe.tcpSocket.port",
            "alpha-numeric",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"grpc": {"port": 0}}),
            )],
            "spec.containers[0].livenessProbe.grpc.port",
            "between 1 and 65535",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"httpGet": {"port": 80, "scheme": "FTP"}}),
            )],
            "spec.containers[0].livenessProbe.httpGet.scheme",
            "Unsupported value: \"FTP\"",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "a b", "value": "x"}]}}),
            )],
            "spec.containers[0].livenessProbe.httpGet.httpHeaders",
            "HTTP header",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"exec": {"command": ["true"]}, "periodSeconds": -1}),
            )],
            "spec.containers[0].livenessProbe.periodSeconds",
            "greater than or equal to 0",
        ),
        (
            vec![(
                "/spec/containers/0/readinessProbe",
                json!({"exec": {"command": ["true"]}, "timeoutSeconds": -1}),
            )],
            "spec.containers[0].readinessProbe.timeoutSeconds",
            "greater than or equal to 0",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"exec": {"command": ["true"]}, "failureThreshold": -1}),
            )],
            "spec.containers[0].livenessProbe.failureThreshold",
            "greater than or equal to 0",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"exec": {"command": ["true"]}, "initialDelaySeconds": -5}),
            )],
            "spec.containers[0].livenessProbe.initialDelaySeconds",
            "greater than or equal to 0",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"exec": {"command": ["true"]}, "successThreshold": 2}),
            )],
            "spec.containers[0].livenessProbe.successThreshold",
            "must be 1",
        ),
        (
            vec![(
                "/spec/containers/0/startupProbe",
                json!({"exec": {"command": ["true"]}, "successThreshold": 3}),
            )],
            "spec.containers[0].startupProbe.successThreshold",
            "must be 1",
        ),
        (
            vec![(
                "/spec/containers/0/readinessProbe",
                json!({"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}),
            )],
            "spec.containers[0].readinessProbe.terminationGracePeriodSeconds",
            "must not be set for readinessProbes",
        ),
        (
            vec![(
                "/spec/containers/0/livenessProbe",
                json!({"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 0}),
            )],
            "spec.containers[0].livenessProbe.terminationGracePeriodSeconds",
            "greater than 0",
        ),
        // lifecycle hooks (validateLifecycle)
        (
            vec![("/spec/containers/0/lifecycle", json!({"postStart": {}}))],
            "spec.containers[0].lifecycle.postStart",
            "must specify a handler type",
        ),
        (
            vec![(
                "/spec/containers/0/lifecycle",
                json!({"preStop": {"sleep": {"seconds": 0}}}),
            )],
            "spec.containers[0].lifecycle.preStop.sleep",
            "greater than 0 and less than terminationGracePeriodSeconds (30)",
        ),
        (
            vec![(
                "/spec/containers/0/lifecycle",
                json!({"preStop": {"sleep": {"seconds": 31}}}),
            )],
            "spec.containers[0].lifecycle.preStop.sleep",
            "(30)",
        ),
        // security context (ValidateSecurityContext)
        (
            vec![(
                "/spec/containers/0/securityContext",
                json!({"runAsUser": -1}),
            )],
            "spec.containers[0].securityContext.runAsUser",
            "between 0 and 2147483647",
        ),
        (
            vec![(
                "/spec/containers/0/securityContext",
                json!({"privileged": true, "allowPrivilegeEscalation": false}),
            )],
            "spec.containers[0].securityContext",
            "`privileged` to true",
        ),
        (
            vec![(
                "/spec/containers/0/securityContext",
                json!({"capabilities": {"add": ["SYS_ADMIN"]}, "allowPrivilegeEscalation": false}),
            )],
            "spec.containers[0].securityContext",
            "CAP_SYS_ADMIN",
        ),
    ];
    for (changes, field, message) in cases {
        let errors = errors_of(&changes);
        let found = errors
            .iter()
            .find(|e| e.field.as_deref() == Some(field) && e.message.contains(message));
        let Some(found) = found else {
            panic!("{changes:?}: want {field}: ...{message}... in {errors:#?}");
        };
        // The whole line names the file and the field.
        assert!(
            found
                .to_string()
                .starts_with(&format!("/m/t.yaml: {field}: ")),
            "{found}"
        );
    }
}
