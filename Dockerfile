# The nemo2sherpa worker: the stock Airflow image plus everything its steps need, made when the image is built, so a
# fresh worker starts converting at once (no GBs of venvs built inside a task's time). docker-compose.yaml builds it;
# tests/test_compose.py checks it against the declarations it serves: every stage venv's requirement file
# (include/nemo2sherpa/requirements/*.txt) and every runtime kind's toolchain (nemo2sherpa.runtimes.KINDS).
#
#   docker compose build          # or: docker build -t nemo2sherpa-worker .
FROM apache/airflow:3.3.2-python3.11

# The one toolchain the registries cannot give: Rust's, for the runtime matrix's "C API from Rust" (Debian's packages).
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends cargo rustc \
 && rm -rf /var/lib/apt/lists/*
USER airflow

# The Airflow side: the same pinned requirements the project's own venv has.
COPY --chown=airflow:root requirements.txt /opt/nemo2sherpa/requirements.txt
RUN pip install --no-cache-dir -r /opt/nemo2sherpa/requirements.txt

# The stage library (the compose also mounts ./include over it, for a checkout's edits).
COPY --chown=airflow:root include /opt/airflow/include
ENV PYTHONPATH=/opt/airflow/include \
    NEMO2SHERPA_VENV_CACHE=/opt/nemo2sherpa/venvs \
    UV_PYTHON_DOWNLOADS=never \
    UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    UV_INDEX_STRATEGY=unsafe-best-match

# Every stage venv, from the requirement files the DAG's virtualenv tasks name: the same cache folder names (the hash
# of the requirements), so Airflow reuses them instead of building its own.
RUN python -m nemo2sherpa venv download \
 && python -m nemo2sherpa venv nemo \
 && python -m nemo2sherpa venv onnx \
 && python -m nemo2sherpa venv onnx-gpu

# The runtime matrix: each runtime's wheel, sherpa-onnx-node with Node.js (a PyPI wheel), the C client with zig (a
# PyPI wheel) and the Rust client (cargo), installed and built into the same cache.
RUN python -m nemo2sherpa runtimes-install
