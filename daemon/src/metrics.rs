//! Prometheus metrics in the text exposition format (prometheus-client): request latency
//! histograms observed by the API layer, and, read at scrape time from the registry, the
//! mount's counters, the audit trail's event counts (pushes, promotions, refusals, integrity
//! failures, …) and the store's size.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::registry::Registry;

/// Labels of one API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route's pattern (`/v1/models/{name}`), never the concrete path.
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Histogram>,
}

/// Values read from the registry on each scrape.
struct Live(Arc<Registry>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Live {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reg = &self.0;
        if let Some(m) = reg.mount_counters() {
            counter(
                &mut e,
                "arca_mount_bytes_served",
                "Bytes returned to readers by the mount",
                m.bytes_served,
            )?;
            counter(
                &mut e,
                "arca_mount_reads",
                "Read requests served by the mount",
                m.reads,
            )?;
            counter(
                &mut e,
                "arca_mount_read_errors",
                "Mount reads that failed (EIO)",
                m.read_errors,
            )?;
            counter(
                &mut e,
                "arca_mount_cache_hits",
                "Chunk reads answered by the verified-plaintext cache",
                m.cache_hits,
            )?;
            counter(
                &mut e,
                "arca_mount_cache_misses",
                "Chunk reads that went to the store",
                m.cache_misses,
            )?;
            gauge(
                &mut e,
                "arca_mount_cache_bytes",
                "Bytes held by the verified-plaintext cache",
                m.cache_bytes as i64,
            )?;
            counter(
                &mut e,
                "arca_mount_integrity_failures",
                "Chunks the mount refused because they failed verification",
                m.integrity_failures,
            )?;
        }
        {
            let counts = reg.store().event_counts();
            let c0 = ConstCounter::new(0u64);
            let mut fam = e.encode_descriptor(
                "arca_audit_events",
                "Audit events appended since arcad started, by type (registration = pushes, promotion, refusal, integrity_violation, …)",
                None,
                c0.metric_type(),
            )?;
            for (kind, n) in counts {
                let labels = [("type", kind.as_str())];
                ConstCounter::new(n).encode(fam.encode_family(&labels)?)?;
            }
        }
        if let Ok(s) = reg.stats() {
            gauge(
                &mut e,
                "arca_store_models",
                "Models in the catalog",
                s.models as i64,
            )?;
            gauge(
                &mut e,
                "arca_store_versions",
                "Versions in the catalog",
                s.versions as i64,
            )?;
            gauge(
                &mut e,
                "arca_store_chunks",
                "Distinct chunks the catalog references",
                s.chunks as i64,
            )?;
            gauge(
                &mut e,
                "arca_store_stored_bytes",
                "Sealed bytes of the referenced chunks",
                s.stored_bytes as i64,
            )?;
            gauge(
                &mut e,
                "arca_store_logical_bytes",
                "Bytes of all files of all versions",
                s.logical_bytes as i64,
            )?;
        }
        if let Some(f) = reg.fleet() {
            let st = f.status();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            gauge(
                &mut e,
                "arca_fleet_applied_seq",
                "Newest fleet log entry applied on this host",
                st.applied as i64,
            )?;
            gauge(
                &mut e,
                "arca_fleet_lag_seconds",
                "Seconds since this host last read the fleet's log successfully (-1: never since start)",
                if st.last_ok_ms == 0 { -1 } else { (now_ms.saturating_sub(st.last_ok_ms) / 1000) as i64 },
            )?;
            gauge(
                &mut e,
                "arca_fleet_halted",
                "1 if this host stopped applying the log (fork, gap or a bad entry)",
                st.halted.is_some() as i64,
            )?;
            gauge(
                &mut e,
                "arca_fleet_stale_view",
                "1 if another host's signed heartbeat shows the store hides log entries from this host",
                st.stale_view.is_some() as i64,
            )?;
            counter(
                &mut e,
                "arca_fleet_store_errors",
                "Object-store calls that failed on every endpoint",
                f.remote.errors.load(std::sync::atomic::Ordering::Relaxed),
            )?;
            counter(
                &mut e,
                "arca_fleet_store_requests",
                "Object-store requests made",
                f.remote.requests.load(std::sync::atomic::Ordering::Relaxed),
            )?;
            counter(
                &mut e,
                "arca_fleet_bytes_fetched",
                "Bytes fetched from packs",
                st.bytes_fetched,
            )?;
            counter(
                &mut e,
                "arca_fleet_integrity_failures",
                "Chunks fetched from packs that failed authentication (never cached or served)",
                st.integrity_failures,
            )?;
            gauge(
                &mut e,
                "arca_fleet_object_lock",
                "1 if log entries and audit segments are written with S3 Object Lock retention",
                matches!(
                    f.remote.lock_state(),
                    crate::remote::lock::LockState::InForce(_)
                ) as i64,
            )?;
            let ship = f.ship_status(reg.store());
            gauge(
                &mut e,
                "arca_fleet_audit_segments",
                "Audit segments this host has in the store",
                ship.segments as i64,
            )?;
            gauge(
                &mut e,
                "arca_fleet_audit_pending_events",
                "Events in this host's audit trail after its last shipped segment",
                ship.pending as i64,
            )?;
            gauge(
                &mut e,
                "arca_fleet_audit_shipping_halted",
                "1 if this host stopped shipping its audit trail (its newest segment in the store does not verify)",
                ship.halted.is_some() as i64,
            )?;
            let cs = f.cache.stats();
            let count = reg.store().cache_count();
            for (name, help, v) in [
                ("arca_fleet_cache_bytes", "Sealed chunk bytes in this host's cache", count.bytes),
                ("arca_fleet_cache_chunks", "Chunks in this host's cache", count.chunks),
                ("arca_fleet_cache_limit_bytes", "The cache's limit (cache_gib)", f.cache.limit),
                ("arca_fleet_cache_kept_bytes", "Cached bytes of production and staging versions of served models (never evicted)", cs.kept_bytes),
                ("arca_fleet_cache_pinned_bytes", "Cached bytes of versions pinned on this host (never evicted)", cs.pinned_bytes),
                ("arca_fleet_cache_disk_bytes", "Blob files of the chunk store on disk", cs.disk_bytes),
                ("arca_fleet_cache_garbage_bytes", "Evicted chunks' bytes not given back yet (in blob files with live chunks)", cs.garbage_bytes),
            ] {
                gauge(&mut e, name, help, v as i64)?;
            }
            gauge(
                &mut e,
                "arca_fleet_cache_over_limit",
                "1 if kept and pinned versions alone take more than the cache's limit",
                cs.over_limit as i64,
            )?;
            for (name, help, v) in [
                (
                    "arca_fleet_cache_evicted_chunks",
                    "Chunks evicted from the cache",
                    cs.evicted_chunks,
                ),
                (
                    "arca_fleet_cache_evicted_bytes",
                    "Sealed bytes evicted from the cache",
                    cs.evicted_bytes,
                ),
                (
                    "arca_fleet_cache_evictions",
                    "Eviction passes that evicted chunks",
                    cs.evictions,
                ),
                (
                    "arca_fleet_cache_warmups",
                    "Warm-ups before a switch to production or staging",
                    cs.warmups,
                ),
                (
                    "arca_fleet_cache_warmups_incomplete",
                    "Warm-ups that ran out of time or failed (the switch happened anyway)",
                    cs.warmups_incomplete,
                ),
            ] {
                counter(&mut e, name, help, v)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new(reg: Arc<Registry>) -> Arc<Self> {
        let mut registry = prometheus_client::registry::Registry::default();
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 105 s.
            Histogram::new(exponential_buckets(0.0001, 4.0, 11))
        });
        registry.register(
            "arca_request_duration_seconds",
            "Control API request latency, by method, route and status",
            requests.clone(),
        );
        registry.register_collector(Box::new(Live(reg)));
        Arc::new(Self { registry, requests })
    }

    pub fn observe(&self, labels: RequestLabels, seconds: f64) {
        self.requests.get_or_create(&labels).observe(seconds);
    }

    /// The text exposition format, for `GET /metrics`.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
