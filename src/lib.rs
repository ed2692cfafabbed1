//! kubelet-lite: the kubelet's static pods on containerd, without an API
//! server.
//!
//! The agent is a pipeline, one module per stage: manifest files
//! ([`source`], [`manifest`]) -> desired pods -> one worker per pod
//! ([`worker`], deciding with [`pod`]) -> side effects through containerd
//! ([`runtime`], with specs from [`oci`]), namespaces ([`sandbox`]) and
//! their CNI networks ([`network`]), cgroups ([`cgroup`]) and logs
//! ([`logs`]) -> status served over HTTP ([`http`]). Probes ([`probe`]) run
//! beside the workers and report to them.

pub mod cgroup;
pub mod check;
pub mod cli;
pub mod config;
pub mod events;
pub mod hostfs;
pub mod http;
pub mod logs;
pub mod malloc;
pub mod manifest;
pub mod metrics;
pub mod network;
pub mod node;
pub mod oci;
pub mod pod;
pub mod probe;
pub mod runtime;
pub mod sandbox;
pub mod source;
pub mod stats;
#[cfg(test)]
pub(crate) mod test_support;
pub mod volume;
pub mod worker;
