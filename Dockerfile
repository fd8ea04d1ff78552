# One image for every service; the compose file picks the subcommand.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts contracts
COPY services services
COPY deploy deploy
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["safety-monitor"]
