"""Audit-log data lake: raw JSON Lines events -> validated, date-partitioned Parquet -> CSV exports.

Modules, in the order data flows: ``catalog`` (the auditable actions), ``events`` (schema and
rules), ``raw`` (input files), ``ingest``, ``quarantine``, ``validation`` (Great Expectations),
``lake`` (layout), ``storage`` (fsspec edge), ``query`` (the one filter), ``exports``,
``retention``, ``generate`` (synthetic data), ``cli``.
"""

import os

# Arrow's default allocator keeps the pages of freed batches; the system allocator returns them,
# so ingest's peak memory follows its batch size (1M events: ~970 vs ~1170 MiB at equal speed).
# It must be chosen before pyarrow is first imported.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

__version__ = "0.1.0"
