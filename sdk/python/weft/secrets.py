"""Variables and Connections for task code, looked up as Airflow's default secrets backends
do: `AIRFLOW_VAR_<KEY>` / `AIRFLOW_CONN_<CONN_ID>` environment variables first, then the
node's store. A runner cannot read the node's store (it may run as another user, in a
sandbox): it asks the node through the call-back channel of the runner protocol (see
`weft.runner`), one line out, one line back, and only when a task asks for a value.

Outside a runner (parsing a DAG file, plain `python`), only the environment variables are
read, and writing a variable is refused with an error that says so.

Secret values a task fetched (values of variables whose key is sensitive, connection
passwords, sensitive keys of connection extras) are remembered here for the task's attempt,
and masked as `***` in its log and in what is shown of its rendered templates, as Airflow's
secrets masker does."""

import json
import os
import threading
from urllib.parse import quote, unquote, unquote_plus

# What a masked value is shown as.
MASK = "***"
# Names whose values are masked: Airflow's DEFAULT_SENSITIVE_FIELDS (a name is sensitive
# when it contains one of them, in any case). The node has the same list.
SENSITIVE_NAMES = (
    "access_token", "api_key", "apikey", "authorization", "passphrase", "passwd", "password",
    "private_key", "secret", "token", "keyfile_dict", "service_account",
)
# Shorter values are not masked (Airflow's `min_length_masked_secret`): masking "1" or "no"
# would garble every log line and tell a reader little.
MASK_CHARS_MIN = 5
# Distinct values masked in one attempt; more are not remembered.
MASKS_MAX = 256

VARIABLE_PREFIX = "AIRFLOW_VAR_"
CONNECTION_PREFIX = "AIRFLOW_CONN_"


class CallError(Exception):
    """The node refused or could not answer a call (its `reply_error`)."""


class NotInRunner(RuntimeError):
    """A lookup that needs the node's store, made outside a task run."""


# The call-back channel of the request being served: (stdin, channel), set by the runner.
_channel = None
_calls_lock = threading.Lock()
# Secret values seen in this attempt, to mask.
_masks = set()
_masks_lock = threading.Lock()


def is_sensitive(name):
    """Whether values under this name are masked (Airflow's rule)."""
    name = str(name).lower()
    return any(word in name for word in SENSITIVE_NAMES)


# ---- the call-back channel -----------------------------------------------------------------


def attach(stdin, channel):
    """Used by the runner around each request: calls go to the node through these pipes."""
    global _channel
    _channel = (stdin, channel)


def detach():
    global _channel
    _channel = None


def in_runner():
    return _channel is not None


def call(name, **arguments):
    """Asks the node: writes `{"call": name, ...}` on the channel and reads its one-line reply.
    Returns the reply's value; raises CallError for a `reply_error`, NotInRunner outside a
    task run."""
    if _channel is None:
        raise NotInRunner(
            f"`{name}` needs the node's store, which only a task run can reach; outside a task "
            f"set the value in an environment variable ({VARIABLE_PREFIX}<KEY> for a variable, "
            f"{CONNECTION_PREFIX}<CONN_ID> for a connection)"
        )
    stdin, channel = _channel
    line = json.dumps({"call": name, **arguments}, allow_nan=False) + "\n"
    # One call at a time: a task's threads share the one channel.
    with _calls_lock:
        channel.write(line)
        channel.flush()
        answer = stdin.readline()
    if not answer:
        raise CallError("the node closed the channel")
    try:
        reply = json.loads(answer)
    except ValueError as error:
        raise CallError(f"the node's reply is not JSON: {error}") from None
    if not isinstance(reply, dict):
        raise CallError("the node's reply is not a JSON object")
    if "reply_error" in reply:
        raise CallError(str(reply["reply_error"]))
    return reply.get("reply")


# ---- masking -------------------------------------------------------------------------------


def remember_secret(value):
    """Masks `value` (and each line of a multi-line value) in this attempt's output."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    text = str(value)
    pieces = {text, *text.splitlines()}
    with _masks_lock:
        for piece in pieces:
            piece = piece.strip("\r")
            if len(piece) >= MASK_CHARS_MIN and len(_masks) < MASKS_MAX:
                _masks.add(piece)


def remember_sensitive(value, name=""):
    """Remembers the values of sensitive keys anywhere inside `value` (a JSON-like object)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if is_sensitive(key) and not isinstance(inner, (dict, list)):
                remember_secret(inner)
            else:
                remember_sensitive(inner, key)
    elif isinstance(value, list):
        for item in value:
            remember_sensitive(item, name)


def masks():
    """The values masked now, longest first (so a value containing another is masked whole)."""
    with _masks_lock:
        return sorted(_masks, key=len, reverse=True)


def has_masks():
    return bool(_masks)


def reset_masks():
    with _masks_lock:
        _masks.clear()


def mask_text(text, values=None):
    """`text` with every remembered secret replaced by `***`."""
    for value in masks() if values is None else values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask_value(value):
    """A JSON-like value with every string masked (for what is shown, never what runs)."""
    if not _masks:
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_value(item) for item in value]
    return value


# ---- variables -----------------------------------------------------------------------------


def _environment_name(prefix, name):
    return prefix + str(name).upper()


def get_variable(key):
    """The value of variable `key` (a string), or None when there is none."""
    value = os.environ.get(_environment_name(VARIABLE_PREFIX, key))
    if value is None and _channel is not None:
        reply = call("variable_get", key=str(key))
        value = reply.get("value") if isinstance(reply, dict) else None
    if value is not None and is_sensitive(key):
        remember_secret(value)
    return value


def set_variable(key, value, description=None):
    """Creates or replaces variable `key` in the node's store."""
    if is_sensitive(key):
        remember_secret(value)
    call("variable_set", key=str(key), value=str(value), description=description or "")


def delete_variable(key):
    """Removes variable `key` from the node's store; False when there was none."""
    reply = call("variable_delete", key=str(key))
    return bool(reply.get("deleted")) if isinstance(reply, dict) else False


# ---- connections ---------------------------------------------------------------------------

CONNECTION_FIELDS = ("conn_type", "description", "host", "schema", "login", "password", "port",
                     "extra")


def _empty_to_none(text):
    return unquote(text) if text else None


def parse_uri(conn_id, uri):
    """The fields of an Airflow connection URI, `type://login:password@host:port/schema?k=v`
    (read as the node reads it): a query of one `__extra__` parameter is the extra's JSON,
    any other query becomes an extra object of its parameters."""
    scheme, separator, rest = uri.partition("://")
    if not separator or not scheme:
        raise ValueError(f"connection URI {uri!r} of `{conn_id}` has no `type://` in front")
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        userinfo, hostport = None, authority
    login = password = None
    if userinfo is not None:
        login, colon, password = userinfo.partition(":")
        password = password if colon else None
    bracket = hostport.rfind("]")
    colon = hostport.find(":", bracket) if bracket >= 0 else hostport.rfind(":")
    port = None
    if colon >= 0:
        try:
            port = int(hostport[colon + 1:])
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ValueError(f"connection URI {uri!r} of `{conn_id}`: the port is not a number "
                             "from 0 to 65535")
        hostport = hostport[:colon]
    extra = None
    if query:
        pairs = {}
        for pair in query.split("&"):
            if pair:
                name, _, value = pair.partition("=")
                pairs[unquote_plus(name)] = unquote_plus(value)
        if list(pairs) == ["__extra__"]:
            json.loads(pairs["__extra__"])
            extra = pairs["__extra__"]
        else:
            extra = json.dumps(pairs)
    return {
        "conn_id": conn_id,
        "conn_type": scheme.replace("-", "_"),
        "description": "",
        "host": _empty_to_none(hostport),
        "schema": _empty_to_none(path) if slash else None,
        "login": _empty_to_none(login) if login is not None else None,
        "password": _empty_to_none(password) if password is not None else None,
        "port": port,
        "extra": extra,
    }


def _quote(text):
    return quote(str(text), safe="-_.~")


def to_uri(fields):
    """The URI of a connection's fields (what the node's `Connection::to_uri` writes)."""
    uri = f"{(fields.get('conn_type') or '').replace('_', '-')}://"
    login, password = fields.get("login"), fields.get("password")
    if login is not None or password is not None:
        uri += _quote(login or "")
        if password is not None:
            uri += ":" + _quote(password)
        uri += "@"
    uri += _quote(fields.get("host") or "")
    if fields.get("port") is not None:
        uri += f":{fields['port']}"
    if fields.get("schema") is not None:
        uri += "/" + _quote(fields["schema"])
    extra = fields.get("extra")
    if extra:
        uri += "?__extra__=" + _quote(extra if isinstance(extra, str) else json.dumps(extra))
    return uri


def parse_environment_connection(conn_id, text):
    """The fields of an `AIRFLOW_CONN_<ID>` value: a URI, or a JSON object of the fields."""
    text = text.strip()
    if not text.startswith("{"):
        return parse_uri(conn_id, text)
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{_environment_name(CONNECTION_PREFIX, conn_id)} is neither a URI nor "
                         f"a JSON object: {error}") from None
    fields = {name: value.get(name) for name in CONNECTION_FIELDS}
    fields["conn_id"] = conn_id
    if isinstance(fields["extra"], (dict, list)):
        fields["extra"] = json.dumps(fields["extra"])
    if fields["port"] is not None:
        fields["port"] = int(fields["port"])
    return fields


def remember_connection(fields):
    """Masks a connection's password and the values of sensitive keys of its extra."""
    remember_secret(fields.get("password"))
    extra = fields.get("extra")
    if extra:
        try:
            remember_sensitive(json.loads(extra) if isinstance(extra, str) else extra)
        except ValueError:
            pass


def get_connection(conn_id):
    """The fields of connection `conn_id` (a dict), or None when there is none."""
    text = os.environ.get(_environment_name(CONNECTION_PREFIX, conn_id))
    if text is not None:
        fields = parse_environment_connection(conn_id, text)
    elif _channel is not None:
        reply = call("connection_get", conn_id=str(conn_id))
        if not isinstance(reply, dict):
            return None
        fields = {name: reply.get(name) for name in CONNECTION_FIELDS}
        fields["conn_id"] = reply.get("conn_id", conn_id)
    else:
        return None
    remember_connection(fields)
    return fields


class ConnectionNotFound(LookupError):
    """No environment variable and no row of the node's store holds the connection."""


class Connection:
    """A connection's fields as attributes (Airflow's `Connection`, without its ORM)."""

    def __init__(self, conn_id=None, conn_type=None, description=None, host=None, login=None,
                 password=None, schema=None, port=None, extra=None, uri=None):
        if uri is not None:
            if any(value is not None for value in (conn_type, host, login, password, schema,
                                                   port, extra)):
                raise ValueError(
                    "create a connection from a URI or from its fields (conn_type, host, "
                    "login, password, schema, port or extra), not both"
                )
            fields = parse_uri(conn_id, uri)
            conn_type, host, login, password = (fields["conn_type"], fields["host"],
                                                fields["login"], fields["password"])
            schema, port, extra = fields["schema"], fields["port"], fields["extra"]
        if isinstance(extra, (dict, list)):
            extra = json.dumps(extra)
        self.conn_id = conn_id
        self.conn_type = conn_type
        self.description = description
        self.host = host
        self.login = login
        self.password = password
        self.schema = schema
        self.port = int(port) if port is not None else None
        self.extra = extra

    @classmethod
    def from_fields(cls, fields):
        return cls(**{name: fields.get(name) for name in ("conn_id", *CONNECTION_FIELDS)})

    @classmethod
    def find(cls, conn_id):
        """The connection `conn_id` from the environment or the node; ConnectionNotFound when
        neither has it."""
        fields = get_connection(conn_id)
        if fields is None:
            where = "" if in_runner() else (
                f" (outside a task run only the {CONNECTION_PREFIX}{str(conn_id).upper()} "
                "environment variable is read)"
            )
            raise ConnectionNotFound(f"The conn_id `{conn_id}` isn't defined{where}")
        return cls.from_fields(fields)

    @property
    def extra_dejson(self):
        """The extra as a dict ({} when there is none or it is not a JSON object)."""
        if not self.extra:
            return {}
        try:
            value = json.loads(self.extra)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def get_uri(self):
        return to_uri(self.__dict__)

    def get_password(self):
        return self.password

    def get_extra(self):
        return self.extra

    def __repr__(self):
        return self.conn_id or ""


# ---- template accessors (`var`, `conn`) ----------------------------------------------------

_NOTHING = object()


def variable_value(key, default=_NOTHING, deserialize_json=False):
    """Airflow's `Variable.get`: KeyError for a missing variable without a default."""
    value = get_variable(key)
    if value is None:
        if default is _NOTHING:
            raise KeyError(f"Variable {key} does not exist")
        return default
    return json.loads(value) if deserialize_json else value


def _not_a_key(name):
    # Python's and Jinja's own probes of an object are not variable names.
    return name.startswith("__") or name == "jinja_pass_arg"


class VariableAccessor:
    """`var.value.<key>` / `var.json.<key>` in templates: looked up when a template reads it."""

    def __init__(self, deserialize_json):
        self._json = deserialize_json

    def __getattr__(self, key):
        if _not_a_key(key):
            raise AttributeError(key)
        return variable_value(key, deserialize_json=self._json)

    def get(self, key, default=None):
        return variable_value(key, default, deserialize_json=self._json)


class VarAccessor:
    """`var` in templates."""

    value = VariableAccessor(False)
    json = VariableAccessor(True)


class ConnectionAccessor:
    """`conn.<conn_id>` / `conn.get(conn_id)` in templates, looked up when a template reads it;
    `find` makes the connection object (it raises when there is none)."""

    def __init__(self, find=None, missing=LookupError):
        self._find = find or Connection.find
        self._missing = missing

    def __getattr__(self, conn_id):
        if _not_a_key(conn_id):
            raise AttributeError(conn_id)
        return self._find(conn_id)

    def get(self, conn_id, default_conn=None):
        try:
            return self._find(conn_id)
        except self._missing:
            return default_conn
