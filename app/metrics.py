"""Prometheus metrics (one registry per app, so tests can build several apps)."""
from typing import Dict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ['Metrics', 'SEARCH_STAGES']

# where one search's time goes, in order (app/routes/search.py, app/search_service.py, app/batching.py)
SEARCH_STAGES = ('receive', 'decode', 'preprocess', 'model_wait', 'forward', 'index_search', 'database', 'answer')
_STAGE_BUCKETS = (.0002, .0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_latency = Histogram('amg_request_seconds', 'HTTP request latency', ['method', 'route', 'status'],
                                         registry=self.registry)
        self.embed_batch = Histogram('amg_embed_batch_size', 'images per model forward pass',
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.gallery_size = Gauge('amg_gallery_vectors', 'vectors in the gallery index', registry=self.registry)
        self.jobs = Gauge('amg_jobs', 'background jobs by state', ['state'], registry=self.registry)
        self.search_stage = Histogram('amg_search_stage_seconds', 'time of one search request by stage: receive '
                                      '(body and form), decode, preprocess, model_wait (queued for the model '
                                      'thread), forward, index_search, database, answer (serialise and send)',
                                      ['stage'], buckets=_STAGE_BUCKETS, registry=self.registry)
        self.backend = Gauge('amg_embed_backend', 'the embedding backend and its precision in use (1)', ['backend', 'precision'],
                             registry=self.registry)
        self.retention_removed = Counter('amg_retention_removed', 'what the retention sweeper removed: images, '
                                         'image_files, vectors, sightings, identities, audit_events', ['what'],
                                         registry=self.registry)
        self.audit_dropped = Counter('amg_audit_dropped', 'audit events dropped: the queue to the database was full',
                                     registry=self.registry)

    def observe_stages(self, stages: Dict[str, float]) -> None:
        for stage, seconds in stages.items():
            self.search_stage.labels(stage).observe(seconds)
