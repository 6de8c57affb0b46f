-- POST one fixed JSON body (a MinIO webhook body's size) on every request.
-- Prints a JSON summary the harness reads (summary.lua).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
wrk.body = '{"EventName":"s3:ObjectCreated:Put","Key":"uploads/prj_0123456789abcdef/' ..
  'tenant_1/upl_0123456789abcdef01234567/report.pdf","Records":[{"eventVersion":"2.0",' ..
  '"eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put"}]}'

dofile("summary.lua")  -- done(): the summary line
