//! The agent's memory through a churn of N two-container pods (the scale
//! bench's pods): RSS and its parts (`/proc/<pid>/smaps_rollup` and the
//! mappings of `smaps`) with no pods, at N pods, after deleting them all at
//! once, and after further create/delete cycles.
//!
//! `cargo bench --bench memory` (as root); `MEMORY_PODS` (default 110),
//! `MEMORY_CYCLES` (default 3). For a heap profile of one moment, run the
//! agent under a profiler (`KL_AGENT_WRAPPER="heaptrack -o /tmp/agent"`)
//! and set `MEMORY_STOP_AT` to `empty`, `full`, `deleted` or `cycleN`: the
//! agent is then killed at that point with SIGKILL (its pods are left to
//! the harness's cleanup), so that what the profile shows as leaked is
//! what was allocated at that moment.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use common::Env;
use support::{env_number, mib, remove_all, running_count, write_all};

/// The agent process: the harness's child, or, under a wrapper, the
/// descendant running an agent binary (the wrapper may run another build).
fn agent_process(env: &Env) -> u32 {
    let top = env.agent_pid().unwrap();
    let mut todo = vec![top];
    while let Some(pid) = todo.pop() {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.file_name().is_some_and(|n| n == "kubelet-lite") {
            return pid;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        todo.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    panic!("no agent process below {top}");
}

/// A `smaps_rollup` field in KiB.
fn rollup(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The RSS of a mapping's part.
#[derive(Default)]
struct Parts {
    /// The agent's own binary: code (r-x), read-only data (r--, also the
    /// relocated data made read-only after start), writable data (rw-).
    code: u64,
    rodata: u64,
    data: u64,
    /// The main malloc arena.
    heap: u64,
    /// Other anonymous mappings: other malloc arenas, thread stacks.
    anon: u64,
}

/// The agent's memory by mapping, in KiB.
fn parts(pid: u32) -> Parts {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let bin = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let bin = bin.to_string_lossy();
    let mut p = Parts::default();
    let (mut name, mut perms) = (String::new(), String::new());
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            name = line.split_whitespace().nth(5).unwrap_or("").to_string();
            perms = line.split_whitespace().nth(1).unwrap_or("").to_string();
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
            let slot = if name == bin.as_ref() {
                match perms.as_str() {
                    "r-xp" => &mut p.code,
                    "r--p" => &mut p.rodata,
                    _ => &mut p.data,
                }
            } else if name == "[heap]" {
                &mut p.heap
            } else if name.is_empty() {
                &mut p.anon
            } else {
                continue;
            };
            *slot += kib;
        }
    }
    p
}

fn report(env: &Env, what: &str) {
    let pid = agent_process(env);
    let rss = rollup(pid, "Rss:");
    let file = rollup(pid, "Rss:") - rollup(pid, "Anonymous:");
    let p = parts(pid);
    let m = |kib: u64| mib(kib * 1024);
    println!(
        "| {what} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} | {:.1} |",
        m(rss),
        m(file),
        m(p.code),
        m(p.rodata),
        m(p.data),
        m(p.heap),
        m(p.anon)
    );
}

/// Kills the agent (not its wrapper) if `at` is where the profile is wanted.
fn stop_here(env: &mut Env, at: &str) -> bool {
    if std::env::var("MEMORY_STOP_AT").ok().as_deref() != Some(at) {
        return false;
    }
    let pid = agent_process(env);
    // SAFETY: kill(2) of the agent process this harness started.
    unsafe { libc::kill(pid.cast_signed(), libc::SIGKILL) };
    // The wrapper finishes writing its profile.
    std::thread::sleep(Duration::from_secs(10));
    env.stop_agent(libc::SIGTERM);
    true
}

fn cycle(env: &Env, n: usize, tag: &str) {
    write_all(env, n, tag);
    env.wait_for("all running", Duration::from_secs(600), || {
        (running_count(env) == n).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
}

fn delete(env: &Env, n: usize, tag: &str) {
    remove_all(env, n, tag);
    env.wait_for("all gone", Duration::from_secs(600), || {
        env.pods().is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
}

fn main() {
    let n = env_number("MEMORY_PODS", 110);
    let cycles = env_number("MEMORY_CYCLES", 3);
    let mut env = Env::new("memory");
    env.write_config("fileCheckFrequency: 20s\n");
    env.start_agent();
    println!("agent memory, {n} two-container pods");
    println!(
        "| moment | RSS, MiB | file-backed | binary: code / read-only / data | [heap] | other anonymous |"
    );
    println!("|---|---|---|---|---|---|");
    std::thread::sleep(Duration::from_secs(2));
    report(&env, "started");
    cycle(&env, 1, "warm");
    delete(&env, 1, "warm");
    report(&env, "no pods, after a warm-up pod");
    if stop_here(&mut env, "empty") {
        return;
    }
    cycle(&env, n, "s");
    report(&env, &format!("{n} pods"));
    if stop_here(&mut env, "full") {
        return;
    }
    delete(&env, n, "s");
    report(&env, "all deleted at once");
    if stop_here(&mut env, "deleted") {
        return;
    }
    for c in 1..=cycles {
        let tag = format!("c{c}x");
        cycle(&env, n, &tag);
        report(&env, &format!("{n} pods, cycle {c}"));
        delete(&env, n, &tag);
        report(&env, &format!("deleted, cycle {c}"));
        if stop_here(&mut env, &format!("cycle{c}")) {
            return;
        }
    }
}
