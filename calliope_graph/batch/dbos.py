"""The DBOS batch engine's public names (implemented in ``_dbos``; importing this module
needs the dbos extra: ``pip install 'calliope-graph[dbos]'``).

- :func:`run_worker`: run items enqueued by :func:`follow_batch`, on any machine sharing the
  database and the batch folder.
- :func:`follow_batch`: enqueue a batch's items and follow the workers into its manifest.
- :func:`db_url`: the database URL a ``--db`` value (or its default) means;
  :func:`shown_db_url`: that URL as messages show it (no password).
- :func:`flow_ref`: what a worker loads a flow from (a shipped flow's name or a file's
  absolute path).
"""

from calliope_graph.batch._dbos import _flow_ref as flow_ref
from calliope_graph.batch._dbos import _shown as shown_db_url
from calliope_graph.batch._dbos import db_url, run_worker
from calliope_graph.batch._follow import follow_batch

__all__ = ["db_url", "flow_ref", "follow_batch", "run_worker", "shown_db_url"]
