# typha-py image: multi-stage, slim, non-root. Untested here: no container engine or base image
# is reachable on the build machines (see README); `make test` lints this file with hadolint.

# ---- build: a wheel of the project and its dependencies ---------------------------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY typha ./typha
COPY felix_client ./felix_client
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="typha-py" \
      org.opencontainers.image.description="Typha-style fan-out sync proxy for Calico networking"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 999 --no-create-home --shell /usr/sbin/nologin typha \
    && mkdir -p /etc/calico /var/lib/typha \
    && chown typha /var/lib/typha
COPY config/typha.cfg /etc/calico/typha.cfg
USER 999
ENV TYPHA_LOGFILEPATH=none \
    TYPHA_LOGSEVERITYSYS=none \
    TYPHA_HEALTHENABLED=true \
    TYPHA_HEALTHHOST=0.0.0.0
EXPOSE 5473 9093 9098
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9098/liveness', timeout=5).status == 200 else 1)"]
ENTRYPOINT ["typha"]
CMD ["serve"]
