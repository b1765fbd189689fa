"""Airflow's Variables, Connections and `BaseHook.get_connection`, looked up as Airflow's
default secrets backends do: `AIRFLOW_VAR_<KEY>` / `AIRFLOW_CONN_<CONN_ID>` environment
variables first, then the node's store (through the runner, see `weft.secrets`). Writing a
variable works in a task run only."""

import json
import logging

from weft import secrets

from .models import AirflowException, AirflowNotFoundException

log = logging.getLogger("airflow.secrets")

_NOTHING = object()
_warned_outside = False


def _warn_outside_once(key):
    global _warned_outside
    if not _warned_outside and not secrets.in_runner():
        _warned_outside = True
        log.warning(
            "Variable %s: outside a task run weft reads variables only from %s<KEY> "
            "environment variables; the node's store is asked during task runs",
            key, secrets.VARIABLE_PREFIX,
        )


def _call(what, operation, *arguments):
    try:
        return operation(*arguments)
    except secrets.NotInRunner as error:
        raise AirflowException(f"cannot {what}: {error}") from None
    except secrets.CallError as error:
        raise AirflowException(f"cannot {what}: {error}") from None


class Variable:
    """An Airflow Variable (`Variable.get`, `Variable.set`, `Variable.delete`)."""

    def __init__(self, key=None, val=None, description=None, value=None):
        self.key = key
        self.val = val if val is not None else value
        self.description = description

    @property
    def value(self):
        return self.val

    @classmethod
    def get(cls, key, default_var=_NOTHING, deserialize_json=False, default=_NOTHING):
        fallback = default if default is not _NOTHING else default_var
        try:
            value = secrets.get_variable(key)
        except secrets.CallError as error:
            raise AirflowException(f"cannot read variable {key}: {error}") from None
        if value is None:
            if fallback is _NOTHING:
                _warn_outside_once(key)
                raise KeyError(f"Variable {key} does not exist")
            return fallback
        return json.loads(value) if deserialize_json else value

    @classmethod
    def set(cls, key, value, description=None, serialize_json=False, **_ignored):
        text = json.dumps(value, indent=2) if serialize_json else str(value)
        _call(f"set variable {key}", secrets.set_variable, key, text, description)

    @classmethod
    def setdefault(cls, key, default, description=None, deserialize_json=False):
        value = cls.get(key, default_var=None, deserialize_json=deserialize_json)
        if value is None:
            if default is None:
                raise ValueError("Default Value must be set")
            cls.set(key, default, description=description, serialize_json=deserialize_json)
            return default
        return value

    @classmethod
    def delete(cls, key, **_ignored):
        """Removes the variable; the number of variables removed (0 or 1), as Airflow 2."""
        return 1 if _call(f"delete variable {key}", secrets.delete_variable, key) else 0

    def __repr__(self):
        return f"{self.key}:{'***' if secrets.is_sensitive(self.key or '') else self.val}"


class Connection(secrets.Connection):
    """An Airflow Connection: `Connection(conn_id=..., uri=...)` or its fields, `extra_dejson`,
    `get_uri()`, and `Connection.get(conn_id)` from the environment or the node's store."""

    def __init__(self, conn_id=None, conn_type=None, description=None, host=None, login=None,
                 password=None, schema=None, port=None, extra=None, uri=None):
        try:
            super().__init__(conn_id, conn_type, description, host, login, password, schema,
                             port, extra, uri)
        except ValueError as error:
            raise AirflowException(str(error)) from None

    @classmethod
    def get_connection_from_secrets(cls, conn_id):
        try:
            return cls.find(conn_id)
        except secrets.ConnectionNotFound as error:
            raise AirflowNotFoundException(str(error)) from None
        except secrets.CallError as error:
            raise AirflowException(f"cannot read connection {conn_id}: {error}") from None

    @classmethod
    def get(cls, conn_id):
        """Airflow 3's `Connection.get`."""
        return cls.get_connection_from_secrets(conn_id)

    @classmethod
    def from_json(cls, value, conn_id=None):
        fields = secrets.parse_environment_connection(conn_id, value)
        return cls.from_fields({**fields, "conn_id": conn_id})

    def as_json(self):
        fields = {name: getattr(self, name) for name in ("conn_type", "description", "host",
                                                         "login", "password", "schema",
                                                         "port", "extra")}
        return json.dumps({name: value for name, value in fields.items() if value is not None})


class BaseHook:
    """Airflow's base of hooks: `BaseHook.get_connection(conn_id)`. weft ships no provider
    hooks; a hook class of the DAG's own that builds on this one works."""

    conn_name_attr = None
    default_conn_name = "default_conn_id"
    conn_type = None
    hook_name = None

    def __init__(self, logger_name=None, **_ignored):
        self.log = logging.getLogger(logger_name or f"airflow.task.hooks.{type(self).__module__}")

    @classmethod
    def get_connection(cls, conn_id):
        return Connection.get_connection_from_secrets(conn_id)

    def get_conn(self):
        raise NotImplementedError(f"{type(self).__name__} does not define get_conn()")


class _Var:
    """`var` in templates."""

    value = secrets.VariableAccessor(False)
    json = secrets.VariableAccessor(True)


def template_accessors():
    """`var` and `conn` of an Airflow template context."""
    conn = secrets.ConnectionAccessor(Connection.get_connection_from_secrets,
                                      missing=AirflowNotFoundException)
    return _Var(), conn
