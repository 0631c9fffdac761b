"""Identities in SQL: the people the service found, each a set of sightings (app.identities links them), and the
one hard rule of linking: a person cannot be in two places at once, so two sightings on one camera whose times
overlap (two tracks of one recording at the same moment) are never one identity, nor, given the least time a person
takes between two cameras, two sightings on two cameras closer in time than that."""
from datetime import datetime, timedelta
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from .db import Identity, Sighting

__all__ = ['IdentitySummary', 'create_identity', 'get_identity', 'pending_sightings', 'conflicting',
           'identity_sightings', 'window_sightings', 'list_identities', 'move_sightings', 'delete_identity',
           'summaries']


class IdentitySummary(NamedTuple):
    id: int
    name: Optional[str]
    sighting_count: int
    first_time: Optional[datetime]
    last_time: Optional[datetime]
    camera_ids: List[int]
    created_at: datetime
    site: str = ''


def create_identity(*, session: Session, name: Optional[str] = None, site: str = '') -> Identity:
    identity = Identity(name=name, site=site)
    session.add(identity)
    session.flush()
    return identity


def get_identity(*, session: Session, identity_id: int) -> Optional[Identity]:
    return session.get(Identity, identity_id)


def pending_sightings(*, session: Session, limit: int) -> List[Sighting]:
    """Video sightings not linked to an identity yet, in time order (uploaded crops are never linked)."""
    return list(session.scalars(select(Sighting).where(Sighting.identity_id.is_(None), Sighting.video != '')
                                .order_by(Sighting.first_time, Sighting.id).limit(limit)))


def conflicting(*, session: Session, identity_id: int, sightings: Sequence[Sighting],
                min_travel_seconds: Optional[float] = None) -> bool:
    """Whether one of ``sightings`` overlaps in time, on its own camera, a sighting of the identity (the sightings
    themselves aside), or, with ``min_travel_seconds``, comes within that time of (or overlaps) one on another
    camera: linking them to it would put one person in two places at once (video.identities.cannot_link's rule)."""
    mine = {s.id for s in sightings}
    for s in sightings:
        if s.first_time is None or s.last_time is None:
            continue
        clashes = and_(Sighting.camera_id == s.camera_id, Sighting.first_time <= s.last_time,
                       Sighting.last_time >= s.first_time)
        if min_travel_seconds:
            travel = timedelta(seconds=float(min_travel_seconds))
            # the gap between the two is below the travel time: each starts before the other ends + travel
            clashes = or_(clashes, and_(Sighting.camera_id != s.camera_id, Sighting.first_time < s.last_time + travel,
                                        Sighting.last_time > s.first_time - travel))
        clash = session.scalar(select(func.count(Sighting.id)).where(
            Sighting.identity_id == identity_id, Sighting.id.not_in(mine), clashes))
        if clash:
            return True
    return False


def window_sightings(*, session: Session, after: datetime, before: datetime, limit: int,
                     sites: Optional[Sequence[str]] = None) -> List[Sighting]:
    """Video sightings whose time range overlaps [after, before], in time order (at most ``limit``; of these
    sites only, unless None)."""
    cond = [] if sites is None else [Sighting.site.in_(list(sites))]
    return list(session.scalars(select(Sighting).where(Sighting.video != '', Sighting.last_time >= after,
                                                       Sighting.first_time <= before, *cond)
                                .order_by(Sighting.first_time, Sighting.id).limit(limit)))


def identity_sightings(*, session: Session, identity_id: int) -> List[Sighting]:
    """The identity's timeline: its sightings in time order."""
    return list(session.scalars(select(Sighting).where(Sighting.identity_id == identity_id)
                                .order_by(Sighting.first_time, Sighting.id)))


def summaries(*, session: Session, identities: Sequence[Identity]) -> List[IdentitySummary]:
    ids = [i.id for i in identities]
    stats: Dict[int, Tuple] = {}
    cameras: Dict[int, List[int]] = {i: [] for i in ids}
    if ids:
        for row in session.execute(select(Sighting.identity_id, func.count(Sighting.id), func.min(Sighting.first_time),
                                          func.max(Sighting.last_time))
                                   .where(Sighting.identity_id.in_(ids)).group_by(Sighting.identity_id)):
            stats[row[0]] = tuple(row[1:])
        for identity_id, camera in session.execute(select(Sighting.identity_id, Sighting.camera_id).distinct()
                                                   .where(Sighting.identity_id.in_(ids))
                                                   .order_by(Sighting.camera_id)):
            cameras[identity_id].append(camera)
    return [IdentitySummary(i.id, i.name, *stats.get(i.id, (0, None, None)), cameras[i.id], i.created_at, i.site)
            for i in identities]


def list_identities(*, session: Session, offset: int = 0, limit: int = 50, named: Optional[bool] = None,
                    sites: Optional[Sequence[str]] = None) -> Tuple[List[IdentitySummary], int]:
    """A page of identities (by id) with their sightings' counts, time range and cameras, and how many there are.
    ``named``: only enrolled ones (True) or only those the service found alone (False)."""
    cond = [] if named is None else [Identity.name.is_not(None) if named else Identity.name.is_(None)]
    if sites is not None:  # only these sites' (a key scoped to them)
        cond.append(Identity.site.in_(list(sites)))
    total = session.scalar(select(func.count(Identity.id)).where(*cond)) or 0
    rows = list(session.scalars(select(Identity).where(*cond).order_by(Identity.id).offset(offset).limit(limit)))
    return summaries(session=session, identities=rows), total


def move_sightings(*, session: Session, sighting_ids: Sequence[int], identity_id: int) -> int:
    """Link these sightings to ``identity_id``; how many moved."""
    if not sighting_ids:
        return 0
    return session.execute(update(Sighting).where(Sighting.id.in_(list(sighting_ids)))
                           .values(identity_id=identity_id)).rowcount


def delete_identity(*, session: Session, identity_id: int) -> None:
    """Remove an identity; its sightings stay, unlinked (a merge moved them first)."""
    session.execute(update(Sighting).where(Sighting.identity_id == identity_id).values(identity_id=None))
    identity = session.get(Identity, identity_id)
    if identity is not None:
        session.delete(identity)
