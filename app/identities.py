"""Identities the service finds itself: each new video sighting, once its crops are embedded, is linked to the
identity whose sightings it matches best, or opens a new one. A link needs the calibrated score of the sighting's
pooled crops against that identity's crops (the model's threshold, as searches judge a match) and must keep the
hard rule: two sightings overlapping in time on one camera are never one person, nor, with AMG_MIN_TRAVEL_SECONDS,
two on two cameras closer in time than that (storage.identities.conflicting).
Operators name (enrol), merge and split identities; the same rule holds there.

Linking runs in the maintenance loop (app.state), a few sightings a round, in time order, so that earlier
sightings are linked before the later ones that may match them."""
import logging
from collections import Counter
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np
from sqlalchemy import select

from storage import crud
from storage import identities as store
from storage.db import GalleryImage, Identity, Sighting
from storage.engine import MAX_EXCLUDED_IDS, GalleryFilter

from .search_service import exact_scores, first_pass_k, pooled_query, search_blocking
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .state import ServiceState

__all__ = ['IdentityLinker', 'IdentityConflict', 'LINK_BATCH', 'LINK_CANDIDATES']

_logger = logging.getLogger(__name__)

LINK_BATCH = 20  # sightings linked a maintenance round (each: one pooled search)
LINK_CANDIDATES = 50  # crops a sighting is compared with (their sightings' identities are the candidates)
PENDING_LOOK = 5  # unlinked sightings looked at a round, in multiples of those linked
MAX_RECLUSTER = 2000  # sightings one re-clustering takes at once (its distances: n^2 floats)


class IdentityConflict(ValueError):
    """A merge or split that would put one person in two places at once, or does not fit the identities."""


class IdentityLinker:
    def __init__(self, service: 'ServiceState') -> None:
        self.service = service

    @property
    def travel(self) -> Optional[float]:
        """AMG_MIN_TRAVEL_SECONDS: sightings on two cameras closer in time are never one identity."""
        return self.service.settings.min_travel_seconds

    # ---- linking new sightings -------------------------------------------------------------------------------
    def link_pending(self, snap: Snapshot, limit: int = LINK_BATCH) -> int:
        """Link up to ``limit`` unlinked video sightings whose crops the snapshot's model has embedded; how many."""
        Session = self.service.Session
        with Session() as s:
            # looked further than ``limit``: a sighting whose crops are not embedded yet (or cannot be) holds
            # no other back
            pending = store.pending_sightings(session=s, limit=PENDING_LOOK * limit)
            work = []
            for sighting in pending:
                ids = crud.sighting_image_ids(session=s, sighting_id=sighting.id)[:MAX_EXCLUDED_IDS]
                vectors = crud.get_vectors(session=s, model_id=snap.model_id, image_ids=ids)
                if ids and len(vectors) == len(ids):  # else: embedded when the service follows the log
                    work.append((sighting.id, ids, vectors, sighting.site))
                    if len(work) == limit:
                        break
        for sighting_id, ids, vectors, site in work:
            self._link(snap, sighting_id, ids, vectors, site)
        return len(work)

    def _link(self, snap: Snapshot, sighting_id: int, ids: List[int], vectors: Dict[int, np.ndarray],
              site: str) -> None:
        query = pooled_query(snap, [vectors[i] for i in ids])
        # its own site's crops only: one site's identities never hold another's sightings
        flt = replace(GalleryFilter(), exclude_ids=tuple(sorted(ids)), sites=(site,))
        (D, I), = search_blocking(self.service, snap, query, first_pass_k(snap, LINK_CANDIDATES), [flt])
        D, I = self._exact(snap, query[0], D, I)
        scores = snap.scoring(True)(D)
        Session = self.service.Session
        with Session.begin() as s:
            # row locks (PostgreSQL; SQLite has one writer at a time): another replica linking this sighting waits
            # and then finds it linked; one linking another sighting to the same identity is checked after it
            sighting = s.get(Sighting, sighting_id, with_for_update=True)
            if sighting is None or sighting.identity_id is not None:  # gone, or linked by another replica
                return
            chosen = None
            for identity in self._identities_by_score(s, I, scores, snap.min_score):
                if s.get(Identity, identity, with_for_update=True) is None:  # merged away meanwhile
                    continue
                if not store.conflicting(session=s, identity_id=identity, sightings=[sighting],
                                         min_travel_seconds=self.travel):
                    chosen = identity
                    break
            if chosen is None:
                chosen = store.create_identity(session=s, site=sighting.site).id
            sighting.identity_id = chosen

    def _exact(self, snap: Snapshot, query: np.ndarray, D: np.ndarray, I: np.ndarray):
        valid = I >= 0
        if not snap.visible_parts:  # the first pass scores plain embeddings exactly already
            return D[valid], I[valid]
        found, missing = snap.gallery_visibility.cached(I[valid].tolist())
        if missing:
            found.update(snap.gallery_visibility.get(missing))
        return exact_scores(snap, query, D, I, found, True, LINK_CANDIDATES)

    @staticmethod
    def _identities_by_score(s, I: np.ndarray, scores: np.ndarray, threshold: float) -> List[int]:
        """The identities of the candidates' sightings whose best crop scores at least ``threshold``, best first."""
        good = [(float(score), int(i)) for score, i in zip(scores, I.tolist()) if i >= 0 and score >= threshold]
        if not good:
            return []
        rows = s.execute(select(GalleryImage.id, Sighting.identity_id)
                         .join(Sighting, GalleryImage.sighting_id == Sighting.id)
                         .where(GalleryImage.id.in_([i for _, i in good]), Sighting.identity_id.is_not(None)))
        identity_of = dict(rows.all())
        ranked: List[int] = []
        for _, image_id in sorted(good, reverse=True):
            identity = identity_of.get(image_id)
            if identity is not None and identity not in ranked:
                ranked.append(identity)
        return ranked

    # ---- re-clustering a time window ----------------------------------------------------------------------
    def recluster(self, snap: Snapshot, after: datetime, before: datetime, threshold: Optional[float] = None,
                  sites: Optional[Sequence[str]] = None) -> Dict[str, int]:
        """Link the video sightings overlapping [after, before] again, all at once, with everything known since
        (video.identities.link_sightings: average-linkage clustering of their pooled crops under the same
        constraints). ``threshold``: the cosine two sightings must reach (default: the model's threshold, as a
        search decides a match). Enrolled (named) identities keep their sightings. Raises
        :class:`IdentityConflict` for a window of more than :data:`MAX_RECLUSTER` sightings. Each site's sightings
        are clustered apart (``sites``: only these sites'; None: every site's)."""
        if sites is None:
            with self.service.Session() as s:
                sites = sorted(set(s.scalars(select(Sighting.site).distinct().where(
                    Sighting.video != '', Sighting.last_time >= after, Sighting.first_time <= before))))
        total = dict(sightings=0, identities=0, moved=0)
        for site in sites:
            for key, n in self._recluster_site(snap, after, before, threshold, site).items():
                total[key] += n
        return total

    def _recluster_site(self, snap: Snapshot, after: datetime, before: datetime, threshold: Optional[float],
                        site: str) -> Dict[str, int]:
        from video.identities import link_sightings
        Session = self.service.Session
        with Session() as s:
            model = crud.get_model(session=s, model_id=snap.model_id)
            cosine = threshold if threshold is not None else (
                model.min_score if model is not None and model.min_score is not None
                else self.service.settings.default_min_score)
            window = store.window_sightings(session=s, after=after, before=before, limit=MAX_RECLUSTER + 1,
                                            sites=[site])
            if len(window) > MAX_RECLUSTER:
                raise IdentityConflict(f'more than {MAX_RECLUSTER} video sightings in that window: give a shorter one')
            named = {i.id for i in s.scalars(select(Identity).where(Identity.name.is_not(None)))}
            free = [x for x in window if x.identity_id not in named]
            crops = {x.id: crud.sighting_image_ids(session=s, sighting_id=x.id)[:MAX_EXCLUDED_IDS] for x in free}
            vectors = crud.get_vectors(session=s, model_id=snap.model_id,
                                       image_ids=[i for ids in crops.values() for i in ids])
            # only sightings the model has embedded whole: the others are linked when they are
            ready = [x for x in free if crops[x.id] and all(i in vectors for i in crops[x.id])]
            before_ids = {x.id: x.identity_id for x in ready}
            cameras = [str(x.camera_id) for x in ready]
            times = [(x.first_time or after, x.last_time or x.first_time or after) for x in ready]
        if not ready:
            return dict(sightings=0, identities=0, moved=0)
        pooled = np.concatenate([pooled_query(snap, [vectors[i] for i in crops[x.id]]) for x in ready])
        labels = link_sightings(pooled, cameras, [t[0] for t in times], [t[1] for t in times],
                                threshold=float(np.clip(1 - cosine, 1e-6, 2)), min_travel_seconds=self.travel)
        moved = 0
        with Session.begin() as s:
            taken: set = set()
            for label in sorted(set(labels.tolist()), key=lambda la: -int((labels == la).sum())):
                members = [x.id for x, la in zip(ready, labels.tolist()) if la == label]
                # the identity most of them had keeps its id (the largest clusters choose first)
                votes = Counter(before_ids[m] for m in members if before_ids[m] is not None
                                and before_ids[m] not in taken)
                identity = votes.most_common(1)[0][0] if votes else None
                rows = [x for x in ready if x.id in set(members)]
                if identity is not None and (s.get(Identity, identity, with_for_update=True) is None or
                                             store.conflicting(session=s, identity_id=identity, sightings=rows,
                                                               min_travel_seconds=self.travel)):
                    identity = None  # merged away meanwhile, or it holds a clash outside the window
                if identity is None:
                    identity = store.create_identity(session=s, site=site).id
                taken.add(identity)
                moved += sum(before_ids[m] != identity for m in members)
                store.move_sightings(session=s, sighting_ids=members, identity_id=identity)
            s.flush()
            emptied = [i for i in set(before_ids.values()) - taken - {None}
                       if not store.identity_sightings(session=s, identity_id=i)]
            for identity in emptied:
                store.delete_identity(session=s, identity_id=identity)
        return dict(sightings=len(ready), identities=len(taken), moved=moved)

    # ---- operators' changes ----------------------------------------------------------------------------------
    def merge(self, identity_id: int, other_id: int) -> Identity:
        """Move every sighting of ``other_id`` into ``identity_id`` and remove ``other_id``. Raises KeyError (either
        is missing) and :class:`IdentityConflict` (the same identity; or overlapping sightings on one camera, or
        on two cameras closer in time than AMG_MIN_TRAVEL_SECONDS)."""
        if identity_id == other_id:
            raise IdentityConflict('an identity cannot be merged with itself')
        with self.service.Session.begin() as s:
            locked = {i: s.get(Identity, i, with_for_update=True) for i in sorted((identity_id, other_id))}
            identity, other = locked[identity_id], locked[other_id]
            if identity is None or other is None:
                raise KeyError(identity_id if identity is None else other_id)
            if identity.site != other.site:
                raise IdentityConflict(f'identities {identity_id} and {other_id} are of two sites')
            theirs = store.identity_sightings(session=s, identity_id=other_id)
            if store.conflicting(session=s, identity_id=identity_id, sightings=theirs,
                                 min_travel_seconds=self.travel):
                raise IdentityConflict(f'identities {identity_id} and {other_id} were seen by one camera at the same '
                                       'time' + (f', or by two cameras less than AMG_MIN_TRAVEL_SECONDS '
                                                 f'({self.travel:g} s) apart' if self.travel else '') +
                                       ': they are two people')
            if identity.name is None and other.name is not None:
                identity.name = other.name
            store.move_sightings(session=s, sighting_ids=[x.id for x in theirs], identity_id=identity_id)
            store.delete_identity(session=s, identity_id=other_id)
            s.flush()
            s.refresh(identity)
            s.expunge(identity)
            return identity

    def split(self, identity_id: int, sighting_ids: Sequence[int]) -> Identity:
        """Move ``sighting_ids`` (some of the identity's sightings, not all) to a new identity; it. Raises KeyError
        and :class:`IdentityConflict`."""
        wanted = sorted({int(i) for i in sighting_ids})
        with self.service.Session.begin() as s:
            original = s.get(Identity, identity_id, with_for_update=True)
            if original is None:
                raise KeyError(identity_id)
            have = {x.id for x in store.identity_sightings(session=s, identity_id=identity_id)}
            strangers = [i for i in wanted if i not in have]
            if not wanted or strangers:
                raise IdentityConflict(f'sighting_ids: not sightings of identity {identity_id}: {strangers}'
                                       if strangers else 'sighting_ids: give at least one')
            if len(wanted) == len(have):
                raise IdentityConflict('sighting_ids: that is every sighting of the identity; nothing to split off')
            new = store.create_identity(session=s, site=original.site)
            store.move_sightings(session=s, sighting_ids=wanted, identity_id=new.id)
            s.flush()
            s.refresh(new)
            s.expunge(new)
            return new

    def rename(self, identity_id: int, name: Optional[str]) -> Identity:
        """Name an identity (enrolment) or take its name away (None)."""
        with self.service.Session.begin() as s:
            identity = store.get_identity(session=s, identity_id=identity_id)
            if identity is None:
                raise KeyError(identity_id)
            identity.name = name
            s.flush()
            s.refresh(identity)
            s.expunge(identity)
            return identity
