# The gateway: FastAPI, no torch and no model libraries. Build from the repo root:
#   docker build -f docker/gateway.Dockerfile -t neuron-atlas-gateway .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY services/gateway/requirements.txt /tmp/gateway-requirements.txt
# The API's models live in the client distribution (httpx and pydantic, pinned alike).
COPY client /tmp/client
RUN pip install -r /tmp/gateway-requirements.txt /tmp/client && rm -r /tmp/client
# Only the gateway's own code and the shared library: worker code never enters this image.
COPY shared shared
COPY services/__init__.py services/__init__.py
COPY services/gateway services/gateway
RUN useradd --system --uid 10001 atlas
USER atlas
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["uvicorn", "services.gateway.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
