"""Schemathesis hooks for arca's contract test (tests/tests/e2e/contract.rs, scripts/contract.sh).

`POST /v1/models/{name}/verify?progress=true` answers `application/x-ndjson`: one JSON object per
line. Schemathesis has no deserializer for it, so this one reads every line, checks each against
the document's `VerifyLine` schema and the order the document states (progress lines, then one
`report` or `error` line, nothing after it), and hands the last line to Schemathesis' own
response-schema check. Any problem fails the case, naming the line.
"""

import json
import os

import jsonschema
import schemathesis

DOCUMENT = os.environ["ARCA_OPENAPI"]

with open(DOCUMENT, encoding="utf-8") as f:
    _doc = json.load(f)

# A schema that refers into the document's components, so `$ref`s resolve within it.
_line = jsonschema.Draft202012Validator(
    {"$ref": "#/components/schemas/VerifyLine", "components": _doc["components"]}
)


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx, response):
    text = response.content.decode("utf-8")
    if not text.endswith("\n"):
        raise ValueError("the NDJSON answer does not end with a newline")
    lines = text[:-1].split("\n")
    values = []
    for i, line in enumerate(lines, 1):
        value = json.loads(line)
        errors = sorted(_line.iter_errors(value), key=str)
        if errors:
            raise ValueError(f"line {i} is not a VerifyLine: {errors[0].message}: {line[:200]}")
        values.append(value)
    kinds = [next(iter(v)) for v in values]
    if kinds[-1] not in ("report", "error") or any(k != "progress" for k in kinds[:-1]):
        raise ValueError(f"lines out of order: {kinds}")
    return values[-1]
