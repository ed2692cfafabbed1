//! PersistentVolumeClaim to PersistentVolume binding, as Kubernetes' PV
//! controller does it for static provisioning: same storage class, the
//! claim's access modes contained in the volume's, the request not above the
//! capacity, one claim per volume, the smallest fitting volume wins. A
//! binding, once made, holds while both objects exist and still match. Pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::manifest::quantity::Quantity;

/// (namespace, name) of a claim.
pub type ClaimKey = (String, String);

pub fn claim_key(pvc: &PersistentVolumeClaim) -> ClaimKey {
    (
        pvc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        pvc.metadata.name.clone().unwrap_or_default(),
    )
}

fn capacity(pv: &PersistentVolume) -> Option<Quantity> {
    let q = pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    Quantity::parse(&q.0).ok()
}

fn request(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    let q = pvc
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Quantity::parse(&q.0).ok()
}

/// Whether `pv` can serve `pvc`, ignoring whether it is taken.
pub fn matches(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(pvs), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return false;
    };
    let class = |c: &Option<String>| c.clone().unwrap_or_default();
    if class(&pvs.storage_class_name) != class(&cs.storage_class_name) {
        return false;
    }
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    if mode(&pvs.volume_mode) != mode(&cs.volume_mode) {
        return false;
    }
    let have: BTreeSet<&String> = pvs.access_modes.iter().flatten().collect();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return false;
    }
    if let Some(sel) = cs.selector.as_ref().and_then(|s| s.match_labels.as_ref()) {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    // A volume reserved for another claim (claimRef) serves only that one.
    if let Some(r) = &pvs.claim_ref {
        let (ns, name) = claim_key(pvc);
        if r.name.as_deref() != Some(name.as_str())
            || r.namespace.as_deref().unwrap_or("default") != ns
        {
            return false;
        }
    }
    if let Some(v) = &cs.volume_name
        && Some(v) != pv.metadata.name.as_ref()
    {
        return false;
    }
    matches!((capacity(pv), request(pvc)), (Some(c), Some(r)) if r <= c)
}

/// Binds claims to volumes. `previous` bindings are kept while valid; new
/// claims are bound in the given order, never to a `reserved` volume (one
/// whose claim was deleted and whose reclaim is pending: Kubernetes'
/// `Released` phase).
pub fn bind(
    pvs: &[PersistentVolume],
    pvcs: &[PersistentVolumeClaim],
    previous: &BTreeMap<ClaimKey, String>,
    reserved: &BTreeSet<String>,
) -> BTreeMap<ClaimKey, String> {
    let by_name: BTreeMap<&str, &PersistentVolume> = pvs
        .iter()
        .filter_map(|pv| Some((pv.metadata.name.as_deref()?, pv)))
        .collect();
    let mut out = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for pvc in pvcs {
        let key = claim_key(pvc);
        if let Some(pv_name) = previous.get(&key)
            && let Some(pv) = by_name.get(pv_name.as_str())
            && matches(pv, pvc)
            && taken.insert(pv_name.clone())
        {
            out.insert(key, pv_name.clone());
        }
    }
    for pvc in pvcs {
        let key = claim_key(pvc);
        if out.contains_key(&key) {
            continue;
        }
        let best = by_name
            .iter()
            .filter(|(name, pv)| {
                !taken.contains(**name) && !reserved.contains(**name) && matches(pv, pvc)
            })
            .min_by_key(|(name, pv)| (capacity(pv), **name));
        if let Some((name, _)) = best {
            taken.insert(name.to_string());
            out.insert(key, name.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, size: &str, class: &str, modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "storageClassName": class, "accessModes": modes, "hostPath": {"path": "/x"}}
        }))
        .unwrap()
    }

    fn pvc(name: &str, size: &str, class: &str, modes: &[&str]) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"resources": {"requests": {"storage": size}}, "storageClassName": class, "accessModes": modes}
        }))
        .unwrap()
    }

    fn key(n: &str) -> ClaimKey {
        ("default".into(), n.into())
    }

    #[test]
    fn smallest_fitting_volume_of_the_same_class_wins() {
        let pvs = [
            pv("big", "100Gi", "nfs", &["ReadWriteMany"]),
            pv("small", "10Gi", "nfs", &["ReadWriteMany", "ReadWriteOnce"]),
            pv("tiny", "1Gi", "nfs", &["ReadWriteMany"]),
            pv("other", "10Gi", "fast", &["ReadWriteMany"]),
        ];
        let claims = [pvc("data", "5Gi", "nfs", &["ReadWriteMany"])];
        let b = bind(&pvs, &claims, &BTreeMap::new(), &BTreeSet::new());
        assert_eq!(b[&key("data")], "small");
    }

    #[test]
    fn access_modes_class_and_size_must_match() {
        let pvs = [pv("a", "10Gi", "nfs", &["ReadWriteOnce"])];
        let bound =
            |c: PersistentVolumeClaim| bind(&pvs, &[c], &BTreeMap::new(), &BTreeSet::new()).len();
        assert_eq!(bound(pvc("c", "5Gi", "nfs", &["ReadWriteMany"])), 0);
        assert_eq!(bound(pvc("c", "5Gi", "", &["ReadWriteOnce"])), 0);
        assert_eq!(bound(pvc("c", "11Gi", "nfs", &["ReadWriteOnce"])), 0);
        assert_eq!(bound(pvc("c", "10Gi", "nfs", &["ReadWriteOnce"])), 1);
    }

    #[test]
    fn reserved_volumes_go_to_no_new_claim_but_keep_their_own() {
        let pvs = [pv("a", "10Gi", "", &["ReadWriteOnce"])];
        let claims = [pvc("new", "1Gi", "", &["ReadWriteOnce"])];
        let reserved = BTreeSet::from(["a".to_string()]);
        assert!(bind(&pvs, &claims, &BTreeMap::new(), &reserved).is_empty());
        // The claim that held it comes back: its binding is restored.
        let back = [pvc("old", "1Gi", "", &["ReadWriteOnce"])];
        let previous = BTreeMap::from([(key("old"), "a".to_string())]);
        assert_eq!(bind(&pvs, &back, &previous, &reserved)[&key("old")], "a");
    }

    #[test]
    fn one_claim_per_volume_and_bindings_hold() {
        let pvs = [pv("a", "10Gi", "", &["ReadWriteOnce"])];
        let claims = [
            pvc("first", "1Gi", "", &["ReadWriteOnce"]),
            pvc("second", "1Gi", "", &["ReadWriteOnce"]),
        ];
        let b = bind(&pvs, &claims, &BTreeMap::new(), &BTreeSet::new());
        assert_eq!(b.len(), 1);
        assert_eq!(b[&key("first")], "a");
        // A smaller volume appearing later does not move an existing binding;
        // the claim that waited gets it.
        let pvs2 = [pvs[0].clone(), pv("b", "2Gi", "", &["ReadWriteOnce"])];
        let b2 = bind(&pvs2, &claims, &b, &BTreeSet::new());
        assert_eq!(b2[&key("first")], "a");
        assert_eq!(b2[&key("second")], "b");
        // The volume goes away: the binding goes with it.
        let b3 = bind(&pvs2[1..], &claims, &b2, &BTreeSet::new());
        assert_eq!(b3.get(&key("first")), None);
        assert_eq!(b3[&key("second")], "b");
    }
}
