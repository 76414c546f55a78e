//! Log lines on stderr: human-readable text, or one JSON object per line
//! shaped for Google Cloud Logging ([`CloudJson`]).
//!
//! A JSON line carries `time` (RFC 3339, UTC), `severity` in Cloud
//! Logging's spelling (`DEBUG`, `INFO`, `WARNING`, `ERROR`), `message` and
//! `target` at the top level, then the event's fields as JSON values:
//! integers and floats as numbers, booleans as booleans, errors as the
//! text of their whole cause chain, anything else (`%display`, `?debug`)
//! as a string. A field whose name is one of those four keys is written as
//! `fields.<name>`. The runtime opens no spans, so none are written.
//!
//! ```json
//! {"time":"2026-01-01T00:00:00.000001Z","severity":"WARNING","message":"action failed","target":"ggen_runtime::actuator::dispatcher","tenant":"acme","action":"throttle","ok":false,"attempts":4}
//! ```

use std::fmt::{self, Write as _};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, as Cloud Logging reads it ([`CloudJson`]).
    Json,
}

/// The keys every JSON line starts with; event fields of the same name are
/// written as `fields.<name>`.
const RESERVED: [&str; 4] = ["time", "severity", "message", "target"];

/// Installs the global log subscriber on stderr in `format`, filtered by
/// `RUST_LOG` (default `info`); once per process, later calls keep the first.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.event_format(CloudJson).try_init(),
    };
}

/// Cloud Logging's name of `level` (it has no trace: trace is `DEBUG`).
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Formats each event as one JSON object (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct CloudJson;

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let mut line = String::with_capacity(256);
        line.push('{');
        push_pair(&mut line, "time", &Value::String(time));
        push_pair(
            &mut line,
            "severity",
            &Value::from(severity(metadata.level())),
        );
        push_pair(
            &mut line,
            "message",
            &fields
                .message
                .take()
                .unwrap_or(Value::String(String::new())),
        );
        push_pair(&mut line, "target", &Value::from(metadata.target()));
        for (name, value) in &fields.values {
            if RESERVED.contains(&name.as_str()) {
                push_pair(&mut line, &format!("fields.{name}"), value);
            } else {
                push_pair(&mut line, name, value);
            }
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// Appends `"key":value` to an object being written (a comma first unless
/// it is the first pair).
fn push_pair(line: &mut String, key: &str, value: &Value) {
    if !line.ends_with('{') {
        line.push(',');
    }
    // Serializing a string or a `Value` to a `String` cannot fail.
    let _ = write!(
        line,
        "{}:{}",
        Value::from(key),
        serde_json::to_string(value).unwrap_or_default()
    );
}

/// An event's fields as JSON values, in the order they were recorded.
#[derive(Debug, Default)]
struct Fields {
    message: Option<Value>,
    values: Vec<(String, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(value);
        } else {
            self.values.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those stay readable as text.
        let json = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, json);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let json =
            i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, json);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let json =
            u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, json);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(crate::report::error_chain(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `format_args!` (the message) and `%display` values print their
        // text through `Debug`.
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` logs through [`CloudJson`], raw and parsed.
    fn logged(emit: impl FnOnce()) -> Vec<(String, serde_json::Map<String, Value>)> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(move || writer.clone())
            .event_format(CloudJson)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| match serde_json::from_str(line) {
                Ok(Value::Object(map)) => (line.to_owned(), map),
                other => panic!("not a json object: {line} ({other:?})"),
            })
            .collect()
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn severity_and_message_are_top_level_and_fields_keep_their_json_types() {
        let error = Outer(std::io::Error::other("inner"));
        let lines = logged(|| {
            tracing::warn!(
                tenant = %"acme",
                attempts = 4u32,
                elapsed_ms = 12u64,
                delta = -3i64,
                ratio = 0.5f64,
                ok = false,
                mode = ?Some(1),
                error = &error as &dyn std::error::Error,
                "action {} failed",
                "throttle"
            );
            tracing::info!(target = "shadowed", "hello");
            tracing::error!("bad");
            tracing::debug!("quiet");
            tracing::trace!("quieter");
        });
        let (raw, first) = &lines[0];
        // Cloud Logging's keys first, in this order, then the fields as recorded.
        let after_time = raw.split_once(r#"Z","#).unwrap().1;
        assert!(raw.starts_with(r#"{"time":""#), "{raw}");
        assert!(
            after_time.starts_with(&format!(
                r#""severity":"WARNING","message":"action throttle failed","target":"{}","tenant":"acme","attempts":4,"#,
                module_path!()
            )),
            "{raw}"
        );
        assert_eq!(first["severity"], "WARNING");
        assert_eq!(first["message"], "action throttle failed");
        assert_eq!(first["target"], module_path!());
        assert_eq!(first["tenant"], "acme");
        assert_eq!(first["attempts"], 4);
        assert_eq!(first["elapsed_ms"], 12);
        assert_eq!(first["delta"], -3);
        assert_eq!(first["ratio"], 0.5);
        assert_eq!(first["ok"], false);
        assert_eq!(first["mode"], "Some(1)");
        assert_eq!(first["error"], "outer: inner");
        let time = first["time"].as_str().unwrap();
        assert!(
            time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{time}"
        );
        let second = &lines[1].1;
        assert_eq!(second["severity"], "INFO");
        assert_eq!(second["fields.target"], "shadowed");
        assert_eq!(second["target"], module_path!());
        let severities: Vec<&Value> = lines.iter().map(|(_, l)| &l["severity"]).collect();
        assert_eq!(
            severities,
            ["WARNING", "INFO", "ERROR", "DEBUG", "DEBUG"]
                .map(Value::from)
                .iter()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn numbers_json_cannot_hold_are_written_as_text() {
        let lines =
            logged(|| tracing::info!(nan = f64::NAN, big = u128::MAX, small = -5i128, "edges"));
        let line = &lines[0].1;
        assert_eq!(line["nan"], "NaN");
        assert_eq!(line["big"], u128::MAX.to_string());
        assert_eq!(line["small"], -5);
    }
}
