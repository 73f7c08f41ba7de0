//! Traces: the HTTP request span ([`http_span`], [`traced`]; always compiled: a plain
//! `tracing` span) and, with the `otel` feature and an `[otel]` table in the config, their
//! export over OTLP/HTTP (protobuf) through `tracing-opentelemetry`.
//!
//! ```toml
//! [otel]
//! endpoint = "http://127.0.0.1:4318"  # an OTLP/HTTP receiver; /v1/traces is appended
//! service_name = "toka-node"          # optional (the default)
//! ```
//!
//! Without the table nothing is exported and the spans stay disabled by the log filter
//! (they are `INFO`; the default filter is `warn`). With it, every span of the `toka*`
//! crates at `INFO` goes to the exporter, whatever `log` says (the log filter governs
//! stderr only). The exporter batches spans on its own thread (the OpenTelemetry SDK's
//! `OTEL_BSP_*` variables tune it, e.g. `OTEL_BSP_SCHEDULE_DELAY` in ms); a graceful
//! shutdown flushes it.
//!
//! A request's W3C `traceparent` header makes its span a child of the caller's; the
//! message records it journals keep the trace context ([`toka_actors::TracePropagator`],
//! implemented here over `tracing-opentelemetry`), so one trace shows the request, the
//! durable append and the handling, and a handling after a crash links to it.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// `[otel]` in the config file.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtelConfig {
    /// The OTLP/HTTP receiver's base URL (`http://HOST:4318`), or the full traces URL
    /// (ending in `/v1/traces`).
    pub(crate) endpoint: String,
    /// The `service.name` resource attribute. Default: `toka-node`.
    pub(crate) service_name: Option<String>,
}

/// The span of one HTTP request (`http.request.method`, `http.route`,
/// `http.response.status_code`, after OpenTelemetry's HTTP conventions; never the query
/// string, a header or the body), a child of the request's `traceparent` if it has one.
pub(crate) async fn http_span(request: Request, next: Next) -> Response {
    traced(request, |request| next.run(request)).await
}

/// Runs `handle` on `request` inside the request's span (see [`http_span`]), for a layer
/// that does more around the rest of the stack than open the span.
pub(crate) async fn traced<F, Fut>(request: Request, handle: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    // Borrowed: the fields are read (and the name formatted) only if the span is enabled,
    // so a node without `[otel]` pays no allocation here.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return handle(request).await;
    }
    #[cfg(feature = "otel")]
    if let Some(parent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(toka_actors::TraceContext::from_traceparent)
    {
        exporter::set_remote_parent(&span, &parent);
    }
    let response = tracing::Instrument::instrument(handle(request), span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

#[cfg(feature = "otel")]
pub(crate) use exporter::{Telemetry, TraceContextCarrier};

/// Nothing to flush in a build without the `otel` feature.
#[cfg(not(feature = "otel"))]
pub(crate) struct Telemetry;

#[cfg(not(feature = "otel"))]
impl Telemetry {
    /// Nothing to do.
    pub(crate) fn shutdown(self) {}
}

/// Refuses an `[otel]` table in a build without the feature.
#[cfg(not(feature = "otel"))]
pub(crate) fn unsupported(config: Option<&OtelConfig>) -> anyhow::Result<()> {
    match config {
        Some(_) => {
            anyhow::bail!("[otel] is set, but this toka-node was built without the `otel` feature")
        }
        None => Ok(()),
    }
}

#[cfg(feature = "otel")]
mod exporter {
    use anyhow::Context as _;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    };
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use toka_actors::{TraceContext, TracePropagator};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::Layer;

    use super::OtelConfig;

    /// The spans exported: the Toka crates' at `INFO` and above (the node's own HTTP
    /// spans included), warnings from anything.
    const EXPORT_FILTER: &str =
        "warn,toka_node=info,toka_actors=info,toka_tools=info,toka_store=info,toka=info";

    /// The tracer provider; [`Telemetry::shutdown`] flushes it.
    pub(crate) struct Telemetry {
        provider: SdkTracerProvider,
    }

    impl Telemetry {
        /// Builds the exporter for `config` and the tracing layer feeding it.
        pub(crate) fn start<S>(
            config: &OtelConfig,
        ) -> anyhow::Result<(Telemetry, Box<dyn Layer<S> + Send + Sync>)>
        where
            S: tracing::Subscriber
                + for<'a> tracing_subscriber::registry::LookupSpan<'a>
                + Send
                + Sync,
        {
            let endpoint = config.endpoint.trim_end_matches('/');
            let endpoint = if endpoint.ends_with("/v1/traces") {
                endpoint.to_owned()
            } else {
                format!("{endpoint}/v1/traces")
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&endpoint)
                .build()
                .with_context(|| format!("[otel] endpoint = {:?}", config.endpoint))?;
            let name = config
                .service_name
                .clone()
                .unwrap_or_else(|| "toka-node".to_owned());
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name(name)
                        .with_attribute(opentelemetry::KeyValue::new(
                            "service.version",
                            env!("CARGO_PKG_VERSION"),
                        ))
                        .build(),
                )
                .build();
            let tracer = provider.tracer("toka-node");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_filter(tracing_subscriber::EnvFilter::new(EXPORT_FILTER))
                .boxed();
            Ok((Telemetry { provider }, layer))
        }

        /// Exports what is left and stops the exporter.
        pub(crate) fn shutdown(self) {
            if let Err(error) = self.provider.shutdown() {
                eprintln!("toka-node: flushing the trace exporter: {error}");
            }
        }
    }

    /// Trace context between `tracing` spans (through `tracing-opentelemetry`) and
    /// Toka's message records.
    pub(crate) struct TraceContextCarrier;

    impl TracePropagator for TraceContextCarrier {
        fn context_of(&self, span: &tracing::Span) -> Option<TraceContext> {
            let context = span.context();
            let span_context = context.span().span_context().clone();
            span_context.is_valid().then(|| TraceContext {
                trace_id: span_context.trace_id().to_bytes(),
                span_id: span_context.span_id().to_bytes(),
                flags: span_context.trace_flags().to_u8(),
            })
        }

        fn continue_trace(&self, span: &tracing::Span, sent: &TraceContext, recovered: bool) {
            if recovered {
                // The send was in another process's life: a new trace, linked to it.
                span.add_link(remote(sent));
            } else {
                set_remote_parent(span, sent);
            }
        }
    }

    /// The span context `sent` describes, as a remote one.
    fn remote(sent: &TraceContext) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(sent.trace_id),
            SpanId::from_bytes(sent.span_id),
            TraceFlags::new(sent.flags),
            true,
            TraceState::default(),
        )
    }

    /// Makes `span` (not yet entered) a child of the remote span `parent`.
    pub(crate) fn set_remote_parent(span: &tracing::Span, parent: &TraceContext) {
        let context = opentelemetry::Context::new().with_remote_span_context(remote(parent));
        let _ = span.set_parent(context);
    }
}
