"""Run-level parameters: a default, a description and a JSON-schema fragment each."""

from .exceptions import BadArgumentError

# JSON-schema keywords a Param may carry; anything else is most likely a typo.
SCHEMA_KEYWORDS = frozenset(
    [
        "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf", "minLength", "maxLength", "pattern", "format", "items", "minItems",
        "maxItems", "uniqueItems", "properties", "required", "additionalProperties", "examples",
        "title", "values_display", "section", "oneOf", "anyOf", "allOf", "not",
    ]
)

_NOT_SET = object()


class Param:
    """A run parameter: `Param(5, type="integer", minimum=0, description="...")`."""

    def __init__(self, default=_NOT_SET, description=None, **schema):
        unknown = sorted(set(schema) - SCHEMA_KEYWORDS)
        if unknown:
            raise BadArgumentError(
                f"Param got unknown keyword(s) {', '.join(unknown)}; use JSON-schema keywords "
                f"such as type, minimum, enum"
            )
        self.value = None if default is _NOT_SET else default
        self.has_default = default is not _NOT_SET
        self.description = description
        self.schema = dict(schema)

    def to_json(self, name):
        from .serialize import json_value

        return {
            "default": json_value(self.value, what=f"default of param `{name}`"),
            "description": self.description,
            "schema": json_value(self.schema, what=f"schema of param `{name}`"),
        }


def params_to_json(params):
    """The `params` map of the serialized DAG from `{name: Param | plain value}`."""
    result = {}
    for name, value in (params or {}).items():
        param = value if isinstance(value, Param) else Param(value)
        result[str(name)] = param.to_json(name)
    return result


def param_defaults(params):
    return {
        name: (value.value if isinstance(value, Param) else value)
        for name, value in (params or {}).items()
    }
