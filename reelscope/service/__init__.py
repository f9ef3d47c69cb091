"""reelscope as an HTTP service: uploads, durable jobs, reports, web page, metrics."""
