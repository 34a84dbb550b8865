//! Live progress while a run goes on: on a terminal, indicatif bars on stderr (count, rate, ETA,
//! p99); otherwise, or with --no-progress, a log line every --report-interval.
//!
//! It only reads the shared tallies, a few times a second: the Kafka loops never wait for it and
//! never format anything for it. Log lines keep going to stdout either way (logging owns that);
//! a log writer that goes through [`bar_safe_stdout`] hides the bars while it writes a line, so
//! the two do not garble each other on one terminal.

use std::collections::VecDeque;
use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::stats::{ConsumerShared, ProducerShared};
use crate::config::{Mode, Settings};

/// How progress is shown, resolved from the settings and the terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Seconds between log lines (log mode).
    pub interval: Duration,
    /// Draw bars on stderr instead of logging lines.
    pub bar: bool,
    /// Messages the producer will send, when bounded.
    pub produce_total: Option<u64>,
    /// Distinct messages the consumer waits for, when known.
    pub consume_total: Option<u64>,
}

impl Plan {
    /// Bars only when progress is allowed and stderr is a terminal.
    pub fn from_settings(s: &Settings) -> Plan {
        let produce_total = s
            .producer
            .num_messages
            .filter(|&n| s.mode.produces() && n > 0);
        let consume_total = s.consumer.expect.or_else(|| {
            (s.mode == Mode::Both && s.consumer.stop_when_run_complete)
                .then_some(produce_total)
                .flatten()
        });
        Plan {
            interval: s.output.report_interval,
            bar: s.output.progress && std::io::stderr().is_terminal(),
            produce_total,
            consume_total,
        }
    }
}

/// A point-in-time reading of the tallies.
#[derive(Debug, Default, Clone, Copy)]
struct Reading {
    sent: u64,
    acked: u64,
    records: u64,
    distinct: u64,
}

fn read(producer: &Option<Arc<ProducerShared>>, consumer: &Option<Arc<ConsumerShared>>) -> Reading {
    let mut r = Reading::default();
    if let Some(p) = producer {
        r.sent = p.sent();
        r.acked = p.tally.lock().expect("poisoned").acked;
    }
    if let Some(c) = consumer {
        let t = c.tally.lock().expect("poisoned");
        r.records = t.records;
        r.distinct = t.audit.distinct();
    }
    r
}

/// p99s in ms: (ack, end-to-end). Walks the histograms, so it is done about once a second.
fn p99s(
    producer: &Option<Arc<ProducerShared>>,
    consumer: &Option<Arc<ConsumerShared>>,
) -> (Option<f64>, Option<f64>) {
    let ack = producer.as_ref().and_then(|p| {
        let t = p.tally.lock().expect("poisoned");
        (!t.ack_latency.is_empty()).then(|| t.ack_latency.value_at_quantile(0.99) as f64 / 1e3)
    });
    let e2e = consumer.as_ref().and_then(|c| {
        let t = c.tally.lock().expect("poisoned");
        let h = if t.e2e_monotonic.is_empty() {
            &t.e2e_wall
        } else {
            &t.e2e_monotonic
        };
        (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1e3)
    });
    (ack, e2e)
}

/// Shows progress until `stop` is cancelled.
pub async fn report(
    plan: Plan,
    producer: Option<Arc<ProducerShared>>,
    consumer: Option<Arc<ConsumerShared>>,
    stop: CancellationToken,
) {
    if plan.bar {
        bars(plan, producer, consumer, stop).await
    } else {
        lines(plan, producer, consumer, stop).await
    }
}

fn eta_secs(done: u64, total: Option<u64>, rate: f64) -> Option<f64> {
    let total = total?;
    (rate > 0.0).then(|| (total.saturating_sub(done) as f64 / rate).round())
}

async fn lines(
    plan: Plan,
    producer: Option<Arc<ProducerShared>>,
    consumer: Option<Arc<ConsumerShared>>,
    stop: CancellationToken,
) {
    let mut last = (Instant::now(), Reading::default());
    let mut ticker = tokio::time::interval(plan.interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let r = read(&producer, &consumer);
        let (ack_p99, e2e_p99) = p99s(&producer, &consumer);
        if producer.is_some() {
            let rate = ((r.acked - last.1.acked) as f64 / dt).round();
            let eta_s = eta_secs(r.acked, plan.produce_total, rate);
            info!(
                sent = r.sent,
                acked = r.acked,
                rate,
                ack_p99_ms = ack_p99.unwrap_or(0.0),
                eta_s,
                "producer progress"
            );
        }
        if consumer.is_some() {
            let rate = ((r.records - last.1.records) as f64 / dt).round();
            let eta_s = eta_secs(r.distinct, plan.consume_total, rate);
            info!(
                records = r.records,
                distinct = r.distinct,
                rate,
                e2e_p99_ms = e2e_p99.unwrap_or(0.0),
                eta_s,
                "consumer progress"
            );
        }
        last = (now, r);
    }
}

/// The bars being drawn, so that log writes can hide them for a moment.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Runs `f` with the progress bars (if any are drawn) hidden, then redraws them.
pub fn suspend_bars<R>(f: impl FnOnce() -> R) -> R {
    let bars = BARS.lock().expect("poisoned").clone();
    match bars {
        Some(multi) => multi.suspend(f),
        None => f(),
    }
}

/// Standard output that hides the progress bars while each write goes out; a `MakeWriter` for
/// tracing-subscriber (`.with_writer(bar_safe_stdout)`), which writes one whole line per call.
pub fn bar_safe_stdout() -> BarSafeStdout {
    BarSafeStdout
}

/// See [`bar_safe_stdout`].
#[derive(Debug, Clone, Copy)]
pub struct BarSafeStdout;

impl Write for BarSafeStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        suspend_bars(|| std::io::stdout().write_all(buf)).map(|()| buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

fn new_bar(multi: &MultiProgress, label: &str, total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::new(n),
            "{prefix:>7} [{bar:20}] {pos}/{len} {msg} eta {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{prefix:>7} {spinner} {pos} {msg} [{elapsed}]",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ");
    let bar = multi.add(bar.with_style(style));
    bar.set_prefix(label.to_string());
    bar
}

/// Messages per second over the last second or so.
struct RateWindow(VecDeque<(Instant, u64)>);

impl RateWindow {
    fn push(&mut self, at: Instant, count: u64) -> f64 {
        self.0.push_back((at, count));
        while self.0.len() > 2 && at.duration_since(self.0[0].0) > Duration::from_secs(1) {
            self.0.pop_front();
        }
        let (t0, c0) = self.0[0];
        let dt = at.duration_since(t0).as_secs_f64();
        if dt > 0.0 {
            count.saturating_sub(c0) as f64 / dt
        } else {
            0.0
        }
    }
}

fn ms_text(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}ms"))
}

async fn bars(
    plan: Plan,
    producer: Option<Arc<ProducerShared>>,
    consumer: Option<Arc<ConsumerShared>>,
    stop: CancellationToken,
) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
    *BARS.lock().expect("poisoned") = Some(multi.clone());
    let pbar = producer
        .as_ref()
        .map(|_| new_bar(&multi, "produce", plan.produce_total));
    let cbar = consumer
        .as_ref()
        .map(|_| new_bar(&multi, "consume", plan.consume_total));
    let mut produce_rate = RateWindow(VecDeque::new());
    let mut consume_rate = RateWindow(VecDeque::new());
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut p99 = (None, None);
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let r = read(&producer, &consumer);
        if tick.is_multiple_of(5) {
            p99 = p99s(&producer, &consumer);
        }
        tick += 1;
        if let Some(bar) = &pbar {
            let rate = produce_rate.push(now, r.acked);
            bar.set_position(r.acked);
            bar.set_message(format!("{rate:.0}/s ack p99 {}", ms_text(p99.0)));
        }
        if let Some(bar) = &cbar {
            let rate = consume_rate.push(now, r.records);
            bar.set_position(r.distinct);
            bar.set_message(format!("{rate:.0}/s e2e p99 {}", ms_text(p99.1)));
        }
    }
    *BARS.lock().expect("poisoned") = None;
    for bar in pbar.iter().chain(cbar.iter()) {
        bar.finish_and_clear();
    }
    let _ = multi.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_safe_stdout_writes_whole_buffers_with_or_without_bars() {
        assert_eq!(suspend_bars(|| 7), 7);
        let mut w = bar_safe_stdout();
        assert_eq!(w.write(b"").unwrap(), 0);
        w.flush().unwrap();
    }

    #[test]
    fn eta_follows_the_rate_and_needs_a_total() {
        assert_eq!(eta_secs(500, Some(1500), 100.0), Some(10.0));
        assert_eq!(eta_secs(500, None, 100.0), None);
        assert_eq!(eta_secs(500, Some(1500), 0.0), None);
    }

    #[test]
    fn rate_window_measures_about_the_last_second() {
        let t0 = Instant::now();
        let mut w = RateWindow(VecDeque::new());
        assert_eq!(w.push(t0, 0), 0.0);
        assert_eq!(w.push(t0 + Duration::from_millis(500), 500), 1000.0);
        w.push(t0 + Duration::from_millis(1000), 1000);
        // Slows down: the first readings drop out of the window.
        let r = w.push(t0 + Duration::from_millis(2500), 1100);
        assert!(r < 100.0, "{r}");
    }
}
