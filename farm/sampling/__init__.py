"""Looking before a long job: ``preview`` (a few frames through the job's pipeline, on a sheet),
``estimate`` (time, GPU-hours, disk and cost from a timed sample) and ``tune`` (the fastest speed
settings, measured). Each runs the job's own checks, decode, enhancer and workers on a sample."""
