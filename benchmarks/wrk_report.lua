-- Print wrk's own totals as one JSON line, so run.py need not parse the text report.
done = function(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "bytes": %d, "duration_us": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"timeouts": %d, "non_2xx_3xx": %d, '
      .. '"latency_p50_us": %d, "latency_p99_us": %d}\n',
    summary.requests, summary.bytes, summary.duration,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(99)))
end
