"""The HTTP API: app factory, schemas, thin handlers, errors turned into JSON in one middleware."""
