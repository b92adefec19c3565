"""Logging set-up shared by the CLI and the daemon, with secrets scrubbed from every record."""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import threading
import traceback
import urllib.parse
from logging.handlers import RotatingFileHandler
from typing import Any

from fsmount.errors import UsageError

# Where secrets are scrubbed, and why there: in the LogRecord factory, that is when any logger of
# any library (botocore, boto3, urllib3, s3transfer, anything added later) creates a record, before
# any handler sees it. A filter on our handlers would miss a handler a library attaches to its own
# logger (boto3.set_stream_logger, propagate=False) and logging.lastResort. The factory formats the
# message once, scrubs it and drops the args; it renders exc_info and stack_info to scrubbed text
# and drops the traceback objects, so no handler or formatter can render the raw values again.
# Records made without the factory (logging.makeLogRecord, records from other processes) are
# scrubbed by ScrubbingFilter on our own handlers.

# Names whose value is a secret, as `name=value`, `name: value`, `'name': b'value'` or `"name": "value"`.
_KEY = (
    r"[\w.-]*(?:secret|password|passwd|token|signature|credential|private_?key|account_?key|api_?key"
    r"|sharedaccesssignature)[\w.-]*|sig|authorization|proxy-authorization|cookie|set-cookie"
)
_QUOTED = r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'"
_BYTES = r"(?:b(?=['\"]))?"  # the b of a bytes repr, b'...'


def _mask(m: re.Match[str]) -> str:
    """Keep the key and the quotes around the value; the value becomes ***."""
    value = m.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{m.group(1)}{quote}***{quote}"


_SECRET_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    # PEM private keys (GCS service-account JSON holds one), whole.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), "***"),
    # Authorization-style header values run to the end of the quoted value or the line.
    (re.compile(r"(?i)((?:proxy-)?authorization['\"]?\s*[:=]\s*" + _BYTES + r")(" + _QUOTED
                + r"|[^\r\n'\"]+)"), _mask),
    # Any other secret-named key, quoted value or bare token (bare values stop at & ; , } and quotes).
    (re.compile(r"(?i)((?<![\w-])(?:" + _KEY + r")['\"]?\s*[:=]\s*" + _BYTES + r")(" + _QUOTED
                + r"|[^\s'\"&;,}]+)"), _mask),
    # XML leaf elements (STS and SSO responses: <SecretAccessKey>, <SessionToken>).
    (re.compile(r"(?i)<((?:" + _KEY + r"))>[^<]*</\1>"), r"<\1>***</\1>"),
    # Bearer / SharedKey / AWS4 credentials wherever they appear.
    (re.compile(r"(?i)\b(Bearer|SharedKey|SharedKeyLite)\s+[A-Za-z0-9._~+/:=%-]+"), r"\1 ***"),
    (re.compile(r"(?i)\b(AWS4-HMAC-SHA256)\s+(?:Credential|Signature|SignedHeaders)[^\r\n'\"]+"), r"\1 ***"),
    # A password in a URL's user info (https://user:secret@host/).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@'\"]*:)[^/\s@'\"]+@"), r"\1***@"),
]
# Environment variables whose values are scrubbed wherever they appear, even without a key name.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_CLIENT_SECRET",
)
_registered: frozenset[str] = frozenset()  # replaced, never changed in place: threads read it unlocked
_registered_lock = threading.Lock()
_MIN_SECRET = 4  # shorter values would scrub ordinary words


def register_secret(value: str) -> None:
    """Scrub `value` (a key or token loaded from somewhere else than the environment) from every log."""
    global _registered
    if value and len(value) >= _MIN_SECRET:
        with _registered_lock:
            _registered = _registered | {value}


def _secret_values() -> list[str]:
    values = set(_registered)
    for name in SECRET_ENV:
        v = os.environ.get(name)
        if v and len(v) >= _MIN_SECRET:
            values.add(v)
            values.add(urllib.parse.quote(v, safe=""))  # as it appears in a presigned URL
            values.add(urllib.parse.quote_plus(v))
    return sorted(values, key=len, reverse=True)  # longest first: a value containing another one


def scrub(text: str) -> str:
    """Replace anything that looks like a credential or a signature with '***'."""
    for value in _secret_values():
        if value in text:
            text = text.replace(value, "***")
    for pat, repl in _SECRET_PATTERNS:
        text = pat.sub(repl, text)
    return text


def _scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        msg = record.getMessage()
    except Exception:  # a bad format string must not break the caller; show what there is
        msg = f"{record.msg!r} % {record.args!r}"
    record.msg, record.args = scrub(msg), ()
    if record.exc_info and record.exc_info[0] is not None:
        text = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text, record.exc_info = scrub(text), None
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    record.fsmount_scrubbed = True
    return record


_install_lock = threading.Lock()
_installed = False


def install_scrubber() -> None:
    """Scrub every log record of the process when it is made (idempotent; chains the old factory)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return _scrub_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True


class ScrubbingFilter(logging.Filter):
    """For records that did not come from the factory (makeLogRecord, other processes' records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "fsmount_scrubbed", False):
            _scrub_record(record)
        return True


def _open_private(path: str, flags: int) -> int:
    """Open (creating 0600) a log file, never through a symlink; tighten it if it is ours and open."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError as e:
        raise UsageError(f"log file {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UsageError(f"log file {path}: not a regular file")
    os.set_blocking(fd, True)
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.fchmod(fd, 0o600)
    return fd


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A RotatingFileHandler whose files (the current one and every rotated one) are 0600."""

    def __init__(self, filename: str, maxBytes: int = 0, backupCount: int = 0) -> None:
        for i in range(1, backupCount + 1):  # rotated files of an older fsmount may be 0644
            if os.path.lexists(f"{filename}.{i}"):
                try:
                    os.close(_open_private(f"{filename}.{i}", os.O_RDONLY))
                except UsageError:
                    pass
        super().__init__(filename, maxBytes=maxBytes, backupCount=backupCount, encoding="utf-8")

    def _open(self) -> Any:
        # Rotation renames the old files (their mode stays 0600) and opens a new one here.
        fd = _open_private(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def _print_uncaught(exc_type: type[BaseException], exc: BaseException | None, tb: Any) -> None:
    """Python's own report of an uncaught exception (on stderr, as before), scrubbed."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc or exc_type(), tb)
        return
    sys.stderr.write(scrub("".join(traceback.format_exception(exc_type, exc, tb))))
    sys.stderr.flush()


def _print_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    sys.stderr.write(f"Exception in thread {name}:\n")
    _print_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def setup_logging(level: str = "warning", log_file: str | None = None, timestamps: bool = True) -> None:
    """Configure the root logger once: stderr (or a 0600 file), with secrets scrubbed."""
    install_scrubber()
    # Tracebacks Python would print to stderr itself (the daemon's stderr is its log) go through it too.
    sys.excepthook = _print_uncaught
    threading.excepthook = _print_uncaught_in_thread
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if log_file:
        handler = PrivateRotatingFileHandler(log_file, maxBytes=10 * 2**20, backupCount=3)
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
    # botocore at debug prints request headers and signatures (scrubbed above); below debug it is noise.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        debug = level.lower() == "debug"
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else max(root.level, logging.WARNING))
