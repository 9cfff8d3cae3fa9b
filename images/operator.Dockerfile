# The kubeserve operator: kopf + the Kubernetes client, no model runtimes.
#   docker build -f images/operator.Dockerfile -t kubeserve-operator:dev .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[operator]"

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="kubeserve-operator" \
      org.opencontainers.image.description="Reconciles InferenceServices into Deployments, Services and routers" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The same numeric non-root user the chart's securityContext asks for.
USER 65532:65532
# 8080: liveness (/healthz), 8081: Prometheus (/metrics)
EXPOSE 8080 8081
ENTRYPOINT ["kubeserve", "operator"]
