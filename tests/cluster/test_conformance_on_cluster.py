"""The conformance and interop suites, again, on a Redis Cluster.

Every test of these modules runs here with the cluster fixtures of ``conftest.py``: our
client and the official SDK each on a 3-master cluster of its own (the official client
finds the cluster by itself), queues whose slots cycle over the masters, and keyspaces
compared across all masters.
"""

from conformance.test_bulk import *  # noqa: F401,F403
from conformance.test_interop import *  # noqa: F401,F403
from conformance.test_release import *  # noqa: F401,F403
from conformance.test_scripts_admin import *  # noqa: F401,F403
from conformance.test_scripts_queue import *  # noqa: F401,F403
