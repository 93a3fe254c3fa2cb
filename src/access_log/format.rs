//! The log output: tracing-subscriber's `fmt` layer in the text or JSON
//! format (`logging.format`), as the binary installs it.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The `fmt` layer writing to `writer`: JSON objects with the event's fields
/// at the top level when `json`, otherwise text lines (with ANSI colours
/// when `ansi`). Events are printed without their target.
pub fn layer<S, W>(json: bool, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_writer(writer);
    if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.with_ansi(ansi).boxed()
    }
}
