# One image for every tunehub process: the API (`tunehub serve`), the tuner
# (`tunehub tuner`) and the workers (`tunehub worker`). docker-compose.yml
# builds it twice: as is (CPU), and FROM an NVIDIA CUDA image for the GPU
# worker (BASE build argument), where TVM finds nvcc/nvrtc and the driver.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH TUNEHUB_DATA_DIR=/data

# g++ links the libraries TVM builds (export_library); CUDA images bring no Python.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && (command -v python3 >/dev/null || apt-get install -y --no-install-recommends python3 python3-venv) \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

WORKDIR /app
# Dependencies first, so a code change does not reinstall TVM.
COPY pyproject.toml README.md ./
RUN mkdir tunehub && touch tunehub/__init__.py && pip install . && pip uninstall -y tunehub && rm -rf tunehub
COPY common common
COPY tunehub tunehub
COPY db db
COPY service service
COPY tuner tuner
COPY workers workers
COPY cost_model cost_model
COPY examples examples
RUN pip install --no-deps .

RUN useradd --create-home --uid 1000 tunehub && mkdir -p /data && chown tunehub /data
USER tunehub
VOLUME /data
EXPOSE 8470
CMD ["tunehub", "serve", "--host", "0.0.0.0"]
