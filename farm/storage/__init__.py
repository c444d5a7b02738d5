"""Where a job lives: storage access through fsspec with atomic writes and hashing (fs), and the job
directory: its layout, spec, receipts, logs and control files (jobdir)."""
