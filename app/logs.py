"""Structured one-line logs carrying the request id (and, in jobs, the job id)."""

from __future__ import annotations

import logging
import re

from app.http import request_id_var


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


#: Libraries whose DEBUG records carry SQL parameters (token hashes, sealed key material):
#: never below WARNING, whatever IMS_LOG_LEVEL says.
PARAMETER_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg", "botocore", "urllib3")


def quiet_parameter_loggers() -> None:
    for name in PARAMETER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


#: Loggers whose records carry a request's path with its query string (uvicorn's access log,
#: at INFO): a signed `/objects/…?expires=…&sig=…` URL there is a credential for the object
#: until it expires, up to 7 days (app.storage.signing).
URL_LOGGERS = ("uvicorn.access",)
_SIGNATURE_RE = re.compile(r"(?<=[?&])sig=[^&\s\"]*")


def redact_signature(text: str) -> str:
    """`text` with the value of every `sig=` query parameter of a URL in it replaced."""
    return _SIGNATURE_RE.sub("sig=REDACTED", text)


class _SignatureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_signature(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_signature(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_url_signatures() -> None:
    """Keep URL signatures out of the loggers of URL_LOGGERS (once per logger)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _SignatureFilter) for f in logger.filters):
            logger.addFilter(_SignatureFilter())


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_ContextFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_parameter_loggers()
    redact_url_signatures()
