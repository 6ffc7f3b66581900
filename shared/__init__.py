"""The exporter's own package: one module per noun (README: "How a run works")."""

import os

# numpy's OpenBLAS starts a thread per core that spins after each BLAS call; nothing here
# needs BLAS (perf: ~0.7 % of a 1M run's CPU was those threads spinning). It must be set
# before numpy is first imported, hence here, where every module of the app starts.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
