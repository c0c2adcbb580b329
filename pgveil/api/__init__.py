"""pgveil's REST API (`pgveil api`): every long job as an HTTP operation with webhooks.

The API is a presentation layer beside the CLI: it validates requests, runs the
services (each job in a child process, so a job can be cancelled and a crash
cannot take the service down), records operations, and reports them by webhook.
"""
