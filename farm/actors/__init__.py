"""Ray-facing pieces, written as plain classes and functions: the enhance worker, the job
coordinator, and the final mux. The driver wraps them with ``ray.remote``."""
