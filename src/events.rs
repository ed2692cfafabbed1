//! The node's recent events, as the kubelet's event recorder makes them
//! (`k8s.io/client-go/tools/record`): each event names the pod (and, for a
//! container, its `fieldPath`, e.g. `spec.containers{app}`), the source
//! `kubelet` on this host, a type, a reason and a message.
//!
//! Events go through the same two steps as the kubelet's `EventCorrelator`:
//! - aggregation (`EventAggregator`): once an object has had more than 10
//!   distinct messages with the same type and reason within 10 minutes, the
//!   next ones become one event "(combined from similar events): <message>";
//! - deduplication (`EventLogger`): an event identical to a recorded one
//!   (object, type, reason, message) is not added again; the recorded one
//!   gets `count + 1` and a new `lastTimestamp`.
//!
//! Without an API server there is no TTL: the ring keeps the last
//! [`CAPACITY`] distinct events. Readers get copies ([`Recorder::list`]) or
//! follow changes ([`Recorder::subscribe`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::broadcast;

use crate::pod::status::to_time;

/// Distinct events kept.
pub const CAPACITY: usize = 1000;
/// The aggregator's bound and window (client-go's `defaultAggregateMaxEvents`
/// and `defaultAggregateIntervalInSeconds`).
const AGGREGATE_MAX: usize = 10;
const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
const COMBINED: &str = "(combined from similar events): ";

/// What an event is about: a pod, or one of its containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involved {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.containers{name}` or `spec.initContainers{name}`.
    pub field_path: Option<String>,
}

impl Involved {
    fn key(&self) -> String {
        format!(
            "{}\x00{}\x00{}\x00{}",
            self.namespace,
            self.name,
            self.uid,
            self.field_path.as_deref().unwrap_or("")
        )
    }
}

/// The field path of a container, as the kubelet's `ref.GetReference` gives it.
pub fn container_field_path(name: &str, init: bool) -> String {
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

struct Aggregate {
    messages: BTreeSet<String>,
    last: SystemTime,
}

struct Ring {
    /// Sequence number of `events[0]`.
    first: u64,
    events: VecDeque<Event>,
    /// Dedup key -> sequence number.
    index: HashMap<String, u64>,
    aggregates: HashMap<String, Aggregate>,
}

/// A handle on the node's event ring; clones share it.
#[derive(Clone)]
pub struct Recorder {
    host: String,
    ring: Arc<Mutex<Ring>>,
    changes: broadcast::Sender<Event>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new("")
    }
}

impl Recorder {
    /// A recorder for events from the kubelet on `host` (the node name).
    pub fn new(host: &str) -> Recorder {
        Recorder {
            host: host.to_string(),
            ring: Arc::new(Mutex::new(Ring {
                first: 0,
                events: VecDeque::new(),
                index: HashMap::new(),
                aggregates: HashMap::new(),
            })),
            changes: broadcast::channel(256).0,
        }
    }

    /// Records an event at the current time.
    pub fn record(&self, object: &Involved, kind: &str, reason: &str, message: &str) {
        self.record_at(object, kind, reason, message, SystemTime::now());
    }

    pub fn record_at(
        &self,
        object: &Involved,
        kind: &str,
        reason: &str,
        message: &str,
        now: SystemTime,
    ) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        // Aggregation: the key without the message.
        let aggregate_key = format!("{}\x00{kind}\x00{reason}", object.key());
        let agg = ring
            .aggregates
            .entry(aggregate_key.clone())
            .or_insert_with(|| Aggregate {
                messages: BTreeSet::new(),
                last: now,
            });
        if now.duration_since(agg.last).unwrap_or_default() > AGGREGATE_WINDOW {
            agg.messages.clear();
        }
        agg.last = now;
        agg.messages.insert(message.to_string());
        let (key, message) = if agg.messages.len() < AGGREGATE_MAX {
            (format!("{aggregate_key}\x00{message}"), message.to_string())
        } else {
            // client-go pops one message to stay bounded.
            agg.messages.pop_first();
            (aggregate_key, format!("{COMBINED}{message}"))
        };
        if ring.aggregates.len() > CAPACITY * 4 {
            ring.aggregates
                .retain(|_, a| now.duration_since(a.last).unwrap_or_default() <= AGGREGATE_WINDOW);
        }
        // Deduplication.
        let time = to_time(now);
        let existing = ring.index.get(&key).copied();
        let event = match existing {
            Some(seq) => {
                let i = usize::try_from(seq - ring.first).expect("ring index fits");
                let e = &mut ring.events[i];
                e.count = Some(e.count.unwrap_or(1).saturating_add(1));
                e.last_timestamp = Some(time);
                e.message = Some(message);
                e.clone()
            }
            None => {
                if ring.events.len() == CAPACITY {
                    ring.events.pop_front();
                    let gone = ring.first;
                    ring.first += 1;
                    ring.index.retain(|_, seq| *seq != gone);
                }
                let nanos = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                let e = Event {
                    metadata: ObjectMeta {
                        name: Some(format!("{}.{nanos:x}", object.name)),
                        namespace: Some(object.namespace.clone()),
                        ..Default::default()
                    },
                    involved_object: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(object.name.clone()),
                        namespace: Some(object.namespace.clone()),
                        uid: Some(object.uid.clone()),
                        field_path: object.field_path.clone(),
                        ..Default::default()
                    },
                    reason: Some(reason.to_string()),
                    message: Some(message),
                    source: Some(EventSource {
                        component: Some("kubelet".into()),
                        host: Some(self.host.clone()),
                    }),
                    first_timestamp: Some(time.clone()),
                    last_timestamp: Some(time),
                    count: Some(1),
                    type_: Some(kind.to_string()),
                    reporting_component: Some("kubelet".into()),
                    reporting_instance: Some(self.host.clone()),
                    ..Default::default()
                };
                let seq = ring.first + ring.events.len() as u64;
                ring.index.insert(key, seq);
                ring.events.push_back(e.clone());
                e
            }
        };
        drop(ring);
        // Nobody listening is fine.
        let _ = self.changes.send(event);
    }

    /// The recorded events, oldest first.
    pub fn list(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.events.iter().cloned().collect()
    }

    /// The events of one pod (by UID), oldest first.
    pub fn of_pod(&self, uid: &str) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.events
            .iter()
            .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
            .cloned()
            .collect()
    }

    /// Every event recorded or updated from now on. A reader that falls more
    /// than 256 events behind is told so (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(field_path: Option<&str>) -> Involved {
        Involved {
            namespace: "default".into(),
            name: "web-n1".into(),
            uid: "u1".into(),
            field_path: field_path.map(str::to_string),
        }
    }

    #[test]
    fn identical_events_are_counted_not_repeated() {
        let r = Recorder::new("n1");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = pod(Some("spec.containers{app}"));
        r.record_at(&c, "Warning", "BackOff", "Back-off restarting", t0);
        r.record_at(&c, "Normal", "Started", "Started container app", t0);
        r.record_at(
            &c,
            "Warning",
            "BackOff",
            "Back-off restarting",
            t0 + Duration::from_secs(30),
        );
        // Another container's identical event is another event.
        r.record_at(
            &pod(Some("spec.containers{side}")),
            "Warning",
            "BackOff",
            "Back-off restarting",
            t0,
        );
        let list = r.list();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].count, Some(2));
        assert_eq!(list[0].first_timestamp, Some(to_time(t0)));
        assert_eq!(
            list[0].last_timestamp,
            Some(to_time(t0 + Duration::from_secs(30)))
        );
        assert_eq!(
            list[0].involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(list[0].source.as_ref().unwrap().host.as_deref(), Some("n1"));
        assert_eq!(list[1].count, Some(1));
        assert_eq!(r.of_pod("u1").len(), 3);
        assert!(r.of_pod("other").is_empty());
    }

    #[test]
    fn similar_messages_are_combined_past_ten() {
        let r = Recorder::new("n1");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..15 {
            r.record_at(
                &pod(None),
                "Warning",
                "FailedMount",
                &format!("mount {i} failed"),
                t0 + Duration::from_secs(i),
            );
        }
        let list = r.list();
        // Nine as they came, then one combined event counted six times.
        assert_eq!(list.len(), 10, "{list:#?}");
        let combined = &list[9];
        assert_eq!(
            combined.message.as_deref(),
            Some("(combined from similar events): mount 14 failed")
        );
        assert_eq!(combined.count, Some(6));
        // After the window, messages are counted afresh.
        r.record_at(
            &pod(None),
            "Warning",
            "FailedMount",
            "mount late failed",
            t0 + Duration::from_secs(15 + 601),
        );
        assert_eq!(
            r.list().last().unwrap().message.as_deref(),
            Some("mount late failed")
        );
    }

    #[test]
    fn the_ring_is_bounded_and_forgets_the_oldest() {
        let r = Recorder::new("n1");
        for i in 0..CAPACITY + 5 {
            let p = Involved {
                uid: format!("u{i}"),
                ..pod(None)
            };
            r.record(&p, "Normal", "Started", "Started container app");
        }
        let list = r.list();
        assert_eq!(list.len(), CAPACITY);
        assert_eq!(list[0].involved_object.uid.as_deref(), Some("u5"));
        // The first one is gone: recording it again makes a new event.
        let p = Involved {
            uid: "u0".into(),
            ..pod(None)
        };
        r.record(&p, "Normal", "Started", "Started container app");
        assert_eq!(r.list().last().unwrap().count, Some(1));
        // A deduplicated event past the front still updates in place.
        let p = Involved {
            uid: format!("u{}", CAPACITY + 4),
            ..pod(None)
        };
        r.record(&p, "Normal", "Started", "Started container app");
        let list = r.list();
        assert_eq!(list.len(), CAPACITY);
        let e = list
            .iter()
            .find(|e| e.involved_object.uid == p.uid.clone().into())
            .unwrap();
        assert_eq!(e.count, Some(2));
    }

    #[tokio::test]
    async fn subscribers_see_new_and_updated_events() {
        let r = Recorder::new("n1");
        let mut rx = r.subscribe();
        r.record(&pod(None), "Normal", "Started", "x");
        r.record(&pod(None), "Normal", "Started", "x");
        assert_eq!(rx.recv().await.unwrap().count, Some(1));
        assert_eq!(rx.recv().await.unwrap().count, Some(2));
    }
}
