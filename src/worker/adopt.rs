//! Taking over after an agent restart: which of the containers containerd
//! holds for a pod are its current ones, decided from their labels alone
//! (the kubelet rebuilds its view the same way, from the runtime's labels).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::runtime::{ContainerRecord, TaskState, labels};

/// The latest container of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    /// Its attempt number (the restart count).
    pub attempt: u32,
    pub created_at: Option<SystemTime>,
    pub state: FoundState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundState {
    Running {
        pid: u32,
    },
    /// `reaped`: its exit was already recorded in its labels and its task
    /// deleted; otherwise the task still holds the exit.
    Exited {
        code: i32,
        at: SystemTime,
        reaped: bool,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adoption {
    /// By slot: the container to take over.
    pub found: Vec<Option<Found>>,
    /// By slot: attempt number of the next start.
    pub next_attempt: Vec<u32>,
    /// Containers to remove: older attempts, unknown names, never started.
    pub stale: Vec<String>,
    /// An app container exists, so every init container had succeeded.
    pub init_done: bool,
}

/// Decides, for the slots named `names` (`init` tells the init ones), which
/// of `records` (this pod's containers) are taken over.
pub fn decide(names: &[(&str, bool)], records: Vec<ContainerRecord>) -> Adoption {
    let mut out = Adoption {
        found: vec![None; names.len()],
        next_attempt: vec![0; names.len()],
        ..Default::default()
    };
    let attempt = |r: &ContainerRecord| {
        r.labels
            .get(labels::RESTART_COUNT)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let mut records = records;
    records.sort_by_key(|r| std::cmp::Reverse(attempt(r)));
    let mut seen: HashMap<usize, ()> = HashMap::new();
    for r in records {
        let name = r.labels.get(labels::CONTAINER_NAME).map(String::as_str);
        let Some(i) = names.iter().position(|(n, _)| Some(*n) == name) else {
            out.stale.push(r.id);
            continue;
        };
        if seen.insert(i, ()).is_some() {
            out.stale.push(r.id); // an older attempt
            continue;
        }
        let n = attempt(&r);
        let state = match r.task {
            TaskState::Running { pid } => FoundState::Running { pid },
            TaskState::Exited(e) => FoundState::Exited {
                code: e.code.cast_signed(),
                at: e.at,
                reaped: false,
            },
            TaskState::None => match exit_from_labels(&r) {
                Some((code, at)) => FoundState::Exited {
                    code,
                    at,
                    reaped: true,
                },
                // Never started, or its exit was lost: start it afresh.
                None => {
                    out.next_attempt[i] = n;
                    out.stale.push(r.id);
                    continue;
                }
            },
            TaskState::Created => {
                out.next_attempt[i] = n;
                out.stale.push(r.id);
                continue;
            }
        };
        if !names[i].1 {
            out.init_done = true;
        }
        out.next_attempt[i] = n + 1;
        out.found[i] = Some(Found {
            id: r.id,
            attempt: n,
            created_at: r.created_at,
            state,
        });
    }
    out
}

fn exit_from_labels(r: &ContainerRecord) -> Option<(i32, SystemTime)> {
    let code = r.labels.get(labels::EXIT_CODE)?.parse().ok()?;
    let at = r
        .labels
        .get(labels::FINISHED_AT)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .and_then(|t| u64::try_from(t.as_nanosecond()).ok())
        .map_or_else(SystemTime::now, |n| {
            SystemTime::UNIX_EPOCH + Duration::from_nanos(n)
        });
    Some((code, at))
}

/// The labels that record a reaped exit, read back by [`decide`].
pub fn exit_labels(code: i32, at: SystemTime) -> HashMap<String, String> {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let finished = k8s_openapi::jiff::Timestamp::new(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos().cast_signed(),
    )
    .unwrap_or_default();
    HashMap::from([
        (labels::EXIT_CODE.to_string(), code.to_string()),
        (labels::FINISHED_AT.to_string(), finished.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Exit;

    fn record(id: &str, name: &str, attempt: u32, task: TaskState) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            labels: HashMap::from([
                (labels::CONTAINER_NAME.to_string(), name.to_string()),
                (labels::RESTART_COUNT.to_string(), attempt.to_string()),
            ]),
            created_at: None,
            task,
        }
    }

    #[test]
    fn the_latest_attempt_is_taken_and_older_ones_removed() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let a = decide(
            &[("init", true), ("web", false), ("side", false)],
            vec![
                record("w1", "web", 1, TaskState::Exited(Exit { code: 1, at })),
                record("w2", "web", 2, TaskState::Running { pid: 7 }),
                record("x", "gone", 0, TaskState::Running { pid: 8 }),
                record("s0", "side", 0, TaskState::Created),
            ],
        );
        assert_eq!(a.found[0], None);
        assert_eq!(
            a.found[1],
            Some(Found {
                id: "w2".into(),
                attempt: 2,
                created_at: None,
                state: FoundState::Running { pid: 7 },
            })
        );
        assert_eq!(a.found[2], None, "created but never started");
        assert_eq!(a.next_attempt, [0, 3, 0]);
        let mut stale = a.stale.clone();
        stale.sort();
        assert_eq!(stale, ["s0", "w1", "x"]);
        assert!(a.init_done);
    }

    #[test]
    fn exits_come_from_the_task_or_from_the_labels_it_left() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut reaped = record("a", "a", 4, TaskState::None);
        reaped.labels.extend(exit_labels(3, at));
        let a = decide(
            &[("a", false), ("b", true)],
            vec![
                reaped,
                record("b", "b", 0, TaskState::Exited(Exit { code: 0, at })),
            ],
        );
        assert_eq!(
            a.found[0].as_ref().map(|f| f.state),
            Some(FoundState::Exited {
                code: 3,
                at,
                reaped: true
            })
        );
        assert_eq!(
            a.found[1].as_ref().map(|f| f.state),
            Some(FoundState::Exited {
                code: 0,
                at,
                reaped: false
            })
        );
        // A container whose task is gone without a recorded exit is redone.
        let a = decide(&[("a", false)], vec![record("a", "a", 2, TaskState::None)]);
        assert_eq!((a.found[0].clone(), a.next_attempt[0]), (None, 2));
        assert_eq!(a.stale, ["a"]);
        assert!(!a.init_done);
    }
}
