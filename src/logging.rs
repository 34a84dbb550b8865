//! Log lines in client.py's format, `2024-01-20 14:53:39,744 INFO [__main__] (MainThread)
//! (produce_message) Message published ...`, on stdout (one write per line, so each line is out
//! before a SIGKILL can lose it) and, with --log-file, in a file too.
//!
//! Our own events show `[__main__]`; librdkafka's show `[librdkafka]` with its facility as the
//! function. Structured fields follow the message as `key=value`. The level comes from RUST_LOG
//! (default `info`).
//!
//! `--log-format json` writes one JSON object per line instead, for log shippers:
//! `{"time":"2024-01-20T14:53:39.744+00:00","level":"INFO","target":"kafka_workload::kafka::producer",
//! "thread":"MainThread","message":"...","fields":{"sent":100}}`.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use time::UtcOffset;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Formats events the way Python's logging did for client.py.
pub struct PyFormat {
    offset: UtcOffset,
}

#[derive(Default)]
struct Fields {
    message: String,
    func: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "func" | "fac" => self.func = Some(value.to_string()),
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "func" | "fac" => self.func = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The thread as Python's logging names it: the main thread is `MainThread`.
fn thread_label(thread: &std::thread::Thread) -> &str {
    match thread.name() {
        Some("main") | None => "MainThread",
        Some(n) => n,
    }
}

impl<S, N> FormatEvent<S, N> for PyFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let now = time::OffsetDateTime::now_utc().to_offset(self.offset);
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let name = if meta.target() == "librdkafka" {
            "librdkafka"
        } else {
            "__main__"
        };
        let thread = std::thread::current();
        let thread_name = thread_label(&thread);
        let func = fields.func.as_deref().unwrap_or_else(|| {
            meta.module_path()
                .and_then(|m| m.rsplit("::").next())
                .unwrap_or("<module>")
        });
        writeln!(
            w,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03} {} [{}] ({}) ({}) {}{}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond(),
            level_name(meta.level()),
            name,
            thread_name,
            func,
            fields.message,
            fields.rest
        )
    }
}

/// Which line format `--log-format` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// client.py's lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `text` or `json` (clap has checked the value).
    pub fn parse(s: &str) -> LogFormat {
        if s.eq_ignore_ascii_case("json") {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Formats events as one JSON object per line.
pub struct JsonFormat {
    offset: UtcOffset,
}

#[derive(Default)]
struct JsonFields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            match value {
                serde_json::Value::String(s) => self.message.push_str(&s),
                other => self.message.push_str(&other.to_string()),
            }
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let now = time::OffsetDateTime::now_utc().to_offset(self.offset);
        let meta = event.metadata();
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let thread = std::thread::current();
        let line = serde_json::json!({
            "time": now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "level": level_name(meta.level()),
            "target": meta.target(),
            "thread": thread_label(&thread),
            "message": fields.message,
            "fields": fields.fields,
        });
        writeln!(w, "{line}")
    }
}

/// Installs the global subscriber. Call before any thread is started (the local UTC offset can
/// only be read safely then).
pub fn init(log_file: Option<&Path>, format: LogFormat) -> anyhow::Result<()> {
    let offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    match format {
        LogFormat::Text => install(log_file, PyFormat { offset }),
        LogFormat::Json => install(log_file, JsonFormat { offset }),
    }
}

fn install<F>(log_file: Option<&Path>, format: F) -> anyhow::Result<()>
where
    F: for<'w> FormatEvent<
            tracing_subscriber::Registry,
            tracing_subscriber::fmt::format::DefaultFields,
        > + Send
        + Sync
        + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .event_format(format)
        .with_env_filter(filter);
    match log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| crate::error::ConfigError::Unreadable {
                    what: "log file (--log-file)".into(),
                    path: path.to_path_buf(),
                    cause: e,
                })?;
            builder
                .with_writer(crate::report::progress::bar_safe_stdout.and(Mutex::new(file)))
                .try_init()
        }
        None => builder
            .with_writer(crate::report::progress::bar_safe_stdout)
            .try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
