"""Logging set-up shared by the CLI and the daemon, with secrets scrubbed from every record."""

from __future__ import annotations

import logging
import os
import re

_SECRET_PATTERNS = [
    re.compile(
        r"(?i)((?:aws_secret_access_key|secret_access_key|secret_key|password|session_token|token)"
        r"['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"
    ),
    re.compile(r"(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature)=)[^&\s'\"]+"),
    re.compile(r"(?i)(Authorization['\"]?\s*[:=]\s*b?['\"]?)[^'\"\n]+"),
]
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def scrub(text: str) -> str:
    """Replace anything that looks like a credential or a signature with '***'."""
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(r"\1***", text)
    return text


class ScrubbingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str = "warning", log_file: str | None = None, timestamps: bool = True) -> None:
    """Configure the root logger once: stderr (or a file), with secrets scrubbed."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if log_file:
        from logging.handlers import RotatingFileHandler

        handler = RotatingFileHandler(log_file, maxBytes=10 * 2**20, backupCount=3)
    else:
        handler = logging.StreamHandler()
    fmt = (
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
        if timestamps
        else "%(levelname)s %(name)s: %(message)s"
    )
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(ScrubbingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # botocore at debug prints request headers (scrubbed above); below debug it is only noise.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        debug = level.lower() == "debug"
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else max(root.level, logging.WARNING))
