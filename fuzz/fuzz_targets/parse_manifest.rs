//! A manifest file's bytes through what the directory watcher does with
//! them: decoding, YAML, typed parsing and validation. Any panic is a bug:
//! bad input must become an error naming the file and field.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("/etc/kubernetes/manifests/fuzz.yaml");
    let parsed = kubelet_lite::manifest::parse_bytes(file, data, "node1");
    for e in &parsed.errors {
        let _ = e.to_string();
    }
    for pod in &parsed.pods {
        let _ = pod.key();
    }
});
