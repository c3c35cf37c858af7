"""The HTTP API and the live web dashboard (FastAPI + uvicorn).

    auth.py       bearer tokens (CATALYST_API_TOKEN / _FILE), constant-time check, rate limit
    readmodel.py  what the API shows, folded from the log as it grows (and the SSE fan-out)
    follow.py     the readers that feed it from both streams
    models.py     request and response models (the OpenAPI schema)
    commands.py   POSTs as events: into the in-process pipeline of a simulated run, or the log
    routes.py     the FastAPI app: /api/v1/..., /healthz, /readyz, /metrics, the dashboard
    server.py     running it: beside `catalyst run --serve`, or `catalyst serve --role api`
    dashboard.py  the page, rendered with the state of the moment
    static/       the page template, its style and script (no build step)

Every POST becomes an event in the log naming the caller's token (never the token itself).
"""
