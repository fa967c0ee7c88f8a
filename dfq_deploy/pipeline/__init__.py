"""``train_export``: the whole mission in one call — data-free low-bit training, integer ONNX export, runtime parity.

Everything the ``dfq-deploy train-export`` command does is available here from Python. A run is a
:class:`~.context.RunContext` passed through named stages:

- :mod:`.resolve`: check every input before any work (and :func:`preflight`, the dry run);
- :mod:`.stages`: train, export, check parity;
- :mod:`.report`: write ``report.json``, ``summary.txt`` and the validation reports;
- :mod:`.run`: open the run directory (new or resumed), run the stages, commit, apply the gate;
- :mod:`.rendezvous`: how the processes of a multi-process run meet; :mod:`.failures`: early stops, out of memory;
- :mod:`.reexport`: a finished run's student for another runtime profile.
"""

from .config import TrainExportConfig
from .context import RunContext, RunResult
from .reexport import export_run
from .rendezvous import PeerError
from .report import summary_text
from .resolve import preflight
from .run import resume_run, train_export

__all__ = ["PeerError", "RunContext", "RunResult", "TrainExportConfig", "export_run", "preflight", "resume_run",
           "summary_text", "train_export"]
