"""A batch's view of merged customers: who is whose alias as the batch goes, the merges it
applies, the events it redirects to survivors and the identifiers it learns.

The consumer (:mod:`services.scoring.shell.consumer`) asks :meth:`BatchIdentities.survivor`
for every event's customer: an event under a merged id is forwarded to the survivor (its copy
comes back on the events topic, under the survivor, and is applied then), or, in a rebuild,
applied to the survivor at once (a rebuild publishes nothing; the copy the live service
forwarded is then a repeat). A merge folds the merged customers' facts into the survivor's
(:func:`services.scoring.core.merge.fold`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.scoring.core.identities import Ident
from services.scoring.store.identities import Redirected
from shared.events import Envelope


@dataclass(frozen=True, slots=True)
class Merge:
    survivor: str
    merged: list[str]  # the ids named and the survivors they had, now the survivor's aliases
    event_id: str


@dataclass(slots=True)
class BatchIdentities:
    """``aliases``: each alias the batch knows of and its survivor (kept flat)."""

    aliases: dict[str, str]
    merges: list[Merge] = field(default_factory=list)
    redirected: list[Redirected] = field(default_factory=list)
    learned: dict[str, set[Ident]] = field(default_factory=dict)

    def survivor(self, customer_id: str) -> str:
        """The customer an id stands for now (itself unless merged)."""
        return self.aliases.get(customer_id, customer_id)

    def merge(self, survivor: str, named: list[str], event_id: str) -> list[str]:
        """Record ``named`` as aliases of ``survivor``; returns the customers whose facts are
        to be folded into it (each named id's survivor before, other than ``survivor``)."""
        absorbed: list[str] = []
        aliased: list[str] = []
        for customer_id in named:
            current = self.survivor(customer_id)
            aliased.append(customer_id)
            if current != survivor and current not in absorbed:
                absorbed.append(current)
                aliased.append(current)
        for customer_id in set(aliased) - {survivor}:
            self.aliases[customer_id] = survivor
        for alias, was in list(self.aliases.items()):
            if was in absorbed:
                self.aliases[alias] = survivor
        merged = sorted(set(aliased) - {survivor})
        if merged:
            self.merges.append(Merge(survivor, merged, event_id))
        return absorbed

    def forward(self, envelope: Envelope, survivor: str) -> None:
        """Send an event that came under a merged id on to the survivor."""
        copy = envelope.model_copy(
            update={"customer_id": survivor, "addressed_to": envelope.customer_id}
        )
        self.redirected.append(Redirected(envelope.event_id, survivor, copy.to_json()))

    def retarget(self, envelope: Envelope, survivor: str) -> Envelope:
        """An event that came under a merged id, as the survivor's (applied at once)."""
        self.redirected.append(Redirected(envelope.event_id, survivor, None))
        return envelope.model_copy(
            update={"customer_id": survivor, "addressed_to": envelope.customer_id}
        )

    def learn(self, customer_id: str, found: set[Ident]) -> None:
        if found:
            self.learned.setdefault(customer_id, set()).update(found)

    def forget(self, customer_id: str) -> None:
        """The customer was erased: what the batch learned about them (under any of their ids)
        goes with them."""
        for known in [c for c in self.learned if self.survivor(c) == customer_id]:
            del self.learned[known]

    def identifiers(self) -> list[tuple[str, Ident]]:
        """What the batch learned, under each customer's survivor as the batch ends."""
        return [(self.survivor(c), i) for c, found in self.learned.items() for i in found]

    def redirections(self) -> list[Redirected]:
        """The redirected events: one applied at once is filed under its survivor as the batch
        ends; a forwarded one under the survivor its copy names (the one its copy is claimed
        by; should that survivor have been merged meanwhile, the copy is forwarded again)."""
        return [
            r if r.payload is not None else Redirected(r.event_id, self.survivor(r.survivor), None)
            for r in self.redirected
        ]
