"""What the tests share: the SMTP sink, real processes, polling waits, request bodies (payloads), times
(clock), rows (db), a blocking HTTP client (http), /metrics samples (metrics), a hanging Redis proxy
and free ports (net)."""
