"""The distributed vector engine: a Milvus collection per model version, shared by every replica (no vectors in a
replica's memory), through pymilvus ``MilvusClient``.

``uri``: ``http://host:19530`` for a Milvus standalone or distributed cluster, or a local ``.db`` path for Milvus Lite
(in this process; several processes share Lite only through ``milvus-lite server``). Each row: ``id`` (the gallery
image id, primary key), ``vector`` (inner product), ``person``, ``camera``, ``time`` (INT64 microseconds, see
storage.engine.time_key), ``tags`` (ARRAY of VARCHAR) and ``site`` (VARCHAR; the partition key from Milvus 2.4 on,
a site's search then reads its partitions only; a plain field on 2.3, see ``_partition_key_works``); a
:class:`~storage.engine.GalleryFilter` becomes a Milvus boolean expression.

Searches read at ``consistency`` (default Session: this process's own writes are visible at once, other writers'
within Milvus's staleness bound). Strong makes every search wait for Milvus's time tick: ~230 ms a search on a
Milvus 2.3 standalone here, against ~1.2 ms (docs/benchmarks.md). The service never answers a row deleted from the
database either way: answers are joined with the database's rows, and the change-log follower drops a deleted row
from the row cache once it has deleted its vector. Counts (``/readyz``) are read at Strong.
"""
import json
import logging
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .db import TAG_CHARS
from .engine import (MAX_TAGS, NO_TIME, Attributes, EngineUnavailable, FilterNotSupported, GalleryFilter, Hits,
                     VectorEngine, group_by_filter, time_key)

SITE_CHARS = 64  # a site's name (app.settings: AMG_SITES)

__all__ = ['MilvusEngine', 'filter_expression', 'collection_name']

_logger = logging.getLogger(__name__)
WRITE_BATCH = 2_000  # rows per upsert call (a gRPC message stays well under Milvus's 64 MB default)
_EMPTY: Hits = (np.zeros(0, np.float32), np.zeros(0, np.int64))


def collection_name(prefix: str, model_id: int) -> str:
    return f'{prefix}_model{int(model_id)}'


def _string_literal(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise FilterNotSupported(f'tags: control characters cannot be searched on Milvus: {value!r}')
    return json.dumps(value, ensure_ascii=False)  # "...", with quotes and backslashes escaped as Milvus reads them


def filter_expression(flt: GalleryFilter) -> str:
    """``flt`` as a Milvus boolean expression ('' for no condition)."""
    terms = []
    if flt.person_id is not None:
        terms.append(f'person == {int(flt.person_id)}')
    if flt.exclude_person is not None:
        terms.append(f'person != {int(flt.exclude_person)}')
    if flt.camera_ids:
        terms.append(f'camera in [{", ".join(str(int(c)) for c in flt.camera_ids)}]')
    if flt.exclude_camera is not None:
        terms.append(f'camera != {int(flt.exclude_camera)}')
    if flt.after is not None:
        terms.append(f'time >= {time_key(flt.after)}')
    if flt.before is not None:
        terms.append(f'time <= {time_key(flt.before)}')
        if flt.after is None:
            terms.append(f'time != {NO_TIME}')
    if flt.exclude_ids:
        terms.append(f'id not in [{", ".join(str(int(i)) for i in flt.exclude_ids)}]')
    if flt.sites:
        terms.append(f'site in [{", ".join(_string_literal(s) for s in flt.sites)}]')
    if flt.tags:
        terms.append(f'array_contains_all(tags, [{", ".join(_string_literal(t) for t in flt.tags)}])')
    return ' and '.join(terms)


class MilvusEngine(VectorEngine):
    """One model's vectors in the Milvus collection ``collection``; ``alias`` (optional) is pointed at it by
    :meth:`make_current`, so outside readers follow the active model. ``prefix``: the collections of this
    deployment's models are named ``{prefix}_model{id}`` (:func:`collection_name`); :meth:`publish` drops the
    others."""
    name = 'milvus'
    shared = True
    remote = True
    stale_margin = 8

    def __init__(self, uri: str, collection: str, dim: int, *, token: str = '', index_type: str = 'HNSW',
                 index_params: Optional[Dict[str, Any]] = None, search_params: Optional[Dict[str, Any]] = None,
                 alias: str = '', prefix: str = '', timeout: float = 10.0, consistency: str = 'Session') -> None:
        super().__init__(dim)
        from pymilvus import MilvusClient  # optional dependency: amg-reid[milvus]
        self.uri, self.collection, self.alias, self.prefix = uri, collection, alias, prefix
        self.index_type = index_type
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        self.timeout = timeout
        self.consistency = consistency
        self._client_args = dict(uri=uri, token=token or '', timeout=timeout)
        self._client: Optional[MilvusClient] = None

    # ---- connection ------------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from pymilvus import MilvusClient
            try:
                self._client = MilvusClient(**self._client_args)
            except Exception as e:  # connection refused, server starting, bad URI
                raise EngineUnavailable(f'Milvus at {self.uri} cannot be reached: {_reason(e)}') from None
        return self._client

    def _call(self, what: str, fn, *args, _reloaded: bool = False, **kwargs):
        """A pymilvus call; an unreachable server is :class:`EngineUnavailable` (and reconnects next time); a
        collection released by a server restart is loaded again and the call repeated, once."""
        from pymilvus.exceptions import MilvusException
        try:
            return fn(*args, **kwargs)
        except MilvusException as e:
            if _is_released(e) and what != 'load_collection' and not _reloaded:
                self._call('load_collection', self.client.load_collection, self.collection)
                return self._call(what, fn, *args, _reloaded=True, **kwargs)
            if _is_unavailable(e):
                self._client = None
                raise EngineUnavailable(f'Milvus {what} failed: {_reason(e)}') from None
            raise
        except Exception as e:  # gRPC errors that pymilvus passes through
            if type(e).__module__.startswith('grpc'):
                self._client = None
                raise EngineUnavailable(f'Milvus {what} failed: {_reason(e)}') from None
            raise

    def close(self) -> None:
        """Close the connection (an unclosed client keeps its gRPC channel pinging the server, which a Milvus Lite
        server answers with GOAWAY "too_many_pings" once enough of them pile up)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    @property
    def position_key(self) -> str:
        return self.collection

    @property
    def kind(self) -> str:
        return f'milvus-{self.index_type.lower()}'

    def exists(self) -> bool:
        return bool(self._call('has_collection', self.client.has_collection, self.collection))

    def prepare(self) -> None:
        self.create()

    def check_kind(self, kind: Optional[str]) -> None:
        if kind is not None:
            raise ValueError('the index kind is a FAISS setting; Milvus builds the index set by '
                             'AMG_MILVUS_INDEX_TYPE')

    def reset(self) -> None:
        """A new, empty collection (one an earlier attempt left is dropped)."""
        self.drop()
        self.create()

    def publish(self, previous: Optional[VectorEngine]) -> None:
        """The alias follows this collection; collections of this prefix other than this one and ``previous``'s
        (replicas not yet switched still search it) are dropped."""
        self.make_current()
        if self.prefix:
            keep = [self.collection] + [c for c in [getattr(previous, 'collection', None)] if c]
            self.drop_other_models(self.prefix, keep)

    def create(self) -> None:
        """Create the collection with its scalar fields and vector index (a no-op when it exists) and load it."""
        from pymilvus import DataType, MilvusClient
        client = self.client
        aliases: List[str] = []
        if self._call('has_collection', client.has_collection, self.collection) and not self._has_sites():
            # made before sites: Milvus cannot add a field, so it is made again (the reconcile refills it from the
            # database's vectors, nothing is embedded again); a collection with an alias cannot be dropped (2.5.5+)
            # or leaves the alias broken: the alias moves to the new one
            _logger.warning('Milvus collection %s has no site field: made again', self.collection)
            info = self._call('describe_collection', client.describe_collection, self.collection)
            aliases = list(info.get('aliases') or [])
            for alias in aliases:
                self._call('drop_alias', client.drop_alias, alias)
            self._call('drop_collection', client.drop_collection, self.collection)
        if not self._call('has_collection', client.has_collection, self.collection):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field('id', DataType.INT64, is_primary=True)
            schema.add_field('vector', DataType.FLOAT_VECTOR, dim=self.dim)
            schema.add_field('person', DataType.INT64)
            schema.add_field('camera', DataType.INT64)
            schema.add_field('time', DataType.INT64)
            schema.add_field('tags', DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS,
                             max_length=TAG_CHARS * 4)  # bytes: up to 4 per UTF-8 character
            schema.add_field('site', DataType.VARCHAR, max_length=SITE_CHARS,
                             is_partition_key=self._partition_key_works())
            index = client.prepare_index_params()
            index.add_index(field_name='vector', index_type=self.index_type, metric_type='IP',
                            params=self.index_params)
            self._call('create_collection', client.create_collection, self.collection, schema=schema,
                       index_params=index, consistency_level='Strong')
        for alias in aliases:
            self._call('create_alias', client.create_alias, self.collection, alias)
        self._call('load_collection', client.load_collection, self.collection)

    def _partition_key_works(self) -> bool:
        """Whether the site may be the partition key (a site's search then reads its partitions only). Not on a 2.3
        server: its upsert puts a row in another partition than a filter on the key reads (measured on 2.3.5:
        ``site == "a"`` found 1 of 10 rows), so there the site is a plain scalar field, filtered as the others."""
        try:
            version = str(self._call('get_server_version', self.client.get_server_version))
        except EngineUnavailable:
            raise
        except Exception:  # a server that does not say: a current one
            return True
        numbers = re.findall(r'\d+', version)
        return len(numbers) < 2 or (int(numbers[0]), int(numbers[1])) >= (2, 4)

    def _has_sites(self) -> bool:
        info = self._call('describe_collection', self.client.describe_collection, self.collection)
        return any(f.get('name') == 'site' for f in info.get('fields', []))

    def wait_indexed(self, timeout: float = 3600.0) -> float:
        """Flush, then wait until Milvus has indexed every row (searches are right before that too, scanning
        unindexed segments by brute force, only slower; later re-indexing of compacted segments is not awaited);
        the seconds waited."""
        import time
        t0 = time.monotonic()
        self._call('flush', self.client.flush, self.collection)
        while time.monotonic() - t0 < timeout:
            info = self._call('describe_index', self.client.describe_index, self.collection, 'vector')
            if int(info.get('indexed_rows', 0)) >= int(info.get('total_rows', 0)):
                break
            time.sleep(1.0)
        return time.monotonic() - t0

    def drop(self) -> None:
        if self.exists():
            self._call('drop_collection', self.client.drop_collection, self.collection)

    def make_current(self) -> None:
        """Point the alias (if any) at this collection."""
        if not self.alias:
            return
        client = self.client
        try:
            current = self._call('describe_alias', client.describe_alias, self.alias).get('collection_name')
        except EngineUnavailable:
            raise
        except Exception:  # no such alias yet
            current = None
        if current is None:
            self._call('create_alias', client.create_alias, self.collection, self.alias)
        elif current != self.collection:
            self._call('alter_alias', client.alter_alias, self.collection, self.alias)

    def drop_other_models(self, prefix: str, keep: Sequence[str]) -> List[str]:
        """Drop this prefix's collections of other models than ``keep``; the names dropped."""
        client = self.client
        dropped = []
        for name in self._call('list_collections', client.list_collections):
            if name.startswith(f'{prefix}_model') and name not in keep:
                self._call('drop_collection', client.drop_collection, name)
                dropped.append(name)
        return dropped

    def remove_from_other_models(self, ids: Sequence[int]) -> List[str]:
        """Delete these ids from this prefix's other collections (the previous model's is kept for replicas not yet
        switched: it would still answer them)."""
        if not self.prefix or not len(ids):
            return []
        client, touched = self.client, []
        for name in self._call('list_collections', client.list_collections):
            if name.startswith(f'{self.prefix}_model') and name != self.collection:
                values = [int(i) for i in ids]
                for start in range(0, len(values), WRITE_BATCH):
                    self._call('delete', client.delete, name, ids=values[start:start + WRITE_BATCH])
                touched.append(name)
        return touched

    # ---- the engine ------------------------------------------------------------------------------------------
    def upsert(self, ids: np.ndarray, vectors: np.ndarray, attributes: Attributes) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        self._check_vectors(ids, vectors, attributes, self.dim)
        for start in range(0, len(ids), WRITE_BATCH):
            stop = start + WRITE_BATCH
            rows = [dict(id=int(i), vector=v, person=int(p), camera=int(c), time=int(t), tags=list(tags), site=site)
                    for i, v, p, c, t, tags, site in zip(ids[start:stop], vectors[start:stop],
                                                         attributes.person[start:stop], attributes.camera[start:stop],
                                                         attributes.time[start:stop], attributes.tags[start:stop],
                                                         attributes.sites[start:stop])]
            self._call('upsert', self.client.upsert, self.collection, rows)

    def remove(self, ids: Iterable[int]) -> int:
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), WRITE_BATCH):
            self._call('delete', self.client.delete, self.collection, ids=ids[start:start + WRITE_BATCH])
        return len(ids)  # Milvus does not say which of them existed

    def check_filter(self, flt: GalleryFilter) -> None:
        filter_expression(flt)

    def search(self, queries: np.ndarray, k: int, filters: Sequence[Optional[GalleryFilter]]) -> List[Hits]:
        queries = np.asarray(queries, dtype=np.float32)
        out: List[Hits] = [_EMPTY] * len(queries)
        params = {'metric_type': 'IP', 'params': self.search_params}
        for flt, positions in group_by_filter(filters).items():
            expression = '' if flt is None else filter_expression(flt)
            found = self._call('search', self.client.search, self.collection, data=[queries[p] for p in positions],
                               limit=k, filter=expression, output_fields=['id'], search_params=params,
                               consistency_level=self.consistency)
            for position, hits in zip(positions, found):
                out[position] = (np.fromiter((h['distance'] for h in hits), np.float32, len(hits)),
                                 np.fromiter((h['id'] for h in hits), np.int64, len(hits)))
        return out

    def count(self) -> int:
        result = self._call('count', self.client.query, self.collection, filter='', output_fields=['count(*)'],
                            consistency_level='Strong')
        return int(result[0]['count(*)'])

    def ids(self, batch: int = 10_000) -> np.ndarray:
        """Every id, read in batches into int64 arrays (8 bytes an id in this process)."""
        iterator = self._call('query_iterator', self.client.query_iterator, self.collection, batch_size=batch,
                              filter='', output_fields=['id'], consistency_level='Strong')
        parts = []
        try:
            while True:
                rows = self._call('query_iterator', iterator.next)
                if not rows:
                    break
                parts.append(np.fromiter((r['id'] for r in rows), np.int64, len(rows)))
        finally:
            iterator.close()
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


# Milvus's own error codes (pkg/util/merr, 2.3+): the service not ready / unavailable, a collection not loaded.
# Servers and Milvus Lite that answer without one (code 1, unexpected) are still read by their message.
_UNAVAILABLE_CODES = {1: False, 2: True}  # 1 is also pymilvus's "unexpected": the message decides
_NOT_LOADED_CODES = {101, 103}


def _is_released(e: Exception) -> bool:
    if getattr(e, 'code', None) in _NOT_LOADED_CODES:
        return True
    text = str(e).lower()
    return 'released' in text or 'not loaded' in text or 'call load' in text


def _is_unavailable(e: Exception) -> bool:
    from pymilvus.exceptions import ConnectionNotExistException, MilvusUnavailableException
    if isinstance(e, (MilvusUnavailableException, ConnectionNotExistException)) or \
            _UNAVAILABLE_CODES.get(getattr(e, 'code', None)):
        return True
    text = str(e).lower()
    return any(s in text for s in ('unavailable', 'connect', 'deadline', 'timeout', 'timed out', 'not ready',
                                   'closed channel', 'rpc error', 'fail connecting'))
