# The kubeserve model server: `kubeserve serve` and `kubeserve fetch` with the ONNX Runtime and
# scikit-learn runtimes, no operator dependencies (no kopf), and the example models under
# /models (what examples/*.yaml name as file:///models/digits/...).
#
#   docker build -f images/server.Dockerfile -t kubeserve-server:dev .
#
# The operator runs this image twice per variant pod: `kubeserve fetch <storageUri> <dir>` in the
# init container and `kubeserve serve` in the server container, hence ENTRYPOINT ["kubeserve"].
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# 1. The server's virtualenv. Every dependency ships manylinux wheels: no compiler needed.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install ".[server]"

# 2. The example models, trained on scikit-learn's bundled digits data (no download) with the
#    same scikit-learn the server loads them with, in the training script's layout:
#    /models/digits-onnx/{v1,v2}/model.onnx and /models/digits-sklearn/{v1,v2}/model.skops;
#    and the image classifier, assembled with random weights (no download either):
#    /models/mobilenet/{v1,v2}/model.onnx with its kubeserve.json. examples/*.yaml name them
#    as file:///models/.... Only /models leaves this stage: the exporters (skl2onnx, onnx)
#    stay behind.
FROM build AS models
COPY scripts/train_example_models.py scripts/build_image_model.py ./scripts/
RUN /opt/venv/bin/pip install "skl2onnx>=1.16" "onnx>=1.15" \
    && /opt/venv/bin/python scripts/train_example_models.py --out /models --formats onnx,skops \
    && /opt/venv/bin/python scripts/build_image_model.py --out /models --check \
    && chmod -R a+rX /models

# 3. The runtime: the slim Python base, the virtualenv and the models; no pip cache, no
#    compiler, no source tree. Runs as the numeric non-root user the operator's pods ask for.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kubeserve-server" \
      org.opencontainers.image.description="kubeserve inference server (KServe V1 and Open Inference Protocol V2) with example models" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
COPY --from=models /models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kubeserve"]
CMD ["serve"]
