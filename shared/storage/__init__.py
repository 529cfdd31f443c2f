"""Where artifacts live: the stores (a local folder, S3), a job's artifact keys, thumbnails."""
