# One image for every service; the compose file picks the subcommand.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts contracts
COPY clinical clinical
COPY services services
COPY deploy deploy
RUN pip install --no-cache-dir . \
    && mkdir -p /var/lib/safety-monitor && chown nobody /var/lib/safety-monitor
USER nobody
ENTRYPOINT ["safety-monitor"]
