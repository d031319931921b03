"""The gateway's OpenAPI document (``bff/openapi.json``), read once, and what checks against it.

:func:`resolve` follows a local ``$ref``; :func:`assert_conforms` says a response is one the
document describes for its operation: status, media type, body schema, headers;
:func:`assert_event_conforms`, the same of one event of an event stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "bff" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
DOCUMENT_URI = "urn:flows-bff:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(
    DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


def resolve(node: Any) -> Any:
    """Follow a local ``$ref`` (``#/components/…``) to what it names."""
    while isinstance(node, dict) and "$ref" in node:
        ref: str = node["$ref"]
        assert ref.startswith("#/"), ref
        node = DOCUMENT
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def response_pointer(path: str, method: str, status: int) -> tuple[str, dict[str, Any]]:
    """JSON pointer and body of the documented response for ``status``."""
    responses = DOCUMENT["paths"][path][method]["responses"]
    code = str(status) if str(status) in responses else "default"
    assert code in responses, f"{method.upper()} {path} does not document {status}"
    pointer = _pointer("paths", path, method, "responses", code)
    node = responses[code]
    while "$ref" in node:
        pointer = node["$ref"][1:]
        node = resolve(node)
    return pointer, node


def assert_conforms(path: str, method: str, response: httpx.Response) -> None:
    """``response`` is one the document describes: status, media type, body schema, headers."""
    pointer, documented = response_pointer(path, method, response.status_code)
    content = documented.get("content")
    if not content:
        assert response.content == b"", (path, method, response.status_code)
    else:
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in content, (path, method, response.status_code, media)
        schema_ref = f"{DOCUMENT_URI}#{pointer}{_pointer('content', media, 'schema')}"
        validator = Draft202012Validator({"$ref": schema_ref}, registry=REGISTRY)
        errors = [
            f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(response.json())
        ]
        assert not errors, (path, method, response.status_code, errors)
    for header in documented.get("headers", {}):
        assert header.lower() in response.headers, (path, method, response.status_code, header)


def assert_event_conforms(path: str, method: str, event: dict[str, Any]) -> None:
    """One event of a ``text/event-stream`` answer (``{"event": name, "data": parsed JSON}``)
    is one the document describes for the operation's 200."""
    pointer, documented = response_pointer(path, method, 200)
    media = "text/event-stream"
    assert media in documented.get("content", {}), (path, method, "no event stream documented")
    schema_ref = f"{DOCUMENT_URI}#{pointer}{_pointer('content', media, 'schema')}"
    validator = Draft202012Validator({"$ref": schema_ref}, registry=REGISTRY)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(event)]
    assert not errors, (path, method, event, errors)
