#!/usr/bin/env bash
# End-to-end throughput harness: weir pinned to CPU 0, weir-loadgen (sender and counting sink)
# on CPU 1. For each path it saturates weir (rate 0, several connections, 512 items per
# request), checks sent == received, and samples weir's RSS idle and at saturation; the first
# path is run again at half its saturated rate to measure added latency (p99).
#
#   benches/e2e.sh [SECONDS]      (default 10 seconds per path)
#   ONLY="persistent queue" benches/e2e.sh 6     (only the rows whose name contains ONLY)
#   PERF_OUT=/tmp/weir.perf ONLY=... benches/e2e.sh 6   (perf record of weir during the row)
#   RSS_LOG=/tmp/rss.txt ONLY=spanmetrics benches/e2e.sh 600   (RSS every second: memory over time)
#   ROTEL=/path/to/rotel-agent ONLY="gzip in → batch" benches/e2e.sh 6   (Rotel side by side;
#     pip install --pre rotel puts rotel-agent in site-packages/rotel/)
#
# Prints a Markdown table (also written to target/e2e-results.md). Needs taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
CONNS="${CONNS:-4}"
BATCH="${BATCH:-512}"
WEIR_CPU="${WEIR_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"

cargo build --release --bins >&2
WEIR="${WEIR_BIN:-target/release/weir}"   # WEIR_BIN=path: measure another build with the same harness
LOADGEN=target/release/weir-loadgen
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
json() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(d'"$1"')'; }

# Certificates for the TLS rows: one CA, a certificate for 127.0.0.1 used by weir and the sink.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$WORK/ca-key.pem" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/csr.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$WORK/san.cnf"
openssl x509 -req -in "$WORK/csr.pem" -CA "$WORK/ca.pem" -CAkey "$WORK/ca-key.pem" -CAcreateserial \
  -days 2 -extfile "$WORK/san.cnf" -out "$WORK/cert.pem" 2>/dev/null

ROWS=()
# run NAME SIGNAL PROCESSORS EXPORTER_KIND [LOADGEN ARGS...]
# TLS_IN=1: the client speaks TLS to weir; TLS_OUT=1: weir speaks TLS to the sink.
run() {
  local name="$1" signal="$2" procs="$3" exporter="$4"; shift 4
  if [ -n "${ONLY:-}" ] && [[ "$name" != *"$ONLY"* ]]; then return 0; fi
  local grpc httpp sinkp; grpc=$(port); httpp=$(port); sinkp=$(port)
  local exp rtls="" etls="tls: {insecure: true}" send_tls=() sink_tls=()
  if [ "${TLS_IN:-0}" = 1 ]; then
    rtls=", tls: {cert_file: \"$WORK/cert.pem\", key_file: \"$WORK/key.pem\"}"
    send_tls=(--tls-ca "$WORK/ca.pem")
  fi
  if [ "${TLS_OUT:-0}" = 1 ]; then
    etls="tls: {ca_file: \"$WORK/ca.pem\"}"
    sink_tls=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
  fi
  case "$exporter" in
    otlp) exp="otlp:
    endpoint: 127.0.0.1:$sinkp
    $etls
    compression: none" ;;
    otlp-default) exp="otlp:
    endpoint: 127.0.0.1:$sinkp
    $etls" ;;
    otlp-zstd) exp="otlp:
    endpoint: 127.0.0.1:$sinkp
    $etls
    compression: zstd" ;;
    otlphttp-default) exp="otlphttp:
    endpoint: http://127.0.0.1:$sinkp" ;;
    otlp-wal) exp="otlp:
    endpoint: 127.0.0.1:$sinkp
    $etls
    compression: none
    sending_queue: {storage: file_storage/q}" ;;
    lb) exp="loadbalancing:
    routing_key: traceID
    protocol: {otlp: {compression: none, tls: {insecure: true}}}
    resolver: {static: {hostnames: [\"127.0.0.1:$sinkp\"]}}" ;;
    prw) exp="prometheusremotewrite:
    endpoint: http://127.0.0.1:$sinkp/api/v1/write" ;;
    loki) exp="loki:
    endpoint: http://127.0.0.1:$sinkp/loki/api/v1/push
    labels: {resource: {service.name: service_name}}" ;;
  esac
  local expid="${exporter/prw/prometheusremotewrite}"
  expid="${expid/otlp-wal/otlp}"
  expid="${expid/lb/loadbalancing}"
  expid="${expid/otlp-default/otlp}"
  expid="${expid/otlp-zstd/otlp}"
  expid="${expid/otlphttp-default/otlphttp}"
  # The persistent queue's rows: a file_storage directory of their own (WAL_FSYNC=true syncs).
  local ext="" svcext=""
  if [ "$exporter" = otlp-wal ]; then
    ext="extensions:
  file_storage/q: {directory: \"$WORK/wal-$grpc\", create_directory: true, fsync: ${WAL_FSYNC:-false}}"
    svcext="extensions: [file_storage/q]"
  fi
  # SPANMETRICS=1: the traces also go to a spanmetrics connector (5 dimensions, exemplars)
  # whose RED metrics go to the same sink; received counts the spans.
  local conn="" pipes="$signal: {receivers: [otlp], processors: [$procs], exporters: [$expid]}"
  if [ "${SPANMETRICS:-0}" = 1 ]; then
    conn="connectors:
  spanmetrics:
    dimensions:
      - {name: http.method}
      - {name: http.route}
      - {name: host.name}
      - {name: deployment.environment, default: prod}
      - {name: gen_ai.tool.name, default: none}
    exemplars: {enabled: true}
    metrics_flush_interval: 1s"
    pipes="$signal: {receivers: [otlp], processors: [$procs], exporters: [spanmetrics, $expid]}
    metrics/red: {receivers: [spanmetrics], exporters: [$expid]}"
  fi
  cat > "$WORK/cfg.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:$grpc", max_recv_msg_size_mib: 64$rtls}
      http: {endpoint: "127.0.0.1:$httpp"}
processors:
  batch: {timeout: 200ms}
  tenant: {sources: [{static: team-a}]}
  filter/health:
    traces:
      span: ['attributes["http.route"] == "/health"', 'IsMatch(name, "^readiness")']
  transform/redact:
    trace_statements:
      - 'replace_pattern(span.attributes["http.route"], "/api/(.*)", "/api/{redacted}")'
  tail_sampling:
    decision_wait: 1s
    num_traces: 200000
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 500}}
      - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 10}}
$ext
$conn
exporters:
  $exp
service:
  $svcext
  telemetry: {metrics: {level: none}}
  pipelines:
    $pipes
EOF
  # shellcheck disable=SC2086 # SINK_EXTRA is a list of arguments
  taskset -c "$LOAD_CPU" "$LOADGEN" sink --listen "127.0.0.1:$sinkp" --idle 3s "${sink_tls[@]}" ${SINK_EXTRA:-} > "$WORK/sink.json" 2>/dev/null &
  local sinkpid=$!
  wait_port "$sinkp"
  if [ "${ENGINE:-weir}" = rotel ]; then
    # The same load through Rotel (its gRPC receiver, its batching, its OTLP exporter with
    # gzip), for a side-by-side figure; HTTP receiver on the unused port.
    taskset -c "$WEIR_CPU" "$ROTEL" start --otlp-grpc-endpoint "127.0.0.1:$grpc" \
      --otlp-http-endpoint "127.0.0.1:$httpp" --exporter otlp \
      --otlp-exporter-endpoint "http://127.0.0.1:$sinkp" --otlp-exporter-compression gzip \
      2> "$WORK/weir.log" > /dev/null &
  else
    taskset -c "$WEIR_CPU" "$WEIR" --config "$WORK/cfg.yaml" 2> "$WORK/weir.log" &
  fi
  local weirpid=$!
  wait_port "$grpc"
  sleep 1
  local idle; idle=$(rss_kib $weirpid)
  # RSS_LOG=file: weir's RSS every second ("seconds KiB"), to see memory stay flat on long runs.
  ( peak=0; n=0; while kill -0 $weirpid 2>/dev/null; do r=$(rss_kib $weirpid); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo $peak > "$WORK/peak"
      n=$((n+1)); if [ -n "${RSS_LOG:-}" ] && [ $((n % 5)) = 0 ]; then echo "$((n/5)) $r" >> "$RSS_LOG"; fi; sleep 0.2; done ) &
  local sampler=$!
  # PERF_OUT=file: a CPU profile of weir during the run (perf report -i file).
  if [ -n "${PERF_OUT:-}" ]; then perf record -F 499 -g -p $weirpid -o "$PERF_OUT" -- sleep "$SECS" 2>/dev/null & fi
  local target="127.0.0.1:$grpc" proto=grpc
  if [ "${PROTO:-grpc}" = http ]; then target="127.0.0.1:$httpp"; proto=http; fi
  taskset -c "$LOAD_CPU" "$LOADGEN" send --endpoint "$target" --protocol "$proto" --signal "$signal" --duration "${SECS}s" --conns "$CONNS" --batch "$BATCH" "${send_tls[@]}" "$@" > "$WORK/send.json"
  sleep 1.5   # batch timeouts, tail-sampling decisions
  kill -TERM $weirpid; wait $weirpid 2>/dev/null || true
  kill $sampler 2>/dev/null || true
  wait $sinkpid 2>/dev/null || true
  local sent rate p50 p99 got peak
  sent=$(json '["sent_items"]' < "$WORK/send.json")
  rate=$(json '["items_per_sec"]' < "$WORK/send.json")
  p50=$(json '["p50_ms"]' < "$WORK/send.json")
  p99=$(json '["p99_ms"]' < "$WORK/send.json")
  case "$exporter" in
    otlp*|lb) got=$(json "[\"$signal\"]" < "$WORK/sink.json") ;;
    prw) got=$(json '["remote_write_samples"]' < "$WORK/sink.json") ;;
    loki) got=$(json '["loki_entries"]' < "$WORK/sink.json") ;;
  esac
  peak=$(cat "$WORK/peak" 2>/dev/null || echo 0)
  ROWS+=("| $name | $(printf "%'.0f" "$rate") | $sent | $got | $p50 / $p99 | $((idle/1024)) / $((peak/1024)) |")
  LAST_RATE=$rate
  echo "done: $name ($rate items/s)" >&2
}

run "traces pass-through, small spans" traces "" otlp
SAT=${LAST_RATE:-0}
TLS_IN=1 TLS_OUT=1 run "traces pass-through, small spans, TLS in and out" traces "" otlp
TLS_IN=1 run "traces pass-through, small spans, TLS in only" traces "" otlp
run "traces pass-through, large spans" traces "" otlp --shape large
run "traces pass-through, small, client gzip" traces "" otlp --gzip
run "traces pass-through, small, client zstd" traces "" otlp --zstd
run "traces + batch" traces "batch" otlp
# The paths users run with defaults: the otlp and otlphttp exporters compress with gzip unless
# told otherwise, and agents send gzip.
run "gateway defaults: gzip in → batch → gzip out, gRPC" traces "batch" otlp-default --gzip
PROTO=http run "gateway defaults: gzip in → batch → gzip out, OTLP/HTTP protobuf" traces "batch" otlphttp-default --gzip
# ROTEL=/path/to/rotel-agent: the gRPC defaults row again through Rotel, side by side.
if [ -n "${ROTEL:-}" ]; then
  ENGINE=rotel run "Rotel $("$ROTEL" --version | awk '{print $2}'): gzip in → batch → gzip out, gRPC" traces "batch" otlp-default --gzip
fi
run "gzip in → tenant tagging + batch → gzip out, gRPC" traces "tenant, batch" otlp-default --gzip
run "zstd in → batch → zstd out, gRPC" traces "batch" otlp-zstd --zstd
PROTO=http run "OTLP/JSON in (HTTP) → batch → protobuf out" traces "batch" otlp --json
SINK_EXTRA="--delay 50ms" run "slow backend (50 ms), gzip in → batch → gzip out, defaults" traces "batch" otlp-default --gzip
run "traces + tenant tagging + batch" traces "tenant, batch" otlp
run "traces + filter (2 conditions, no span matches) + batch" traces "filter/health, batch" otlp
run "traces + transform (redacts one attribute of every span) + batch" traces "transform/redact, batch" otlp
run "traces + filter + transform + batch (the two in a row)" traces "filter/health, transform/redact, batch" otlp
run "traces + batch, persistent queue (file_storage, fsync off)" traces "batch" otlp-wal
WAL_FSYNC=true run "traces + batch, persistent queue (file_storage, fsync on)" traces "batch" otlp-wal
run "traces + tail sampling (3 policies, 1 s) + batch" traces "tail_sampling, batch" otlp
SPANMETRICS=1 run "traces → spanmetrics (5 dimensions, exemplars) and → batch → otlp" traces "batch" otlp
run "traces → loadbalancing by trace id (tier 1, static resolver)" traces "" lb
run "metrics → remote write (data points)" metrics "batch" prw
run "logs → Loki, protobuf+snappy (records)" logs "batch" loki
# A slow backend (each request answered 500 ms late) under 16 connections of large spans,
# default settings: memory stays within the memory budget (128 MiB of held data) plus
# overhead; clients are refused (retryable) and nothing acknowledged is lost.
CONNS=16 SINK_EXTRA="--delay 500ms" run "slow backend (500 ms), large spans, 16 conns, defaults" traces "batch" otlp --shape large
HALF=$(python3 -c "print(int(float('$SAT')/2))")
run "traces pass-through at half saturation ($HALF/s): latency" traces "" otlp --rate "$HALF"

{
  echo "| path | items/s | sent | received | p50 / p99 ms | RSS idle / peak MiB |"
  echo "| --- | ---: | ---: | ---: | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
} | tee target/e2e-results.md
