"""The REST service: FastAPI routers over db/ and the queue (``create_app``).

The service stores and hands out; it runs no searches. The tuner (another
process) picks queued jobs up from the database, and workers pull candidates
over HTTP.
"""
