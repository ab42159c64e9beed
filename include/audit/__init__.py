"""Audit-log data lake: raw JSON Lines events -> validated, date-partitioned Parquet -> CSV exports.

Modules, in the order data flows: ``catalog`` (the auditable actions), ``events`` (schema and
rules), ``raw`` (input files), ``ingest``, ``quarantine``, ``validation`` (Great Expectations),
``lake`` (layout), ``storage`` (fsspec edge), ``query`` (the one filter), ``exports``,
``retention``, ``generate`` (synthetic data), ``cli``.
"""

__version__ = "0.1.0"
