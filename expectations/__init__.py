"""Great Expectations suites kept as code; `default` is the one recipes name."""

import os

# Great Expectations reads this when it is first imported; releases are built offline, so
# it must never try to send usage statistics.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
