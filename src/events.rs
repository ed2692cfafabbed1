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
//!
//! Memory: an event is kept as one text allocation plus times and counts
//! (about 250 bytes), not as an API `Event` (about 1 KiB inline and 17
//! strings), and built as one only when read. The aggregator and the
//! deduplication index keep 64-bit hashes of their keys and messages, not
//! the strings: client-go keeps the strings, but only needs to tell them
//! apart (two different keys sharing a hash, about 2^-64 per pair, would
//! only count as one). The aggregator is bounded as client-go's LRU cache
//! is ([`AGGREGATE_ENTRIES`]), and a pod's entries are dropped once the pod
//! is gone ([`Recorder::forget`]): a UID that is gone makes no new events.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
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
/// Aggregation records kept (client-go's `maxLruCacheEntries`); past it,
/// the least recently used quarter goes.
pub const AGGREGATE_ENTRIES: usize = 4096;
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

/// The container of a field path, as the kubelet's `ref.GetReference` gives it.
pub fn container_field_path(name: &str, init: bool) -> String {
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

fn hash(parts: &[&str]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// An event's strings but the message: namespace, pod name, UID, field
/// path, type, reason.
fn key_parts<'a>(object: &'a Involved, kind: &'a str, reason: &'a str) -> [&'a str; 6] {
    [
        object.namespace.as_str(),
        &object.name,
        &object.uid,
        object.field_path.as_deref().unwrap_or(""),
        kind,
        reason,
    ]
}

/// One recorded event. Its strings (namespace, pod name, UID, field path,
/// type, reason, message) are kept end to end in `text`.
#[derive(Debug, Clone)]
pub struct Recorded {
    text: Box<str>,
    /// Where each string but the last (the message) ends in `text`.
    ends: [u32; 6],
    /// Whether the field path is set (it may be set and empty).
    has_field_path: bool,
    first: SystemTime,
    last: SystemTime,
    count: i32,
    /// The deduplication key's hash.
    key: u64,
}

impl Recorded {
    fn new(object: &Involved, kind: &str, reason: &str, message: &str, now: SystemTime) -> Self {
        let parts = key_parts(object, kind, reason);
        let mut text =
            String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + message.len());
        let mut ends = [0; 6];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        text.push_str(message);
        Recorded {
            text: text.into_boxed_str(),
            ends,
            has_field_path: object.field_path.is_some(),
            first: now,
            last: now,
            count: 1,
            key: 0,
        }
    }

    /// The `i`th string: 0 namespace, 1 name, 2 UID, 3 field path, 4 type,
    /// 5 reason, 6 message.
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |e| *e as usize);
        self.text.get(start..end).unwrap_or_default()
    }

    fn uid(&self) -> &str {
        self.part(2)
    }

    fn set_message(&mut self, message: &str) {
        let head = self.ends[5] as usize;
        let mut text = String::with_capacity(head + message.len());
        text.push_str(self.text.get(..head).unwrap_or_default());
        text.push_str(message);
        self.text = text.into_boxed_str();
    }

    /// The API object, as the kubelet would have posted it from `host`.
    pub fn to_api(&self, host: &str) -> Event {
        let nanos = self
            .first
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let (namespace, name) = (self.part(0), self.part(1));
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{nanos:x}")),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: Some(self.uid().to_string()),
                field_path: self.has_field_path.then(|| self.part(3).to_string()),
                ..Default::default()
            },
            reason: Some(self.part(5).to_string()),
            message: Some(self.part(6).to_string()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(host.to_string()),
            }),
            first_timestamp: Some(to_time(self.first)),
            last_timestamp: Some(to_time(self.last)),
            count: Some(self.count),
            type_: Some(self.part(4).to_string()),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(host.to_string()),
            ..Default::default()
        }
    }
}

struct Aggregate {
    /// Hash of the pod's UID, for [`Recorder::forget`].
    uid: u64,
    /// Hashes of the distinct messages seen (at most [`AGGREGATE_MAX`]).
    messages: Vec<u64>,
    last: SystemTime,
}

struct Ring {
    /// Sequence number of `events[0]`.
    first: u64,
    events: VecDeque<Recorded>,
    /// Deduplication key hash -> sequence number.
    index: HashMap<u64, u64>,
    /// Aggregation key hash (object, type, reason) -> what it has seen.
    aggregates: HashMap<u64, Aggregate>,
}

/// A handle on the node's event ring; clones share it.
#[derive(Clone)]
pub struct Recorder {
    host: Arc<str>,
    ring: Arc<Mutex<Ring>>,
    changes: broadcast::Sender<Recorded>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new("")
    }
}

/// Events recorded or updated after [`Recorder::subscribe`].
pub struct Subscription {
    host: Arc<str>,
    rx: broadcast::Receiver<Recorded>,
}

impl Subscription {
    /// The next event; `Lagged` when this reader fell more than 256 events
    /// behind.
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        self.rx.recv().await.map(|e| e.to_api(&self.host))
    }
}

impl Recorder {
    /// A recorder for events from the kubelet on `host` (the node name).
    pub fn new(host: &str) -> Recorder {
        Recorder {
            host: host.into(),
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
        let object_key = key_parts(object, kind, reason);
        let aggregate_key = hash(&object_key);
        if ring.aggregates.len() >= AGGREGATE_ENTRIES
            && !ring.aggregates.contains_key(&aggregate_key)
        {
            ring.evict_aggregates();
        }
        let agg = ring
            .aggregates
            .entry(aggregate_key)
            .or_insert_with(|| Aggregate {
                uid: hash(&[&object.uid]),
                messages: Vec::new(),
                last: now,
            });
        if now.duration_since(agg.last).unwrap_or_default() > AGGREGATE_WINDOW {
            agg.messages.clear();
        }
        agg.last = now;
        let message_hash = hash(&[message]);
        if let Err(at) = agg.messages.binary_search(&message_hash) {
            agg.messages.insert(at, message_hash);
        }
        let combined = if agg.messages.len() < AGGREGATE_MAX {
            None
        } else {
            // client-go pops one message to stay bounded.
            agg.messages.remove(0);
            Some(format!("{COMBINED}{message}"))
        };
        let message = combined.as_deref().unwrap_or(message);
        // The combined event is one per aggregation key; others are told
        // apart by their message.
        let key = if combined.is_some() {
            aggregate_key
        } else {
            hash(&[&object_key[..], &[message]].concat())
        };
        // Deduplication.
        let existing = ring.index.get(&key).copied();
        let event = match existing {
            Some(seq) => {
                let i = usize::try_from(seq - ring.first).expect("ring index fits");
                let e = &mut ring.events[i];
                e.count = e.count.saturating_add(1);
                e.last = now;
                if e.part(6) != message {
                    e.set_message(message);
                }
                e.clone()
            }
            None => {
                if ring.events.len() == CAPACITY
                    && let Some(gone) = ring.events.pop_front()
                {
                    let seq = ring.first;
                    ring.first += 1;
                    if ring.index.get(&gone.key) == Some(&seq) {
                        ring.index.remove(&gone.key);
                    }
                }
                let mut e = Recorded::new(object, kind, reason, message, now);
                e.key = key;
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
        ring.events.iter().map(|e| e.to_api(&self.host)).collect()
    }

    /// The events of one pod (by UID), oldest first.
    pub fn of_pod(&self, uid: &str) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.events
            .iter()
            .filter(|e| e.uid() == uid)
            .map(|e| e.to_api(&self.host))
            .collect()
    }

    /// Drops what the aggregator keeps of pod `uid`, once the pod is gone
    /// (its events stay in the ring).
    pub fn forget(&self, uid: &str) {
        let uid = hash(&[uid]);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.aggregates.retain(|_, a| a.uid != uid);
        if ring.aggregates.is_empty() {
            ring.aggregates.shrink_to_fit();
        }
    }

    /// Every event recorded or updated from now on. A reader that falls more
    /// than 256 events behind is told so (`RecvError::Lagged`).
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            host: Arc::clone(&self.host),
            rx: self.changes.subscribe(),
        }
    }
}

impl Ring {
    /// Makes room in the aggregator: first what is past the window, then,
    /// if that is not enough, the least recently used quarter.
    fn evict_aggregates(&mut self) {
        let Some(newest) = self.aggregates.values().map(|a| a.last).max() else {
            return;
        };
        self.aggregates
            .retain(|_, a| newest.duration_since(a.last).unwrap_or_default() <= AGGREGATE_WINDOW);
        if self.aggregates.len() < AGGREGATE_ENTRIES {
            return;
        }
        let mut lasts: Vec<SystemTime> = self.aggregates.values().map(|a| a.last).collect();
        let (_, cut, _) = lasts.select_nth_unstable(AGGREGATE_ENTRIES / 4);
        let cut = *cut;
        self.aggregates.retain(|_, a| a.last > cut);
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

    #[test]
    fn the_aggregator_is_bounded_and_forgets_pods_that_are_gone() {
        let r = Recorder::new("n1");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..AGGREGATE_ENTRIES + 10 {
            let p = Involved {
                uid: format!("u{i}"),
                ..pod(None)
            };
            r.record_at(
                &p,
                "Normal",
                "Started",
                "Started",
                t0 + Duration::from_millis(i as u64),
            );
        }
        let aggregates = |r: &Recorder| r.ring.lock().unwrap().aggregates.len();
        assert!(aggregates(&r) <= AGGREGATE_ENTRIES, "{}", aggregates(&r));
        // The least recently used went, the last ones stay.
        let last = format!("u{}", AGGREGATE_ENTRIES + 9);
        let n = aggregates(&r);
        r.forget(&last);
        assert_eq!(aggregates(&r), n - 1);
        // Its events stay in the ring.
        assert_eq!(r.of_pod(&last).len(), 1);
    }

    #[test]
    fn events_read_back_as_recorded() {
        let r = Recorder::new("n1");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        r.record_at(&pod(None), "Normal", "Pulled", "image ok", t0);
        r.record_at(&pod(Some("")), "Warning", "Failed", "", t0);
        let list = r.list();
        let e = &list[0];
        assert_eq!(e.metadata.name.as_deref(), Some("web-n1.38d7ea4c68000"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.involved_object.name.as_deref(), Some("web-n1"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(e.involved_object.field_path, None);
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.reason.as_deref(), Some("Pulled"));
        assert_eq!(e.message.as_deref(), Some("image ok"));
        assert_eq!(e.reporting_instance.as_deref(), Some("n1"));
        assert_eq!(list[1].involved_object.field_path.as_deref(), Some(""));
        assert_eq!(list[1].message.as_deref(), Some(""));
    }
}
