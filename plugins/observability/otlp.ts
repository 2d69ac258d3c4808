/**
 * The OpenTelemetry SDK behind the API, exporting spans over OTLP/HTTP in batches. Only a
 * gateway configured with an endpoint loads it (a dynamic import): without one, nothing of
 * the SDK is even read, and the API stays a no-op.
 */
import { ProxyTracerProvider } from '@opentelemetry/api'

export interface OtlpOptions {
  /** Full URL of the traces endpoint (`.../v1/traces`). */
  url: string
  serviceName: string
  version: string
  /** Share of new traces recorded; a request that arrives with a sampled parent follows it. */
  sampleRatio: number
  /** Called when the SDK cannot be loaded; tracing then stays off. */
  onError: (error: unknown) => void
}

export interface OtlpTracing {
  /** Hands spans to the SDK once it is loaded; spans before that are no-ops. */
  provider: ProxyTracerProvider
  /** Exports the spans still buffered and stops the exporter. */
  shutdown(): Promise<void>
}

export function otlpTracing({ url, serviceName, version, sampleRatio, onError }: OtlpOptions): OtlpTracing {
  const provider = new ProxyTracerProvider()
  const loaded = (async () => {
    const [sdk, { OTLPTraceExporter }, { resourceFromAttributes }, semconv] = await Promise.all([
      import('@opentelemetry/sdk-trace-base'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/semantic-conventions'),
    ])
    const sdkProvider = new sdk.BasicTracerProvider({
      resource: resourceFromAttributes({
        [semconv.ATTR_SERVICE_NAME]: serviceName,
        [semconv.ATTR_SERVICE_VERSION]: version,
      }),
      sampler: new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(sampleRatio) }),
      spanProcessors: [new sdk.BatchSpanProcessor(new OTLPTraceExporter({ url }))],
    })
    provider.setDelegate(sdkProvider)
    return sdkProvider
  })()
  loaded.catch(onError)
  return {
    provider,
    async shutdown() {
      const sdkProvider = await loaded.catch(() => null)
      await sdkProvider?.shutdown()
    },
  }
}
