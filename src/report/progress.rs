//! Periodic progress lines while a run goes on: counts and rates since the last line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::stats::{ConsumerShared, ProducerShared};

/// Logs a progress line every `interval` until `stop` is cancelled.
pub async fn report(
    interval: Duration,
    producer: Option<Arc<ProducerShared>>,
    consumer: Option<Arc<ConsumerShared>>,
    stop: CancellationToken,
) {
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let (acked, p99_ms) = match &producer {
            Some(p) => {
                let t = p.tally.lock().expect("poisoned");
                (
                    t.acked,
                    t.ack_latency.value_at_quantile(0.99) as f64 / 1000.0,
                )
            }
            None => (0, 0.0),
        };
        let records = consumer
            .as_ref()
            .map_or(0, |c| c.tally.lock().expect("poisoned").records);
        if let Some(p) = &producer {
            let rate = ((acked - last.1) as f64 / dt).round();
            info!(
                sent = p.sent(),
                acked,
                rate,
                ack_p99_ms = p99_ms,
                "producer progress"
            );
        }
        if consumer.is_some() {
            let rate = ((records - last.2) as f64 / dt).round();
            info!(records, rate, "consumer progress");
        }
        last = (now, acked, records);
    }
}
