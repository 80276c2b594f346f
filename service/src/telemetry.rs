//! Logs and traces.
//!
//! Logs go to stderr (`RUST_LOG` filters, `LOG_FORMAT=json` for JSON lines).
//! Spans are always OpenTelemetry spans, so a command's W3C `traceparent`
//! exists to be stored in the outbox and continued by the projector; they
//! leave the process only when an exporter is configured, by the standard
//! variables:
//! - `OTEL_TRACES_EXPORTER=otlp` (or `OTEL_EXPORTER_OTLP_ENDPOINT` set):
//!   OTLP over HTTP/protobuf to `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (default `http://localhost:4318`), batched on a background thread;
//! - `OTEL_TRACES_EXPORTER=console`: each span as text on stdout;
//! - otherwise (`none`, unset): not exported.
//!
//! [`Telemetry`] flushes and shuts the exporter down when dropped: keep it
//! alive in `main` until the end.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider; flushes pending spans on drop.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Which exporter the environment asks for.
fn exporter_choice() -> &'static str {
    match std::env::var("OTEL_TRACES_EXPORTER").as_deref() {
        Ok("otlp") => "otlp",
        Ok("console") => "console",
        Ok(_) => "none",
        Err(_) if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() => "otlp",
        Err(_) => "none",
    }
}

/// A tracer provider for `service`, exporting as the environment says.
pub fn provider(service: &'static str) -> SdkTracerProvider {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    match exporter_choice() {
        "otlp" => match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder.with_batch_exporter(exporter).build(),
            Err(e) => {
                eprintln!("warning: OTLP exporter not available ({e}); spans are not exported");
                builder.build()
            }
        },
        "console" => builder
            .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
            .build(),
        _ => builder.build(),
    }
}

/// The OpenTelemetry layer for a subscriber, from `provider`.
pub fn layer<S>(provider: &SdkTracerProvider, service: &'static str) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Only what a trace needs: no per-poll timing, no code location or
    // thread attributes (each costs work on every command and event).
    tracing_opentelemetry::layer()
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_tracer(provider.tracer(service))
}

/// Installs logging and tracing for the process (see the module docs).
pub fn init(service: &'static str, default_filter: &str) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let provider = provider(service);
    // Colours only on a terminal: the local stack sends logs to files.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    // Spans are recorded whatever the log filter says: the filter applies to
    // the log output only.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(layer(&provider, service))
        .try_init();
    Telemetry { provider }
}

/// The W3C `traceparent` of `span`, if it belongs to a sampled trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span that `traceparent` names (a
/// malformed or empty value leaves it a root span).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}
