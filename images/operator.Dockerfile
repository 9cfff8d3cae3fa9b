# The kubeserve operator: kopf + the Kubernetes client, no model runtimes.
#   docker build -f images/operator.Dockerfile -t kubeserve-operator:dev .
# The chart runs it as `kubeserve operator` (its container command), configured by KUBESERVE_*.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install ".[operator]"

# The runtime: the slim Python base and the virtualenv; no pip cache, no source tree.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kubeserve-operator" \
      org.opencontainers.image.description="Reconciles InferenceServices into Deployments, Services and routers" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# The same numeric non-root user the chart's securityContext asks for.
USER 65532:65532
# 8080: liveness (/healthz), 8081: Prometheus (/metrics)
EXPOSE 8080 8081
ENTRYPOINT ["kubeserve", "operator"]
