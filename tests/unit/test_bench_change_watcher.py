"""The bench's watcher of the changes topic finds each change's event without decoding it."""

from __future__ import annotations

from datetime import timedelta

from bench.bench_e2e import event_id_of
from services.scoring.core.card import Population, score
from services.scoring.core.changes import event_change, time_change
from services.scoring.settings import ScoringSettings
from tests.unit.test_state import Events, day, fold


def test_the_event_behind_a_change_is_read_from_its_bytes_as_a_decoder_reads_it() -> None:
    events = Events()
    envelopes = [events.order("paid", f"o-{n}", "25.00", day(n)) for n in range(3)]
    state = fold(envelopes)
    scored = score(state, day(3) + timedelta(hours=1), Population(), ScoringSettings())
    last = envelopes[-1]
    _, raw = event_change(last, last.model_dump_json().encode(), scored, "new", None)
    assert event_id_of(raw) == last.event_id
    # A change no event caused has none.
    _, moved = time_change(scored, "prospect", day(3), None)
    assert event_id_of(moved) is None


def test_an_id_the_byte_search_cannot_read_plainly_is_decoded_in_full() -> None:
    change = b'{"change_id":"c","event":{"event_id":"a\\"b","type":"order"},"card":{}}'
    assert event_id_of(change) == 'a"b'
