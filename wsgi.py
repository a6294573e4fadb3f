"""WSGI entry point: `gunicorn wsgi:app` or `flask --app wsgi …`."""

from iwrs import create_app
from iwrs.config import ConfigError
from iwrs.protocol import ProtocolError

try:
    app = create_app()
except (ConfigError, ProtocolError) as error:
    raise SystemExit(f"IWRS cannot start: {error}") from None
