//! Thin launcher for the Tansu Kafka-protocol broker used by the local stack.
//! `tansu broker ...` runs the broker; `tansu topic create ...` manages topics.
use tansu_broker::TracingFormat;
use tansu_sans_io::ErrorCode;

#[tokio::main]
async fn main() -> Result<ErrorCode, tansu_cli::Error> {
    // Keep the tracing guard alive for the whole run so logs are flushed.
    let _guard = tansu_broker::otel::init(TracingFormat::Text)?;
    tansu_cli::Cli::main().await
}
