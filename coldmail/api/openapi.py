"""/openapi.json: the OpenAPI 3 description, made by apispec from the marshmallow schemas that
validate the requests, so the description cannot drift from what the server checks."""

from __future__ import annotations

import functools

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from .. import __version__
from . import schemas as s
from . import inbound, suppressions
from .senders import SenderInSchema, SenderOutSchema
from .webhooks import (DeliveriesQuerySchema, DeliveriesSchema, TestResultSchema, WebhookCreatedSchema,
                       WebhookInSchema, WebhooksSchema)

DESCRIPTION = """Schedule email over HTTP; it is sent at its time, once, never pushing a sender past its cap.

Every endpoint but /healthz, /readyz, /metrics, /openapi.json and the unsubscribe links (/u/{token}, whose
token is their credential) needs `Authorization: Bearer <key>`.
Every key belongs to an account: it sees and changes that account's emails and senders only (another
account's are `404`, as if absent), and sender ids and idempotency keys are the account's own.
Every error is JSON: `{"error": "<code>", "message": "<human text>", "fields": {...}}`
(`fields` only for validation errors)."""

#: error responses by status: (component name, description)
ERRORS = {
    400: ("BadRequest", "A field is invalid, missing or unknown (`fields` names each; in a batch by index), "
                        "or the body is not valid JSON"),
    401: ("Unauthorized", "No API key, or not a valid one"),
    404: ("NotFound", "No email with this id in the key's account"),
    409: ("Conflict", "The email is not PENDING, or the idempotency key was used for a different email"),
    413: ("PayloadTooLarge", "The body is larger than the endpoint takes"),
    415: ("UnsupportedMediaType", "The body is not sent as the endpoint's type (application/json; "
                                  "message/rfc822 for /inbound)"),
    503: ("Unavailable", "PostgreSQL or Redis is unreachable; try again shortly"),
}
READ = (401, 503)
WRITE = (400, 401, 409, 413, 415, 503)


def _json(schema) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _body(schema) -> dict:
    return {"required": True, **_json(schema)}


def _errors(*statuses: int) -> dict:
    return {str(code): ERRORS[code][0] for code in statuses}


ID = {"name": "id", "in": "path", "required": True, "description": "the email's id (`jobId`)",
      "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": s.MAX_ID}}
PUBLIC: list = []  # `security: []`: no key needed


def _email_links(id_expression: str) -> dict:
    """Where a new email's id leads (OpenAPI links: clients and schemathesis follow them)."""
    return {name: {"operationId": operation, "parameters": {"id": id_expression}}
            for name, operation in (("GetEmail", "getEmail"), ("GetEmailEvents", "getEmailEvents"),
                                    ("CancelEmail", "cancelEmail"), ("RescheduleEmail", "rescheduleEmail"))}


def _schedule_operation(spec: APISpec, operation_id: str, summary: str) -> dict:
    key_header = spec.plugins[0].converter.field2property(s.ScheduleEmailSchema().fields["idempotencyKey"])
    for not_for_a_header in ("default", "nullable"):
        key_header.pop(not_for_a_header, None)
    scheduled = {**_json("Scheduled"), "links": _email_links("$response.body#/jobId")}
    return {
        "operationId": operation_id, "summary": summary, "tags": ["emails"],
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": key_header,
                        "description": "instead of the `idempotencyKey` field (if both: they must be equal)"}],
        "requestBody": _body(s.ScheduleEmailSchema),
        "responses": {
            "201": {"description": "Stored (committed to PostgreSQL) and scheduled", **scheduled},
            "200": {"description": "The idempotency key's email, stored before with the same payload",
                    **scheduled},
            **_errors(*WRITE)},
    }


def _email_paths(spec: APISpec) -> None:
    spec.path(path="/schedule-email", operations={"post": _schedule_operation(
        spec, "scheduleEmailSeed", "Schedule one email (the seed's route; the same as POST /emails)")})
    spec.path(path="/emails", operations={
        "post": _schedule_operation(spec, "scheduleEmail", "Schedule one email"),
        "get": {
            "operationId": "listEmails", "summary": "List emails, newest first, a page at a time", "tags": ["emails"],
            "parameters": [{"in": "query", "schema": s.ListEmailsQuerySchema}],
            "responses": {"200": {"description": "One page; `next` leads to the following one",
                                  **_json("EmailPage")}, **_errors(400, *READ)}},
    })
    spec.path(path="/emails/batch", operations={"post": {
        "operationId": "scheduleBatch", "tags": ["emails"],
        "summary": f"Schedule up to {s.MAX_BATCH} emails: every one stored, or none",
        "requestBody": _body(s.ScheduleBatchSchema),
        "responses": {
            "201": {"description": "Stored; ids in the order of `emails`", **_json("BatchScheduled"),
                    "links": _email_links("$response.body#/jobIds/0")},
            "200": {"description": "Every email was stored before (idempotency keys, same payloads)",
                    **_json("BatchScheduled")},
            **_errors(*WRITE)}}})
    spec.path(path="/emails/{id}", parameters=[ID], operations={
        "get": {"operationId": "getEmail", "summary": "One email's state", "tags": ["emails"],
                "responses": {"200": {"description": "The email", **_json("Email")}, **_errors(404, *READ)}},
        "patch": {"operationId": "rescheduleEmail", "summary": "Move a PENDING email to another time",
                  "tags": ["emails"], "requestBody": _body(s.RescheduleSchema),
                  "responses": {"200": {"description": "The email at its new time", **_json("Email")},
                                **_errors(404, *WRITE)}},
    })
    spec.path(path="/emails/{id}/cancel", parameters=[ID], operations={"post": {
        "operationId": "cancelEmail", "summary": "Cancel a PENDING email", "tags": ["emails"],
        "responses": {"200": {"description": "The email, now CANCELLED", **_json("Email")},
                      **_errors(404, 409, *READ)}}})
    spec.path(path="/emails/{id}/events", parameters=[ID], operations={"get": {
        "operationId": "getEmailEvents", "summary": "One email's audit log, oldest first", "tags": ["emails"],
        "responses": {"200": {"description": "created, queued, claimed, rate_limited, attempt_failed, sent, "
                                             "failed, lease_expired, released, cancelled, rescheduled, "
                                             "suppressed, bounced, deferred",
                              **_json("Events")}, **_errors(404, *READ)}}})


def _sender_paths(spec: APISpec) -> None:
    sender_id = {"name": "senderId", "in": "path", "required": True,
                 "schema": spec.plugins[0].converter.field2property(s.ScheduleEmailSchema().fields["senderId"])}
    spec.components.schema("SenderIn", schema=SenderInSchema)
    spec.components.schema("SenderOut", schema=SenderOutSchema)
    spec.path(path="/senders/{senderId}", parameters=[sender_id], operations={
        "put": {"operationId": "putSender", "summary": "Create or replace a sender: From address, cap, relay, pacing",
                "tags": ["senders"], "requestBody": _body("SenderIn"),
                "responses": {"200": {"description": "Replaced", **_json("SenderOut")},
                              "201": {"description": "Created", **_json("SenderOut")},
                              **_errors(400, 401, 413, 415, 503)}},
        "get": {"operationId": "getSender", "summary": "A sender and its use of its cap (never its password)",
                "tags": ["senders"],
                "responses": {"200": {"description": "The sender", **_json("SenderOut")},
                              "404": {"description": "No sender with this id in the key's account",
                                      **_json("Error")},
                              **_errors(*READ)}},
    })


def _webhook_paths(spec: APISpec) -> None:
    webhook_id = {"name": "id", "in": "path", "required": True, "description": "the webhook's id",
                  "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": s.MAX_ID}}
    not_found = {"404": {"description": "No webhook with this id in the key's account", **_json("Error")}}
    for name, schema in (("WebhookIn", WebhookInSchema), ("WebhookCreated", WebhookCreatedSchema),
                         ("Webhooks", WebhooksSchema), ("Deliveries", DeliveriesSchema),
                         ("WebhookTestResult", TestResultSchema)):
        spec.components.schema(name, schema=schema)
    spec.path(path="/webhooks", operations={
        "post": {"operationId": "createWebhook", "tags": ["webhooks"],
                 "summary": "Register an endpoint for events; its signing secret is shown only here",
                 "requestBody": _body("WebhookIn"),
                 "responses": {"201": {"description": "Registered", **_json("WebhookCreated")},
                               **_errors(400, 401, 413, 415, 503)}},
        "get": {"operationId": "listWebhooks", "summary": "The account's endpoints (never their secrets)",
                "tags": ["webhooks"],
                "responses": {"200": {"description": "Oldest first", **_json("Webhooks")}, **_errors(*READ)}},
    })
    spec.path(path="/webhooks/{id}", parameters=[webhook_id], operations={"delete": {
        "operationId": "deleteWebhook", "summary": "Remove an endpoint and its deliveries", "tags": ["webhooks"],
        "responses": {"204": {"description": "Removed"}, **not_found, **_errors(*READ)}}})
    spec.path(path="/webhooks/{id}/deliveries", parameters=[webhook_id], operations={"get": {
        "operationId": "listWebhookDeliveries", "summary": "An endpoint's deliveries, latest first",
        "tags": ["webhooks"], "parameters": [{"in": "query", "schema": DeliveriesQuerySchema}],
        "responses": {"200": {"description": "Event, attempts, last status code, next retry",
                              **_json("Deliveries")}, **not_found, **_errors(400, *READ)}}})
    spec.path(path="/webhooks/{id}/test", parameters=[webhook_id], operations={"post": {
        "operationId": "testWebhook", "summary": "Post a signed `webhook.test` event now", "tags": ["webhooks"],
        "responses": {"200": {"description": "What the endpoint answered", **_json("WebhookTestResult")},
                      **not_found, **_errors(*READ)}}})


def _public_paths(spec: APISpec) -> None:
    spec.path(path="/healthz", operations={"get": {
        "operationId": "healthz", "summary": "Liveness: the process answers", "tags": ["operations"],
        "security": PUBLIC, "responses": {"200": {"description": "Alive", **_json("Health")}}}})
    spec.path(path="/readyz", operations={"get": {
        "operationId": "readyz", "summary": "Readiness: PostgreSQL and Redis, each reported", "tags": ["operations"],
        "security": PUBLIC, "responses": {
            "200": {"description": "Both reachable", **_json("Ready")},
            "503": {"description": "One is not; `checks` says which", **_json("Ready")}}}})
    spec.path(path="/metrics", operations={"get": {
        "operationId": "metrics", "summary": "Prometheus metrics", "tags": ["operations"], "security": PUBLIC,
        "responses": {"200": {"description": "Prometheus text format (OpenMetrics if Accept asks for it)",
                              "content": {"text/plain": {"schema": {"type": "string"}},
                                          "application/openmetrics-text": {"schema": {"type": "string"}}}}}}})
    spec.path(path="/openapi.json", operations={"get": {
        "operationId": "openapi", "summary": "This description", "tags": ["operations"], "security": PUBLIC,
        "responses": {"200": {"description": "OpenAPI 3", **_json({"type": "object"})}}}})



def _unsubscribe_paths(spec: APISpec) -> None:
    token = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "from the email's List-Unsubscribe link"}
    html = {"text/html": {"schema": {"type": "string"}}}
    spec.path(path="/u/{token}", parameters=[token], operations={
        "get": {"operationId": "unsubscribePage", "tags": ["unsubscribe"], "security": PUBLIC,
                "summary": "A page whose button unsubscribes (a GET alone changes nothing)",
                "responses": {"200": {"description": "The page", "content": html},
                              "404": {"description": "Not a link of ours (forged, altered)", "content": html},
                              **_errors(503)}},
        "post": {"operationId": "unsubscribe", "tags": ["unsubscribe"], "security": PUBLIC,
                 "summary": "One-click unsubscribe (RFC 8058): the recipient is suppressed for the email's account",
                 "description": "Any body is accepted (providers send `List-Unsubscribe=One-Click`); answered "
                                "with a page when Accept asks for text/html. Idempotent.",
                 "responses": {
                     "200": {"description": "Unsubscribed (now or before)", "content": {
                         "application/json": {"schema": {"type": "object", "required": ["status"], "properties": {
                             "status": {"type": "string", "enum": ["unsubscribed"]}}}}, **html}},
                     **_errors(404, 503)}}})


@functools.cache
def openapi_spec() -> dict:
    spec = APISpec(title="coldmail", version=__version__, openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
                   info={"description": DESCRIPTION}, security=[{"bearerAuth": []}])
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer",
        "description": "a key from COLDMAIL_API_KEYS (`key` or `account:key`) or "
                       "`python run.py create-api-key NAME [--account ACCOUNT]`; it acts for its account"})
    for name, schema in (("Error", s.ErrorSchema), ("Scheduled", s.ScheduledSchema),
                         ("BatchScheduled", s.BatchScheduledSchema), ("Email", s.EmailSchema),
                         ("EmailPage", s.EmailPageSchema), ("Event", s.EventSchema), ("Events", s.EventsSchema),
                         ("Health", s.HealthSchema), ("Ready", s.ReadySchema)):
        spec.components.schema(name, schema=schema)
    for code, (name, description) in ERRORS.items():
        response = {"description": description, **_json("Error")}
        if code == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        spec.components.response(name, response)
    _email_paths(spec)
    _sender_paths(spec)
    _webhook_paths(spec)
    suppressions.describe(spec, _errors)
    inbound.describe(spec, _errors)
    _public_paths(spec)
    _unsubscribe_paths(spec)
    return spec.to_dict()
