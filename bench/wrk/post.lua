-- POST one fixed JSON body (a MinIO webhook body's size) on every request.
-- Prints a JSON summary the harness reads.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
wrk.body = '{"EventName":"s3:ObjectCreated:Put","Key":"uploads/prj_0123456789abcdef/' ..
  'tenant_1/upl_0123456789abcdef01234567/report.pdf","Records":[{"eventVersion":"2.0",' ..
  '"eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put"}]}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"status_errors":%d,' ..
    '"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
