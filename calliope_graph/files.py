"""Writing files and output directories: the public names of the library's one atomic
writer, its throttle and its output-directory check (implemented in ``_files`` and
``_outdir``; see their docstrings).

- :func:`write_atomic` / :func:`atomic_writer`: a reader sees the old file or the new one,
  never half of one.
- :class:`Throttled`: run a writer at most every ``interval`` seconds (live reports, traces).
- :func:`prepare_out_dir`: create an output directory and prove it writable, or raise one
  :class:`~calliope_graph.errors.ConfigurationError` naming the path and the fix;
  :class:`OutDirLock`: one run at a time in it.
"""

from calliope_graph._files import Throttled, atomic_writer, write_atomic
from calliope_graph._outdir import OutDirLock, prepare_out_dir

__all__ = ["OutDirLock", "Throttled", "atomic_writer", "prepare_out_dir", "write_atomic"]
