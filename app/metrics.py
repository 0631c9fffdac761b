"""Prometheus metrics (one registry per app, so tests can build several apps)."""
from prometheus_client import CollectorRegistry, Gauge, Histogram

__all__ = ['Metrics']


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_latency = Histogram('amg_request_seconds', 'HTTP request latency', ['method', 'route', 'status'],
                                         registry=self.registry)
        self.embed_batch = Histogram('amg_embed_batch_size', 'images per model forward pass',
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.gallery_size = Gauge('amg_gallery_vectors', 'vectors in the gallery index', registry=self.registry)
        self.jobs = Gauge('amg_jobs', 'background jobs by state', ['state'], registry=self.registry)
        self.backend = Gauge('amg_embed_backend', 'the embedding backend in use (1)', ['backend'],
                             registry=self.registry)
