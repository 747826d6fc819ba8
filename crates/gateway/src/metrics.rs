//! `GET /metrics`: the instance's numbers in Prometheus' text format.
//!
//! The hot path only bumps plain atomics (the hub's [`HubStats`](crate::hub::HubStats)
//! and the counters here); a scrape copies them into a Prometheus recorder
//! owned by this instance and renders it. No global recorder: two gateways in
//! one process (as in the tests) keep separate numbers.

use std::sync::atomic::{AtomicU64, Ordering};

use herald_broker::BrokerStatus;
use herald_protocol::CloseCode;
use metrics::{Recorder, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::state::AppState;

/// Counters of events outside the hub, and the recorder that renders them all.
#[derive(Debug)]
pub struct Metrics {
    /// Renders the text format.
    recorder: PrometheusRecorder,
    /// Connections the server closed, per close code (indexed like [`CloseCode::ALL`]).
    closes: [AtomicU64; CloseCode::ALL.len()],
    /// Messages published through the HTTP API.
    published: AtomicU64,
    /// Publish API requests refused or failed.
    publish_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            recorder: PrometheusBuilder::new().build_recorder(),
            closes: std::array::from_fn(|_| AtomicU64::new(0)),
            published: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts a connection the server closed with `code`.
    pub fn closed(&self, code: CloseCode) {
        if let Some(index) = CloseCode::ALL.iter().position(|c| *c == code) {
            self.closes[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one publish through the API.
    pub fn published(&self, ok: bool) {
        let counter = if ok {
            &self.published
        } else {
            &self.publish_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition of every number of the instance.
    pub fn render(&self, state: &AppState) -> String {
        let recorder: &dyn Recorder = &self.recorder;
        with_local_recorder(recorder, || {
            let stats = state.hub.stats();
            metrics::gauge!("herald_connections").set(state.open_connections() as f64);
            metrics::gauge!("herald_channels").set(state.hub.channel_count() as f64);
            let connected = *state.hub.broker().status().borrow() == BrokerStatus::Connected;
            metrics::gauge!("herald_broker_connected").set(if connected { 1.0 } else { 0.0 });
            metrics::counter!("herald_messages_total")
                .absolute(stats.messages.load(Ordering::Relaxed));
            metrics::counter!("herald_deliveries_total")
                .absolute(stats.deliveries.load(Ordering::Relaxed));
            metrics::counter!("herald_slow_consumers_total")
                .absolute(stats.slow_consumers.load(Ordering::Relaxed));
            metrics::counter!("herald_published_total")
                .absolute(self.published.load(Ordering::Relaxed));
            metrics::counter!("herald_publish_failures_total")
                .absolute(self.publish_failures.load(Ordering::Relaxed));
            for (code, count) in CloseCode::ALL.iter().zip(&self.closes) {
                metrics::counter!("herald_closes_total", "code" => code.code().to_string())
                    .absolute(count.load(Ordering::Relaxed));
            }
            let recoveries = state.recoveries.stats();
            metrics::counter!("herald_recovery_reads_total")
                .absolute(recoveries.reads.load(Ordering::Relaxed));
            metrics::counter!("herald_recoveries_shared_total")
                .absolute(recoveries.shared.load(Ordering::Relaxed));
            metrics::gauge!("herald_recovery_reads_running")
                .set(recoveries.running.load(Ordering::Relaxed) as f64);
            metrics::gauge!("herald_recovery_reads_peak")
                .set(recoveries.peak.load(Ordering::Relaxed) as f64);
        });
        self.recorder.handle().render()
    }
}
