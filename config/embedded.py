"""Where the embedded development stack listens (`make up`, `make test`: scripts/devstack.py).

One definition for the settings' defaults and for the script that starts the servers, so manage.py, workers and
helper scripts reach the servers the running stack started, on EMBEDDED_PG_PORT and EMBEDDED_REDIS_PORT.
Plain Python without Django: scripts/devstack.py loads this file by path, without importing the `config` package
(which creates the Celery app).
"""

import os

PG_PORT = int(os.environ.get("EMBEDDED_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("EMBEDDED_REDIS_PORT", "63799"))
DATABASE_URL = f"postgres://postgres@127.0.0.1:{PG_PORT}/agentry"
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
