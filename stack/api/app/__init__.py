"""FinaiFlow 2.0 API: a small FastAPI service deployed by finaiflow_ops."""
